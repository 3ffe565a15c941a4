// CTC forced alignment (Viterbi): launcher declarations shared by ops/ and kernels/. Torch-free.
//
// Sample n (input length Tn, target length L) has S = 2L + 1 states (blank, l1, blank, ..., lL,
// blank), as in the CTC loss (kernels/ctc.h). The Viterbi recursion is the CTC alpha recursion
// with max in place of log-sum-exp: alpha[t][s] = max(alpha[t-1][s], alpha[t-1][s-1],
// alpha[t-1][s-2] when state s is a label different from the label two states back) + the
// log-probability of state s's class at frame t. Ties take the smallest step back (stay before
// advancing), so the result is deterministic. The path ends in the last blank or the last label,
// whichever scores higher (the blank on a tie).
//
// Backpointers: per (n, t, s) the step back (0, 1 or 2) in 2 bits, four states per byte, so the
// (N, T, ceil(W / 4)) byte buffer is at most N * T * (L_max + 1) / 2 bytes.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"
#include "kernels/ctc.h"

namespace fastcrnn {

struct CtcAlignParams {
  // The inputs exactly as the CTC loss takes them (scores are log-probabilities; from_logits is
  // false): scores, targets with their offsets and lengths, and W, the states per row.
  CtcParams in;
  int64_t token_columns = 0;        // width of the per-token outputs (>= every aligned L)
  int64_t backpointer_bytes = 0;    // bytes per (n, t) row: ceil(W / 4)
  uint8_t* backpointers = nullptr;  // (N, T, backpointer_bytes) workspace
  void* alpha = nullptr;            // CUDA only: (N, 2, W) accumulation-typed workspace
  // Outputs. Accumulation-typed (float, or double for float64 scores) where marked acc.
  int64_t* labels = nullptr;        // (N, T): the path's class per frame, -1 for t >= Tn
  void* frame_log_probs = nullptr;  // acc (N, T): log-prob of that class, 0 for t >= Tn
  int64_t* token_starts = nullptr;  // (N, token_columns): first frame of token k, -1 padding
  int64_t* token_ends = nullptr;    // (N, token_columns): one past its last frame, -1 padding
  void* token_log_probs = nullptr;  // acc (N, token_columns): mean log-prob over its frames
  void* path_scores = nullptr;      // acc (N,): the path's total log-prob
  bool* aligned = nullptr;          // (N,): false when no alignment exists
  // A row without an alignment (target too long for its input, or every path through a
  // zero-probability frame) has aligned = false, score -inf, labels -1 and spans -1. A bad row
  // (lengths or target values out of range when validation was skipped) the same, score NaN.
};

void ctc_forced_align_cuda(const CtcAlignParams& p, void* cuda_stream);

#if defined(__CUDACC__)
#define FASTCRNN_ALIGN_HOST_DEVICE __host__ __device__
#else
#define FASTCRNN_ALIGN_HOST_DEVICE
#endif

// Step 1 for one sample, shared by the CPU loop and the CUDA kernel: checks the row and writes
// the outputs of an unaligned row. Returns the number of states S when the recursion must run,
// else 0 (the row's outputs are final: a bad or impossible row, or an empty one).
template <typename acc_t>
FASTCRNN_ALIGN_HOST_DEVICE inline int64_t start_alignment_row(const CtcAlignParams& a, int64_t n) {
  const CtcParams& p = a.in;
  int64_t* labels = a.labels + n * p.T;
  acc_t* frame_lp = static_cast<acc_t*>(a.frame_log_probs) + n * p.T;
  for (int64_t t = 0; t < p.T; ++t) {
    labels[t] = -1;
    frame_lp[t] = acc_t(0);
  }
  int64_t* starts = a.token_starts + n * a.token_columns;
  int64_t* ends = a.token_ends + n * a.token_columns;
  acc_t* token_lp = static_cast<acc_t*>(a.token_log_probs) + n * a.token_columns;
  for (int64_t k = 0; k < a.token_columns; ++k) {
    starts[k] = -1;
    ends[k] = -1;
    token_lp[k] = acc_t(0);
  }
  acc_t& score = static_cast<acc_t*>(a.path_scores)[n];
  a.aligned[n] = false;
  const int64_t Tn = p.input_lengths[n];
  const int64_t L = p.target_lengths[n];
  const int64_t off = p.target_offsets[n];
  bool bad = Tn < 0 || Tn > p.T || L < 0 || L > p.max_target_length || L > a.token_columns ||
             off < 0 || off + L > p.targets_numel;
  for (int64_t i = 0; !bad && i < L; ++i) {
    const int64_t c = p.targets[off + i];
    bad = c < 0 || c >= p.C || c == p.blank;
  }
  if (bad) {
    score = acc_t(0) / acc_t(0);  // NaN: the row was never checked and is not valid
    return 0;
  }
  int64_t repeats = 0;
  for (int64_t i = 1; i < L; ++i) repeats += p.targets[off + i] == p.targets[off + i - 1];
  if (L + repeats > Tn) {  // each repeat needs a blank between: no path fits
    score = -acc_t(1) / acc_t(0);
    return 0;
  }
  if (Tn == 0) {  // L == 0 here: the empty path
    score = acc_t(0);
    a.aligned[n] = true;
    return 0;
  }
  if (2 * L + 1 > p.W) {  // a workspace sized below this row (cannot happen when validated)
    score = acc_t(0) / acc_t(0);
    return 0;
  }
  return 2 * L + 1;
}

// Step 3 for one sample: picks the end state from the last frame's scores `last` (S states),
// walks the backpointers and writes the per-frame and per-token outputs.
template <typename scalar_t, typename acc_t, typename ToAcc>
FASTCRNN_ALIGN_HOST_DEVICE inline void finish_alignment_row(const CtcAlignParams& a, int64_t n,
                                                            int64_t S, const acc_t* last,
                                                            ToAcc to_acc) {
  const CtcParams& p = a.in;
  const int64_t Tn = p.input_lengths[n];
  const int64_t* tgt = p.targets + p.target_offsets[n];
  const scalar_t* lp = static_cast<const scalar_t*>(p.scores) + n * p.stride_n;
  int64_t s = S - 1;
  acc_t best = last[s];
  if (S >= 2 && last[S - 2] > best) {
    best = last[S - 2];
    s = S - 2;
  }
  static_cast<acc_t*>(a.path_scores)[n] = best;
  if (!(best > -acc_t(1) / acc_t(0))) return;  // -inf (no path) or NaN in the scores
  a.aligned[n] = true;
  int64_t* labels = a.labels + n * p.T;
  acc_t* frame_lp = static_cast<acc_t*>(a.frame_log_probs) + n * p.T;
  int64_t* starts = a.token_starts + n * a.token_columns;
  int64_t* ends = a.token_ends + n * a.token_columns;
  acc_t* token_lp = static_cast<acc_t*>(a.token_log_probs) + n * a.token_columns;
  const uint8_t* bp = a.backpointers + n * p.T * a.backpointer_bytes;
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const int64_t c = (s & 1) ? tgt[s >> 1] : p.blank;
    const acc_t v = to_acc(lp[t * p.stride_t + c]);
    labels[t] = c;
    frame_lp[t] = v;
    if (s & 1) {
      const int64_t k = s >> 1;
      if (ends[k] < 0) ends[k] = t + 1;
      starts[k] = t;
      token_lp[k] += v;
    }
    if (t > 0) s -= (bp[t * a.backpointer_bytes + (s >> 2)] >> (2 * (s & 3))) & 3;
  }
  for (int64_t k = 0; k < (S - 1) / 2; ++k) token_lp[k] /= acc_t(ends[k] - starts[k]);
}

// The recursion of one frame t >= 1 for the states of group g (states 4g .. 4g + 3, < S): reads
// the previous frame's scores, writes this frame's and one backpointer byte. emission(c) is the
// frame's log-probability of class c.
template <typename acc_t, typename Emission>
FASTCRNN_ALIGN_HOST_DEVICE inline void viterbi_group(const int64_t* tgt, int64_t blank, int64_t S,
                                                     int64_t g, const acc_t* prev, acc_t* cur,
                                                     Emission emission, uint8_t* bp_row) {
  uint8_t packed = 0;
  const int64_t end = 4 * g + 4 < S ? 4 * g + 4 : S;
  for (int64_t s = 4 * g; s < end; ++s) {
    acc_t best = prev[s];
    int step = 0;
    if (s >= 1 && prev[s - 1] > best) {
      best = prev[s - 1];
      step = 1;
    }
    if ((s & 1) && s >= 3 && tgt[s >> 1] != tgt[(s >> 1) - 1] && prev[s - 2] > best) {
      best = prev[s - 2];
      step = 2;
    }
    cur[s] = best + emission((s & 1) ? tgt[s >> 1] : blank);
    packed |= static_cast<uint8_t>(step << (2 * (s - 4 * g)));
  }
  bp_row[g] = packed;
}

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, ctc_forced_align_cpu, (const ::fastcrnn::CtcAlignParams& p))
