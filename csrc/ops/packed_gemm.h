// Tensor-facing entry points of the packed-B products (kernels/gemm.h), for the ops that
// multiply by one weight many times, and the inference ops on weights packed once by the
// caller: pack_linear_weight and linear_packed.
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

// A product's sizes: C (M x N) = A (M x K) B, rows of A and C lda and ldc values apart (batch 1,
// no bias, C overwritten); the caller sets the pointers and whatever else differs.
inline PackedGemmParams packed_gemm_params(Dtype dtype, int64_t M, int64_t N, int64_t K,
                                           int64_t lda, int64_t ldc) {
  PackedGemmParams p{dtype, /*batch=*/1, M, N, K};
  p.lda = lda;
  p.ldc = ldc;
  return p;
}

// Checks that `packed` is what pack_linear_weight makes of a (batch, out_features,
// in_features) weight of like's dtype, on the CPU: shape (batch, ceil(out_features / P),
// in_features, P). ValueError / TypeError naming `name`.
void check_packed_weight(const at::Tensor& packed, int64_t batch, int64_t out_features,
                         int64_t in_features, const at::Tensor& like, const char* name);

}  // namespace fastcrnn::ops
