// CTC forced alignment on the CPU: samples in parallel (at::parallel_for), each a Viterbi pass
// over its own states in two rows that live for the whole task, then a walk back along the
// packed backpointers. Compiled once per instruction set (see cpu_isa.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/align.h"

namespace fastcrnn::cpu::FASTCRNN_ISA_NS {
namespace {

template <typename scalar_t>
void align_rows(const CtcAlignParams& a, int64_t begin, int64_t end) {
  using acc_t = scalar_t;  // float or double on the CPU (ops/ converts half precision)
  const CtcParams& p = a.in;
  std::vector<acc_t> prev(p.W), cur(p.W);
  const auto identity = [](scalar_t v) { return static_cast<acc_t>(v); };
  for (int64_t n = begin; n < end; ++n) {
    const int64_t S = start_alignment_row<acc_t>(a, n);
    if (S == 0) continue;
    const int64_t Tn = p.input_lengths[n];
    const int64_t* tgt = p.targets + p.target_offsets[n];
    const scalar_t* lp = static_cast<const scalar_t*>(p.scores) + n * p.stride_n;
    std::fill(prev.begin(), prev.begin() + S, -std::numeric_limits<acc_t>::infinity());
    prev[0] = lp[p.blank];
    if (S > 1) prev[1] = lp[tgt[0]];
    uint8_t* bp = a.backpointers + n * p.T * a.backpointer_bytes;
    for (int64_t t = 1; t < Tn; ++t) {
      const scalar_t* row = lp + t * p.stride_t;
      const auto emission = [row](int64_t c) { return static_cast<acc_t>(row[c]); };
      uint8_t* bp_row = bp + t * a.backpointer_bytes;
      for (int64_t g = 0; 4 * g < S; ++g)
        viterbi_group<acc_t>(tgt, p.blank, S, g, prev.data(), cur.data(), emission, bp_row);
      std::swap(prev, cur);
    }
    finish_alignment_row<scalar_t, acc_t>(a, n, S, prev.data(), identity);
  }
}

}  // namespace

void ctc_forced_align_cpu(const CtcAlignParams& a) {
  // one sample is T * S steps: parallel over samples once a few hold enough work
  const int64_t grain = a.in.T * a.in.W >= 4096 ? 1 : 16;
  at::parallel_for(0, a.in.N, grain, [&](int64_t begin, int64_t end) {
    if (a.in.dtype == Dtype::kFloat64)
      align_rows<double>(a, begin, end);
    else
      align_rows<float>(a, begin, end);
  });
}

}  // namespace fastcrnn::cpu::FASTCRNN_ISA_NS
