// Shared CPU/CUDA glue for the CTC loss (implemented in ctc.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "kernels/ctc.h"

namespace fastcrnn::ops {

using CtcForwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// States per (sample, frame) row of log_alpha and of the CUDA log_beta workspace:
// 2 * min(longest, T) + 1. `longest` bounds the target length of every row that runs a
// recursion (a longer target is impossible (L > T) or a bad row, neither of which needs a row).
// prepare_ctc passes the longest target length when the values were validated (it is then known
// on the host), else the static bound of the targets' shape (padded width S, or len(targets) for
// 1-D concatenated targets, which can reach 2T + 1 states).
int64_t ctc_workspace_width(int64_t T, int64_t longest);

// The value checks of CTC lengths and targets as device tensor ops, for CUDA tensors: every check
// folds into one flag word, fetched with the longest target length in ONE device-to-host copy
// (the single host synchronisation of a validated CUDA call). Raises ValueError naming the
// argument, with the CPU checks' wording; returns the longest target length (0 when N = 0).
// The lengths are 1-D int64, the targets int64 (N, S) padded or 1-D concatenated, one device.
// Works on any device, so the CPU tests exercise the logic the CUDA op relies on
// (torch.ops.fastcrnn._ctc_check_values).
int64_t check_ctc_values(const at::Tensor& input_lengths, const at::Tensor& targets,
                         const at::Tensor& target_lengths, int64_t T, int64_t C, int64_t blank);

// Checks the arguments shared by forward and backward, fills the input half of `p` (scores,
// targets, lengths, W) and keeps the tensors it points into alive in `keep`.
// Value checks run for CPU tensors always (plain loops, free) and for CUDA tensors when
// `validate` (check_ctc_values: one host sync). p.W = ctc_workspace_width(T, longest target)
// when `validate`, else from the static bound (so that shapes are known without the values
// under torch.compile and CUDA-graph capture, where validate is false).
// Returns the longest target length when the host knows it (CPU tensors, validated CUDA ones),
// else -1.
int64_t prepare_ctc(const at::Tensor& log_probs, const at::Tensor& targets,
                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                    int64_t blank, bool from_logits, bool validate, CtcParams& p,
                    std::vector<at::Tensor>& keep);

// Allocates the forward outputs (nll (N,), log_alpha (N, T, W), norms (T, N) or (0,)).
CtcForwardOutputs allocate_ctc_forward(const at::Tensor& log_probs, CtcParams& p);

// Checks the saved forward tensors and grad_nll, allocates grad (and, on CUDA, the log_beta
// workspace). p.W becomes log_alpha's width (the forward's), which must be odd, at most the
// static bound's width and, when `longest` (what prepare_ctc returned) is known, at least
// ctc_workspace_width(T, longest). The kernels also mark a row that needs more states than W as
// bad (NaN) instead of reading past it.
at::Tensor prepare_ctc_backward(const at::Tensor& grad_nll, const at::Tensor& log_probs,
                                const at::Tensor& nll, const at::Tensor& log_alpha,
                                const at::Tensor& norms, bool zero_infinity, int64_t longest,
                                CtcParams& p, std::vector<at::Tensor>& keep);

}  // namespace fastcrnn::ops
