// Tensor-facing entry points of the packed-B products (kernels/gemm.h), for the ops that
// multiply by one weight many times.
#pragma once
#include <ATen/ATen.h>

#include "kernels/gemm.h"

namespace fastcrnn::ops {

// b: (batch, K, N) float32 / float64 CPU, any strides -> (batch, ceil(N / P), K, P) with
// P = gemm_panel(dtype), the packed layout of gemm.h (a copy: later changes to b do not reach
// it).
at::Tensor pack_gemm_b(const at::Tensor& b);

// The product on raw pointers, for callers in a time loop (no tensor is built per call).
void run_gemm_packed(const PackedGemmParams& p);

}  // namespace fastcrnn::ops
