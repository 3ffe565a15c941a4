// Shared CPU/CUDA glue for greedy decoding (implemented in decode.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "kernels/decode.h"

namespace fastcrnn::ops {

using DecodeOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checks the arguments, allocates outputs and workspace, and fills `params` for a launcher.
// Keeps the tensors the params point into alive in `keep`.
DecodeOutputs prepare_greedy_decode(const at::Tensor& scores, const at::Tensor& input_lengths,
                                    int64_t blank, bool logits, bool validate,
                                    GreedyDecodeParams& params, std::vector<at::Tensor>& keep);

}  // namespace fastcrnn::ops
