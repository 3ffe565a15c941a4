// CTC loss forward-backward on the CPU. Compiled once per instruction set (see cpu_isa.h).
//
// Forward (parallel over the batch): for from_logits, the log-sum-exp of every (t, n) row
// (parallel over rows); then the log-space alpha recursion over the reachable window of states,
// vectorized over states (a three-way log-sum-exp with at::vec exp_u20 and a polynomial log).
// Backward: the beta recursion per sample (parallel over the batch) turns alpha * beta into the
// scaled state posteriors (gamma workspace); then every (t, n) gradient row is written once,
// parallel over rows: the dense term grad_nll * p over C, then the sparse correction on the
// <= 2L + 1 label states (in state order, so repeated labels accumulate deterministically).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/ctc.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

template <typename acc_t>
constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
template <typename acc_t>
constexpr acc_t kNaN = std::numeric_limits<acc_t>::quiet_NaN();

// One sample's validated view.
struct Sample {
  int64_t Tn = 0, L = 0, S = 1;
  const int64_t* labels = nullptr;
  bool bad = false;         // invalid length / label: NaN loss
  bool impossible = false;  // L > Tn: +inf loss without recursion
};

Sample sample_of(const CtcParams& p, int64_t n) {
  Sample s;
  s.Tn = p.input_lengths[n];
  s.L = p.target_lengths[n];
  const int64_t off = p.target_offsets[n];
  if (s.Tn < 0 || s.Tn > p.T || s.L < 0 || s.L > p.max_target_length || off < 0 ||
      off > p.targets_numel - s.L) {
    s.bad = true;
    s.Tn = std::min<int64_t>(std::max<int64_t>(s.Tn, 0), p.T);
    s.L = 0;
    return s;
  }
  s.labels = p.targets + off;
  for (int64_t i = 0; i < s.L; ++i) {
    const int64_t c = s.labels[i];
    if (c < 0 || c >= p.C || c == p.blank) {
      s.bad = true;
      s.L = 0;
      return s;
    }
  }
  s.impossible = s.L > s.Tn;
  s.S = 2 * s.L + 1;
  return s;
}

inline int64_t label_of(const Sample& s, int64_t state, int64_t blank) {
  return (state & 1) ? s.labels[state >> 1] : blank;
}
inline int64_t window_lo(const Sample& s, int64_t t) {
  return std::max<int64_t>(0, s.S - 2 * (s.Tn - t));
}
inline int64_t window_hi(const Sample& s, int64_t t) {
  return std::min<int64_t>(s.S - 1, 2 * t + 1);
}

// log(x) for x in [1, 3.01] (the sum of three exponentials whose largest is exp(0) = 1):
// log(z) = 2 atanh((z - 1) / (z + 1)) after halving x > sqrt(2); error below 2e-10.
inline at::vec::Vectorized<float> log_1_to_3(at::vec::Vectorized<float> x) {
  using V = at::vec::Vectorized<float>;
  const V big = x > V(1.41421356f);
  const V z = V::blendv(x, x * V(0.5f), big);
  const V k = V::blendv(V(0.f), V(0.693147180559945f), big);
  const V u = (z - V(1.f)) / (z + V(1.f));
  const V u2 = u * u;
  V poly = V(2.f / 11.f);
  poly = poly * u2 + V(2.f / 9.f);
  poly = poly * u2 + V(2.f / 7.f);
  poly = poly * u2 + V(2.f / 5.f);
  poly = poly * u2 + V(2.f / 3.f);
  poly = poly * u2 + V(2.f);
  return k + u * poly;
}

// out[i] = logsumexp(a[i], b[i], c[i] + cadd[i]) + e[i] for i < count.
// -inf everywhere gives -inf; NaN anywhere gives NaN.
// `out` must not overlap the inputs: the last vector may recompute lanes already written.
template <typename acc_t>
void lse3_add(const acc_t* a, const acc_t* b, const acc_t* c, const acc_t* cadd, const acc_t* e,
              acc_t* out, int64_t count) {
  int64_t i = 0;
  if constexpr (std::is_same_v<acc_t, float>) {
    using V = at::vec::Vectorized<float>;
    constexpr int64_t K = V::size();
    const V ninf(kNegInf<float>);
    const auto lanes = [&](int64_t j, int64_t n) {
      const V va = V::loadu(a + j, n), vb = V::loadu(b + j, n);
      const V vc = V::loadu(c + j, n) + V::loadu(cadd + j, n);
      // the largest term is exp(0) = 1: two exponentials for the other two
      const V hi_ab = at::vec::maximum(va, vb);
      const V m = at::vec::maximum(hi_ab, vc);
      const V empty = m == ninf;
      const V ms = V::blendv(m, V(0.f), empty);
      const V mid = at::vec::minimum(hi_ab, vc), low = at::vec::minimum(va, vb);
      const V sum = V(1.f) + (mid - ms).exp_u20() + (low - ms).exp_u20();
      V r = V::blendv(ms + log_1_to_3(sum), ninf, empty);
      r = r + V::loadu(e + j, n);
      r.store(out + j, n);
    };
    // partial loads / stores go through memcpy: only for windows narrower than a vector
    if (count < K) {
      if (count > 0) lanes(0, count);
      return;
    }
    for (; i + K <= count; i += K) lanes(i, K);
    if (i < count) lanes(count - K, K);
  } else {
    for (; i < count; ++i) {
      const acc_t x = a[i], y = b[i], z = c[i] + cadd[i];
      if (std::isnan(x) || std::isnan(y) || std::isnan(z)) {
        out[i] = kNaN<acc_t>;
        continue;
      }
      const acc_t m = std::max(std::max(x, y), z);
      out[i] = (m == kNegInf<acc_t>)
                   ? kNegInf<acc_t>
                   : m + std::log(std::exp(x - m) + std::exp(y - m) + std::exp(z - m)) + e[i];
    }
  }
}

inline double log_add(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  const double m = std::max(a, b);
  if (m == -std::numeric_limits<double>::infinity()) return m;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

// Log-sum-exp of every logits row (parallel over the T * N rows). A row holding NaN or +inf, or
// only -inf, gives NaN, as log_softmax does.
template <typename acc_t>
void row_norms(const CtcParams& p) {
  const auto* x = static_cast<const acc_t*>(p.scores);
  auto* norms = static_cast<acc_t*>(p.norms);
  const int64_t rows = p.T * p.N;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(p.C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / p.N, n = r % p.N;
      const acc_t* row = x + t * p.stride_t + n * p.stride_n;
      acc_t m = kNegInf<acc_t>;
      bool nan = false;
      int64_t c = 0;
      if constexpr (std::is_same_v<acc_t, float>) {
        using V = at::vec::Vectorized<float>;
        constexpr int64_t K = V::size();
        if (p.C >= K) {
          V vm = V::loadu(row);
          for (c = K; c + K <= p.C; c += K) vm = at::vec::maximum(vm, V::loadu(row + c));
          alignas(64) float lanes[K];
          vm.store(lanes);
          for (int64_t l = 0; l < K; ++l) {
            nan = nan || std::isnan(lanes[l]);
            m = std::max(m, lanes[l]);
          }
        }
      }
      for (; c < p.C; ++c) {
        nan = nan || std::isnan(row[c]);
        m = std::max(m, row[c]);
      }
      if (nan || m == kNegInf<acc_t> || m == -kNegInf<acc_t>) {
        norms[r] = kNaN<acc_t>;
        continue;
      }
      acc_t sum = 0;
      c = 0;
      if constexpr (std::is_same_v<acc_t, float>) {
        using V = at::vec::Vectorized<float>;
        constexpr int64_t K = V::size();
        V acc(0.f);
        const V vm(m);
        for (; c + K <= p.C; c += K) acc = acc + (V::loadu(row + c) - vm).exp_u20();
        alignas(64) float lanes[K];
        acc.store(lanes);
        for (int64_t l = 0; l < K; ++l) sum += lanes[l];
      }
      for (; c < p.C; ++c) sum += std::exp(row[c] - m);
      norms[r] = m + std::log(sum);
    }
  });
}

// Per-thread scratch for one sample's recursion.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> rows[2];  // rolling alpha / beta rows, padded by 2 on each side
  std::vector<acc_t> skip;     // 0 where the skip transition is allowed, else -inf (padded)
  std::vector<acc_t> emit;     // gathered emissions of the current window
  void reserve(int64_t W) {
    for (auto& r : rows) r.assign(W + 4, kNegInf<acc_t>);
    skip.assign(W + 4, kNegInf<acc_t>);
    emit.assign(W + 4, acc_t(0));
  }
};

template <typename acc_t>
inline acc_t emission(const CtcParams& p, const acc_t* x, const acc_t* norms, int64_t t, int64_t n,
                      int64_t label) {
  const acc_t v = x[t * p.stride_t + n * p.stride_n + label];
  return p.from_logits ? v - norms[t * p.N + n] : v;
}

// Prefetches the emissions of frame t's window: each frame's row lies elsewhere in memory, and
// its cache misses would otherwise stall the (serial) recursion once per frame.
template <typename acc_t>
inline void prefetch_emissions(const CtcParams& p, const acc_t* x, const Sample& s, int64_t t,
                               int64_t n) {
  if (t < 0 || t >= s.Tn) return;
  const acc_t* row = x + t * p.stride_t + n * p.stride_n;
  __builtin_prefetch(row + p.blank);
  for (int64_t st = window_lo(s, t) | 1; st <= window_hi(s, t); st += 2)
    __builtin_prefetch(row + s.labels[st >> 1]);
}

// alpha recursion of sample n into log_alpha (N, T, W); returns the negative log-likelihood.
template <typename acc_t>
acc_t alpha_sample(const CtcParams& p, int64_t n, const Sample& s, Scratch<acc_t>& w) {
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  if (s.bad) return kNaN<acc_t>;
  if (s.Tn == 0) return s.L == 0 ? acc_t(0) : -kNegInf<acc_t>;
  if (s.impossible) return -kNegInf<acc_t>;
  const int64_t S = s.S;
  acc_t* out = static_cast<acc_t*>(p.log_alpha) + n * p.T * p.W;
  // skip[s + 2] allows s-2 -> s (a label differing from the previous label)
  std::fill(w.skip.begin(), w.skip.end(), kNegInf<acc_t>);
  for (int64_t st = 3; st < S; st += 2)
    if (s.labels[st >> 1] != s.labels[(st >> 1) - 1]) w.skip[st + 2] = 0;
  acc_t* prev = w.rows[0].data();
  acc_t* cur = w.rows[1].data();
  std::fill(prev, prev + S + 4, kNegInf<acc_t>);
  for (int64_t t = 0; t < s.Tn; ++t) {
    prefetch_emissions(p, x, s, t + 1, n);
    const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
    std::fill(cur, cur + S + 4, kNegInf<acc_t>);
    if (t == 0) {
      for (int64_t st = lo; st <= std::min<int64_t>(hi, 1); ++st)
        cur[st + 2] = emission(p, x, norms, 0, n, label_of(s, st, p.blank));
    } else if (lo <= hi) {
      for (int64_t st = lo; st <= hi; ++st)
        w.emit[st] = emission(p, x, norms, t, n, label_of(s, st, p.blank));
      // padded index of state st is st + 2: prev[st], prev[st - 1], prev[st - 2]
      lse3_add<acc_t>(prev + lo + 2, prev + lo + 1, prev + lo, w.skip.data() + lo + 2,
                      w.emit.data() + lo, cur + lo + 2, hi - lo + 1);
    }
    if (lo <= hi) std::copy(cur + 2 + lo, cur + 3 + hi, out + t * p.W + lo);
    std::swap(prev, cur);
  }
  const acc_t ll = S > 1 ? static_cast<acc_t>(log_add(prev[S + 1], prev[S])) : prev[S + 1];
  return -ll;
}

template <typename acc_t>
void forward(const CtcParams& p) {
  if (p.from_logits) row_norms<acc_t>(p);
  auto* nll = static_cast<acc_t*>(p.nll);
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    Scratch<acc_t> w;
    w.reserve(p.W);
    for (int64_t n = begin; n < end; ++n) {
      // every entry of log_alpha is defined: -inf outside what the recursion writes
      acc_t* block = static_cast<acc_t*>(p.log_alpha) + n * p.T * p.W;
      std::fill(block, block + p.T * p.W, kNegInf<acc_t>);
      nll[n] = alpha_sample<acc_t>(p, n, sample_of(p, n), w);
    }
  });
}

enum class RowKind { kNormal, kZero, kNaN };

inline bool finite_loss(double v) { return std::isfinite(v); }

// beta recursion of sample n; writes gamma[n, t, s] = grad_nll * exp(alpha + beta - emit + nll).
template <typename acc_t>
void beta_sample(const CtcParams& p, int64_t n, const Sample& s, acc_t nll, acc_t g,
                 Scratch<acc_t>& w) {
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  const acc_t* alpha = static_cast<const acc_t*>(p.log_alpha) + n * p.T * p.W;
  acc_t* gamma = static_cast<acc_t*>(p.gamma) + n * p.T * p.W;
  const int64_t S = s.S;
  // skip[s] allows s + 2 -> s (backwards), i.e. the forward skip into s + 2
  std::fill(w.skip.begin(), w.skip.end(), kNegInf<acc_t>);
  for (int64_t st = 3; st < S; st += 2)
    if (s.labels[st >> 1] != s.labels[(st >> 1) - 1]) w.skip[st - 2] = 0;
  acc_t* next = w.rows[0].data();
  acc_t* cur = w.rows[1].data();
  std::fill(next, next + S + 4, kNegInf<acc_t>);
  for (int64_t t = s.Tn - 1; t >= 0; --t) {
    prefetch_emissions(p, x, s, t - 1, n);
    const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
    std::fill(cur, cur + S + 4, kNegInf<acc_t>);
    if (lo <= hi) {
      for (int64_t st = lo; st <= hi; ++st)
        w.emit[st] = emission(p, x, norms, t, n, label_of(s, st, p.blank));
      if (t == s.Tn - 1) {
        for (int64_t st = std::max<int64_t>(lo, S - 2); st <= hi; ++st) cur[st] = w.emit[st];
      } else {
        // unpadded index: next[st], next[st + 1], next[st + 2] (next[S], next[S + 1] are -inf)
        lse3_add<acc_t>(next + lo, next + lo + 1, next + lo + 2, w.skip.data() + lo,
                        w.emit.data() + lo, cur + lo, hi - lo + 1);
      }
      const acc_t* a = alpha + t * p.W;
      acc_t* gm = gamma + t * p.W;
      int64_t st = lo;
      if constexpr (std::is_same_v<acc_t, float>) {
        using V = at::vec::Vectorized<float>;
        constexpr int64_t K = V::size();
        const V vnll(nll), vg(g);
        const auto lanes = [&](int64_t j) {
          const V v = V::loadu(a + j) + V::loadu(cur + j) - V::loadu(w.emit.data() + j) + vnll;
          const V e = V::blendv(v.exp_u20(), v, v != v);  // keep NaN (exp_u20 would not)
          (e * vg).store(gm + j);
        };
        for (; st + K <= hi + 1; st += K) lanes(st);
        // the tail as one vector overlapping the previous one (rewrites equal values)
        if (st <= hi && hi + 1 - lo >= K) {
          lanes(hi + 1 - K);
          st = hi + 1;
        }
      }
      for (; st <= hi; ++st) gm[st] = g * std::exp(a[st] + cur[st] - w.emit[st] + nll);
    }
    std::swap(next, cur);
  }
}

// One gradient row: grad_nll * p over C, minus the label-state posteriors.
template <typename acc_t>
void write_row(const acc_t* row, acc_t norm, acc_t g, acc_t* out, int64_t C) {
  int64_t c = 0;
  if constexpr (std::is_same_v<acc_t, float>) {
    using V = at::vec::Vectorized<float>;
    constexpr int64_t K = V::size();
    const V vn(norm), vg(g), pinf(std::numeric_limits<float>::infinity());
    const auto lanes = [&](int64_t j) {
      const V v = V::loadu(row + j) - vn;
      V e = v.exp_u20();
      e = V::blendv(e, v, (v != v) | (v == pinf));  // exp_u20 maps NaN / +inf to finite values
      (e * vg).store(out + j);
    };
    for (; c + K <= C; c += K) lanes(c);
    // the tail as one vector overlapping the previous one (rewrites equal values), no libm exp
    if (c < C && C >= K) {
      lanes(C - K);
      c = C;
    }
  }
  for (; c < C; ++c) out[c] = g * std::exp(row[c] - norm);
}

template <typename scalar_t>
void backward(const CtcParams& p) {
  using acc_t = scalar_t;
  const auto* nll = static_cast<const acc_t*>(p.nll);
  const auto* grad_nll = static_cast<const acc_t*>(p.grad_nll);
  std::vector<RowKind> kind(p.N);
  std::vector<Sample> samples(p.N);
  for (int64_t n = 0; n < p.N; ++n) {
    samples[n] = sample_of(p, n);
    const acc_t v = nll[n];
    if (samples[n].bad || std::isnan(v)) kind[n] = RowKind::kNaN;
    else if (!finite_loss(v)) kind[n] = (p.zero_infinity && v > 0) ? RowKind::kZero : RowKind::kNaN;
    else kind[n] = RowKind::kNormal;
  }
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    Scratch<acc_t> w;
    w.reserve(p.W);
    for (int64_t n = begin; n < end; ++n)
      if (kind[n] == RowKind::kNormal && samples[n].Tn > 0)
        beta_sample<acc_t>(p, n, samples[n], nll[n], grad_nll[n], w);
  });
  const auto* x = static_cast<const acc_t*>(p.scores);
  const auto* norms = static_cast<const acc_t*>(p.norms);
  auto* grad = static_cast<acc_t*>(p.grad);
  const acc_t* gamma_all = static_cast<const acc_t*>(p.gamma);
  const int64_t rows = p.T * p.N;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(p.C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / p.N, n = r % p.N;
      acc_t* out = grad + r * p.C;
      const Sample& s = samples[n];
      if (t >= s.Tn || kind[n] == RowKind::kZero) {
        std::fill(out, out + p.C, acc_t(0));
        continue;
      }
      if (kind[n] == RowKind::kNaN) {
        std::fill(out, out + p.C, kNaN<acc_t>);
        continue;
      }
      const acc_t g = grad_nll[n];
      const acc_t norm = p.from_logits ? norms[r] : acc_t(0);
      write_row<acc_t>(x + t * p.stride_t + n * p.stride_n, norm, g, out, p.C);
      const int64_t lo = window_lo(s, t), hi = window_hi(s, t);
      const acc_t* gm = gamma_all + (n * p.T + t) * p.W;
      // every other state is a blank: summing those in a register avoids a chain of
      // read-modify-writes of out[blank] through memory (the order stays fixed: deterministic)
      acc_t blank_sum = 0;
      for (int64_t st = lo + (lo & 1); st <= hi; st += 2) blank_sum += gm[st];
      for (int64_t st = lo | 1; st <= hi; st += 2) out[s.labels[st >> 1]] -= gm[st];
      out[p.blank] -= blank_sum;
    }
  });
}

}  // namespace

void ctc_loss_forward_cpu(const CtcParams& p) {
  if (p.dtype == Dtype::kFloat64) forward<double>(p);
  else forward<float>(p);
}

void ctc_loss_backward_cpu(const CtcParams& p) {
  if (p.dtype == Dtype::kFloat64) backward<double>(p);
  else backward<float>(p);
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
