// CTC forced alignment: the CUDA registration (device guard, current stream, launch).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/align.h"

namespace fastcrnn::ops {
namespace {

AlignOutputs forced_align_cuda_op(const at::Tensor& log_probs, const at::Tensor& targets,
                                  const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                  int64_t blank, bool validate) {
  const c10::cuda::CUDAGuard guard(log_probs.device());
  CtcAlignParams p;
  std::vector<at::Tensor> keep;
  AlignOutputs out = prepare_forced_align(log_probs, targets, input_lengths, target_lengths, blank,
                                          validate, p, keep);
  try {
    ctc_forced_align_cuda(p, c10::cuda::getCurrentCUDAStream(log_probs.device().index()).stream());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CUDA, m) { m.impl("ctc_forced_align", &forced_align_cuda_op); }

}  // namespace fastcrnn::ops
