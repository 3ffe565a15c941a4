// Shared CPU/CUDA glue for the CTC loss (implemented in ctc.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "kernels/ctc.h"

namespace fastcrnn::ops {

using CtcForwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Checks the arguments shared by forward and backward, fills the input half of `p` (scores,
// targets, lengths, W) and keeps the tensors it points into alive in `keep`.
// Value checks run when `validate` (always for CPU tensors; for CUDA they synchronise).
void prepare_ctc(const at::Tensor& log_probs, const at::Tensor& targets,
                 const at::Tensor& input_lengths, const at::Tensor& target_lengths, int64_t blank,
                 bool from_logits, bool validate, CtcParams& p, std::vector<at::Tensor>& keep);

// Allocates the forward outputs (nll (N,), log_alpha (N, T, W), norms (T, N) or (0,)).
CtcForwardOutputs allocate_ctc_forward(const at::Tensor& log_probs, CtcParams& p);

// Checks the saved forward tensors and grad_nll, allocates grad (and, on CUDA, the log_beta
// workspace).
at::Tensor prepare_ctc_backward(const at::Tensor& grad_nll, const at::Tensor& log_probs,
                                const at::Tensor& nll, const at::Tensor& log_alpha,
                                const at::Tensor& norms, bool zero_infinity, CtcParams& p,
                                std::vector<at::Tensor>& keep);

}  // namespace fastcrnn::ops
