// Shared CPU/CUDA glue for CTC forced alignment (implemented in align.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "kernels/align.h"

namespace fastcrnn::ops {

// (labels, frame_log_probs, token_starts, token_ends, token_log_probs, scores, aligned)
using AlignOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checks the arguments as the CTC loss does (prepare_ctc: the same targets, lengths and value
// checks), allocates the outputs and the backpointer workspace (and, for CUDA, the score rows),
// and fills `params`. Keeps the tensors the params point into alive in `keep`. The per-token
// outputs have the padded targets' width, or for 1-D concatenated targets the longest target
// when the host knows it (CPU tensors, validated CUDA ones), else len(targets).
AlignOutputs prepare_forced_align(const at::Tensor& log_probs, const at::Tensor& targets,
                                  const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                  int64_t blank, bool validate, CtcAlignParams& params,
                                  std::vector<at::Tensor>& keep);

}  // namespace fastcrnn::ops
