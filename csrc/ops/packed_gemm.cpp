// Tensor-facing entry points of the packed-B products (see packed_gemm.h).
#include "ops/packed_gemm.h"

#include "ops/common.h"

namespace fastcrnn::ops {

namespace {

void run_gemm_pack(const GemmPackParams& p) { FASTCRNN_CPU_DISPATCH(gemm_pack_cpu, p); }

}  // namespace

at::Tensor pack_gemm_b(const at::Tensor& b) {
  TORCH_CHECK_VALUE(b.dim() == 3, "pack_gemm_b: b must be (batch, K, N), got ", b.sizes());
  TORCH_CHECK_VALUE(b.device().is_cpu(), "pack_gemm_b: b must be a CPU tensor, got ", b.device());
  TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat || b.scalar_type() == at::kDouble,
                   "pack_gemm_b: b must be float32 or float64, got ", b.scalar_type());
  GemmPackParams p;
  p.dtype = kernel_dtype(b, "b");
  p.batch = b.size(0);
  p.K = b.size(1);
  p.N = b.size(2);
  p.src = b.const_data_ptr();
  p.src_batch_stride = b.stride(0);
  p.src_row_stride = b.stride(1);
  p.src_col_stride = b.stride(2);
  const int64_t panel = gemm_panel(p.dtype);
  at::Tensor packed = at::empty({p.batch, (p.N + panel - 1) / panel, p.K, panel}, b.options());
  p.packed = packed.mutable_data_ptr();
  run_gemm_pack(p);
  return packed;
}

void run_gemm_packed(const PackedGemmParams& p) { FASTCRNN_CPU_DISPATCH(gemm_packed_cpu, p); }

}  // namespace fastcrnn::ops
