// Matrix products against a packed weight ("packed B"): C (M x N) = A (M x K) B (K x N) + bias,
// or C += A B + bias, for weights that are packed once and then multiplied many times (a frozen
// model's convolutions, or W_hh over the T steps of one LSTM call).
//
// Why our own: at the row counts a CRNN serves (M = the tiles or frames of one image: 26-200),
// a BLAS packs B again on every call, and reading the weight once to pack it and again to
// multiply costs as much as the multiplies. A packed B is read exactly once per call, as one
// contiguous stream the prefetcher keeps ahead of.
//
// Packed layout: B's columns in panels of P = gemm_panel(dtype) (128 bytes: 32 float32 or 16
// float64 values); panel p holds columns [p * P, (p + 1) * P) as K rows of P values, row-major
// (so element (k, n) sits at (n / P) * K * P + k * P + n % P); the last panel is zero-padded to
// full width. A batch of B matrices is batch such blocks back to back, each
// gemm_packed_size(dtype, K, N) values long.
// A and C are row-major with leading dimensions lda, ldc (>= K, >= N); batches of them are
// a_batch_stride / c_batch_stride values apart.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cpu_isa.h"

namespace fastcrnn {

constexpr int64_t kGemmPanelBytes = 128;

// Columns per panel of a packed B of this dtype (float32 or float64).
inline int64_t gemm_panel(Dtype dtype) {
  return kGemmPanelBytes / (dtype == Dtype::kFloat64 ? 8 : 4);
}

// Values in one packed B of K rows and N columns.
inline int64_t gemm_packed_size(Dtype dtype, int64_t K, int64_t N) {
  const int64_t P = gemm_panel(dtype);
  return (N + P - 1) / P * K * P;
}

// Packs batch matrices B[b] (K x N), element (k, n) of B[b] at
// src + b * src_batch_stride + k * src_row_stride + n * src_col_stride.
struct GemmPackParams {
  Dtype dtype = Dtype::kFloat32;  // float32 or float64
  int64_t batch = 1, K = 0, N = 0;
  const void* src = nullptr;
  int64_t src_batch_stride = 0, src_row_stride = 0, src_col_stride = 0;
  void* packed = nullptr;  // (batch, gemm_packed_size(dtype, K, N))
};

struct PackedGemmParams {
  Dtype dtype = Dtype::kFloat32;  // float32 or float64 (every pointer has this type)
  int64_t batch = 1, M = 0, N = 0, K = 0;
  const void* a = nullptr;  // (batch, M, K): row r of batch b at a + b * a_batch_stride + r * lda
  int64_t lda = 0, a_batch_stride = 0;
  const void* packed_b = nullptr;  // (batch, gemm_packed_size(dtype, K, N))
  const void* bias = nullptr;      // (N,) added to every row of every batch, or null
  void* c = nullptr;               // (batch, M, N), as A
  int64_t ldc = 0, c_batch_stride = 0;
  bool accumulate = false;  // C += A B (+ bias) instead of C = A B (+ bias)
  // Whether the call may split its work over ATen's threads (false inside a parallel region
  // that already gives each thread its own product).
  bool parallel = true;
};

}  // namespace fastcrnn

FASTCRNN_DECLARE_CPU_KERNEL(void, gemm_pack_cpu, (const ::fastcrnn::GemmPackParams& p))
FASTCRNN_DECLARE_CPU_KERNEL(void, gemm_packed_cpu, (const ::fastcrnn::PackedGemmParams& p))
