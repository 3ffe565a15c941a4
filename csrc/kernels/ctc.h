// CTC loss forward-backward: launcher declarations shared by ops/ and kernels/. Torch-free.
//
// Notation: sample n has input length Tn and target length L; its extended label sequence has
// S = 2L + 1 states (blank, l1, blank, ..., lL, blank). log_alpha / log_beta follow torch's
// convention (both include the emission of frame t). Only the reachable window of states
// [max(0, S - 2 (Tn - t)), min(S - 1, 2 t + 1)] is computed at frame t; other states are -inf.
// A target longer than Tn can never be aligned, so its loss is +inf without any recursion: that
// bounds every per-sample workspace by W = 2 * min(max target length, T) + 1 states.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

struct CtcParams {
  // scores: log-probabilities, or unnormalised logits when from_logits. (T, N, C) with strides
  // in elements; the class axis is contiguous (stride 1).
  const void* scores = nullptr;
  Dtype dtype = Dtype::kFloat32;
  int64_t T = 0, N = 0, C = 0;
  int64_t stride_t = 0, stride_n = 0;
  bool from_logits = false;
  int64_t blank = 0;
  // targets of sample n: targets[target_offsets[n] + i], i < target_lengths[n]; every read is
  // bounds-checked against targets_numel (a bad row gets a NaN loss, never an out-of-bounds read).
  const int64_t* targets = nullptr;
  int64_t targets_numel = 0;
  const int64_t* target_offsets = nullptr;  // (N,)
  const int64_t* input_lengths = nullptr;   // (N,)
  const int64_t* target_lengths = nullptr;  // (N,)
  int64_t max_target_length = 0;            // a longer target is a bad row (padded width S)
  // states per (n, t) row of log_alpha / workspace (ops: ctc_workspace_width); a row that
  // needs more (2 L + 1 > W with L <= Tn) is a bad row, so a short W never leads past a row
  int64_t W = 1;

  // Accumulation-typed buffers (float, or double for float64 scores).
  void* nll = nullptr;  // (N,) out: -log p(target | input); +inf impossible, NaN bad row
  // N * T * W forward out / backward in. CUDA: (N, T, W). CPU: lane-major blocks of sorted
  // sample groups (kernels/ctc_cpu.cpp); only the backward of the same build reads it.
  void* log_alpha = nullptr;
  void* norms = nullptr;  // (T, N) log-sum-exp of each logits row (from_logits only)

  // Backward only.
  const void* grad_nll = nullptr;  // (N,) incoming gradient of each loss
  // CUDA only: (N, T, W) accumulation-typed workspace for log_beta.
  void* gamma = nullptr;
  // CUDA only: (N, 2 W + 1) int32 workspace: per state the next state with the same label and
  // whether it is the label's first state; then the sample's gradient kind.
  int32_t* label_links = nullptr;
  void* grad = nullptr;  // (T, N, C) contiguous out, dtype of scores
  bool zero_infinity = false;
};

// Forward: fills norms (from_logits), log_alpha and nll.
// Backward: needs nll, log_alpha, norms of the forward; fills grad (and gamma on CUDA), where
//   grad[t, n, c] = grad_nll[n] * (p[t, n, c] - posterior[t, n, c])  for t < Tn, 0 beyond,
// p = exp(log_probs) (or softmax(logits)): torch's ctc_loss gradient convention, which is the
// exact gradient with respect to logits when from_logits. A sample with an infinite loss gets a
// zero gradient when zero_infinity, else NaN on its frames (as torch); a bad row (NaN loss) NaN.
void ctc_loss_forward_cuda(const CtcParams& p, void* cuda_stream);
void ctc_loss_backward_cuda(const CtcParams& p, void* cuda_stream);

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, ctc_loss_forward_cpu, (const ::fastcrnn::CtcParams& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, ctc_loss_backward_cpu, (const ::fastcrnn::CtcParams& p))
