// Tensor-facing entry points of the packed-B products (kernels/gemm.h), for the ops that
// multiply by one weight many times (PackedWeightGemm: the LSTM's products), and the inference
// ops on weights packed once by the caller: pack_linear_weight and linear_packed.
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

// Products of a CPU float32 / float64 LSTM layer against a packed weight (gemm.h): the per-step
// recurrent products, where a BLAS would pack W_hh again at every step, and the input product
// over all steps. The weight is packed per call and never kept, so nothing can go stale when
// the weights change, or comes packed by the caller (lstm_layer_packed, for inference).
// b: (D, depth, cols), e.g. W_hh[d]^T forward or W_hh[d] backward, or packed: (D, ...) as
// pack_gemm_b makes it; each product is (rows, depth) x (depth, cols) (+ bias (cols,)) into
// rows of stride ldc.
class PackedWeightGemm {
 public:
  static bool applies(const at::Tensor& x, Dtype dtype) {
    return x.is_cpu() && (dtype == Dtype::kFloat32 || dtype == Dtype::kFloat64);
  }
  PackedWeightGemm(const at::Tensor& b, Dtype dtype, int64_t rows, int64_t lda, int64_t ldc,
                   bool accumulate, bool parallel, const void* bias = nullptr)
      : PackedWeightGemm(pack_gemm_b(b), b.size(1), b.size(2), dtype, rows, lda, ldc, accumulate,
                         parallel, bias) {}
  PackedWeightGemm(const at::Tensor& packed, int64_t depth, int64_t cols, Dtype dtype, int64_t rows,
                   int64_t lda, int64_t ldc, bool accumulate, bool parallel,
                   const void* bias = nullptr)
      : packed_(packed.contiguous()),
        direction_size_(gemm_packed_size(dtype, depth, cols)),
        params_(packed_gemm_params(dtype, rows, cols, depth, lda, ldc)) {
    params_.accumulate = accumulate;
    params_.parallel = parallel;
    params_.bias = bias;
  }
  void run(int64_t d, const void* a, void* c) const { run(d, a, c, params_.M); }
  // The product for the first `rows` rows at a and c (a block of the rows it was built for).
  void run(int64_t d, const void* a, void* c, int64_t rows) const {
    PackedGemmParams q = params_;
    q.M = rows;
    q.a = a;
    q.packed_b = static_cast<const char*>(packed_.const_data_ptr()) +
                 d * direction_size_ * static_cast<int64_t>(packed_.element_size());
    q.c = c;
    run_gemm_packed(q);
  }

 private:
  at::Tensor packed_;
  int64_t direction_size_;
  PackedGemmParams params_;
};

}  // namespace fastcrnn::ops
