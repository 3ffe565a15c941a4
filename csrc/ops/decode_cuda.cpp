#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/decode.h"

namespace fastcrnn::ops {
namespace {

DecodeOutputs greedy_decode_cuda_op(const at::Tensor& scores, const at::Tensor& input_lengths,
                                    int64_t blank, bool logits, bool validate) {
  const c10::cuda::CUDAGuard guard(scores.device());
  GreedyDecodeParams p;
  std::vector<at::Tensor> keep;
  DecodeOutputs out =
      prepare_greedy_decode(scores, input_lengths, blank, logits, validate, p, keep);
  try {
    greedy_decode_cuda(p, c10::cuda::getCurrentCUDAStream(scores.device().index()).stream());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CUDA, m) { m.impl("greedy_decode", &greedy_decode_cuda_op); }

}  // namespace fastcrnn::ops
