#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/ctc.h"

namespace fastcrnn::ops {
namespace {

CtcForwardOutputs ctc_loss_forward_cuda_op(const at::Tensor& log_probs, const at::Tensor& targets,
                                           const at::Tensor& input_lengths,
                                           const at::Tensor& target_lengths, int64_t blank,
                                           bool from_logits, bool /*zero_infinity: backward*/,
                                           bool validate) {
  const c10::cuda::CUDAGuard guard(log_probs.device());
  // a stream being captured into a CUDA graph cannot synchronise: no value checks there
  const bool capturing =
      c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
  CtcParams p;
  std::vector<at::Tensor> keep;
  prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank, from_logits,
              validate && !capturing, p, keep);
  CtcForwardOutputs out = allocate_ctc_forward(log_probs, p);
  try {
    ctc_loss_forward_cuda(p, c10::cuda::getCurrentCUDAStream(log_probs.device().index()).stream());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  return out;
}

at::Tensor ctc_loss_backward_cuda_op(const at::Tensor& grad_nll, const at::Tensor& log_probs,
                                     const at::Tensor& targets, const at::Tensor& input_lengths,
                                     const at::Tensor& target_lengths, const at::Tensor& nll,
                                     const at::Tensor& log_alpha, const at::Tensor& norms,
                                     int64_t blank, bool from_logits, bool zero_infinity) {
  const c10::cuda::CUDAGuard guard(log_probs.device());
  CtcParams p;
  std::vector<at::Tensor> keep;
  const int64_t longest = prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank,
                                      from_logits, false, p, keep);
  at::Tensor grad = prepare_ctc_backward(grad_nll, log_probs, nll, log_alpha, norms, zero_infinity,
                                         longest, p, keep);
  at::Tensor links = at::empty({p.N, 2 * p.W + 1}, log_probs.options().dtype(at::kInt));
  p.label_links = links.data_ptr<int32_t>();
  try {
    ctc_loss_backward_cuda(p, c10::cuda::getCurrentCUDAStream(log_probs.device().index()).stream());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CUDA, m) {
  m.impl("ctc_loss_forward", &ctc_loss_forward_cuda_op);
  m.impl("ctc_loss_backward", &ctc_loss_backward_cuda_op);
}

}  // namespace fastcrnn::ops
