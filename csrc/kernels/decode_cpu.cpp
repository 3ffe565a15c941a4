// CTC greedy decoding on the CPU. Compiled once per instruction set (see cpu_isa.h).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/decode.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

template <typename acc_t>
struct RowStats {
  acc_t max;       // first maximal value (NaN if the row holds one)
  int64_t argmax;  // its index: the first NaN, else the first maximal element, as torch.argmax
  acc_t sum_exp;   // sum of exp(x - max) over the row; only when asked
};

template <typename acc_t>
inline bool better(acc_t a, acc_t b) {
  return a > b || (std::isnan(a) && !std::isnan(b));
}

// Max, first argmax and (optionally) sum of exponentials of a contiguous chunk.
template <typename acc_t>
RowStats<acc_t> chunk_stats(const acc_t* x, int64_t n, bool want_sum) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  acc_t m;
  int64_t i;
  if (n >= W) {
    Vec vm = Vec::loadu(x);
    for (i = W; i + W <= n; i += W) vm = at::vec::maximum(vm, Vec::loadu(x + i));  // keeps NaN
    alignas(64) acc_t lanes[W];
    vm.store(lanes);
    m = lanes[0];
    for (int64_t l = 1; l < W; ++l)
      if (better(lanes[l], m)) m = lanes[l];
  } else {
    m = x[0];
    i = 1;
  }
  for (; i < n; ++i)
    if (better(x[i], m)) m = x[i];

  int64_t arg = 0;
  if (std::isnan(m)) {
    while (!std::isnan(x[arg])) ++arg;
  } else {
    int64_t j = 0;
    bool found = false;
    const Vec target(m);
    for (; j + W <= n; j += W) {
      const int hits = ~(Vec::loadu(x + j) == target).zero_mask() & ((1 << W) - 1);
      if (hits) {
        arg = j + __builtin_ctz(static_cast<unsigned>(hits));
        found = true;
        break;
      }
    }
    if (!found) {
      while (j < n && !(x[j] == m)) ++j;
      arg = j;
    }
  }

  acc_t sum = 0;
  if (want_sum && !std::isnan(m) && m != -std::numeric_limits<acc_t>::infinity()) {
    int64_t j = 0;
    if constexpr (std::is_same_v<acc_t, float>) {
      Vec acc(0.f);
      const Vec vm(m);
      for (; j + W <= n; j += W) acc = acc + (Vec::loadu(x + j) - vm).exp_u20();
      alignas(64) float lanes[W];
      acc.store(lanes);
      for (int64_t l = 0; l < W; ++l) sum += lanes[l];
    }
    for (; j < n; ++j) sum += std::exp(x[j] - m);
  } else if (want_sum) {
    sum = std::numeric_limits<acc_t>::quiet_NaN();
  }
  return {m, arg, sum};
}

// Folds chunk statistics in row order into a running total.
template <typename acc_t>
void merge(RowStats<acc_t>& total, const RowStats<acc_t>& next, int64_t offset, bool want_sum) {
  const bool take = better(next.max, total.max);
  if (want_sum) {
    const acc_t hi = take ? next.max : total.max;
    auto scaled = [hi](acc_t s, acc_t mx) {
      return mx == -std::numeric_limits<acc_t>::infinity() ? acc_t(0) : s * std::exp(mx - hi);
    };
    total.sum_exp = (std::isnan(hi) || hi == -std::numeric_limits<acc_t>::infinity())
                        ? std::numeric_limits<acc_t>::quiet_NaN()
                        : scaled(total.sum_exp, total.max) + scaled(next.sum_exp, next.max);
  }
  if (take) {
    total.max = next.max;
    total.argmax = next.argmax + offset;
  }
}

// Statistics of one row; converts half/bf16 and strided rows chunk by chunk into a buffer.
template <typename scalar_t, typename acc_t>
RowStats<acc_t> row_stats(const scalar_t* row, int64_t C, int64_t stride, bool want_sum) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (stride == 1) return chunk_stats<acc_t>(row, C, want_sum);
  }
  constexpr int64_t kChunk = 512;
  alignas(64) acc_t buffer[kChunk];
  RowStats<acc_t> total{};
  for (int64_t start = 0; start < C; start += kChunk) {
    const int64_t n = std::min(kChunk, C - start);
    for (int64_t j = 0; j < n; ++j) buffer[j] = static_cast<acc_t>(row[(start + j) * stride]);
    RowStats<acc_t> part = chunk_stats<acc_t>(buffer, n, want_sum);
    if (start == 0)
      total = part;
    else
      merge(total, part, start, want_sum);
  }
  return total;
}

template <typename scalar_t, typename acc_t>
void best_path_frames(const GreedyDecodeParams& p) {
  const auto* base = static_cast<const scalar_t*>(p.scores);
  const int64_t frames = p.T * p.N;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(p.C, 1));
  at::parallel_for(0, frames, grain, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      const int64_t t = f / p.N, n = f % p.N;
      const int64_t len = p.input_lengths[n];
      if (len < 0 || len > p.T || t >= len) continue;
      const scalar_t* row = base + t * p.stride_t + n * p.stride_n;
      const RowStats<acc_t> s = row_stats<scalar_t, acc_t>(row, p.C, p.stride_c, p.logits);
      int64_t label = s.argmax;
      acc_t prob;
      if (!p.logits) {
        prob = std::exp(s.max);
      } else if (!std::isfinite(s.max)) {
        // log_softmax turns a row holding NaN or +inf, or all -inf, into all NaN: argmax 0
        label = 0;
        prob = std::numeric_limits<acc_t>::quiet_NaN();
      } else {
        prob = acc_t(1) / s.sum_exp;
      }
      p.frame_label[f] = static_cast<int32_t>(label);
      p.frame_prob[f] = static_cast<float>(prob);
    }
  });
}

void collapse_runs(const GreedyDecodeParams& p) {
  at::parallel_for(0, p.N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) collapse_sequence(p, n);
  });
}

}  // namespace

void greedy_decode_cpu(const GreedyDecodeParams& p) {
  switch (p.dtype) {
    case Dtype::kFloat32:
      best_path_frames<float, float>(p);
      break;
    case Dtype::kFloat64:
      best_path_frames<double, double>(p);
      break;
    case Dtype::kFloat16:
      best_path_frames<c10::Half, float>(p);
      break;
    case Dtype::kBFloat16:
      best_path_frames<c10::BFloat16, float>(p);
      break;
  }
  collapse_runs(p);
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
