// Tensor-facing entry points of the packed-B products (see packed_gemm.h), and the CPU ops
// pack_linear_weight / linear_packed.
#include "ops/packed_gemm.h"

#include <torch/library.h>

#include "ops/buffer_cache.h"
#include "ops/common.h"

namespace fastcrnn::ops {

namespace {

void run_gemm_pack(const GemmPackParams& p) { FASTCRNN_CPU_DISPATCH(gemm_pack_cpu, p); }

// weight (out, in) or (batch, out, in) -> each W^T packed: (batch, ceil(out / P), in, P).
at::Tensor pack_linear_weight_cpu(const at::Tensor& weight) {
  TORCH_CHECK_VALUE((weight.dim() == 2 || weight.dim() == 3) && weight.numel() > 0,
                    "weight must have shape (out_features, in_features) or (batch, "
                    "out_features, in_features), non-empty, got ",
                    weight.sizes());
  cpu_float_dtype(weight, "weight");
  const at::Tensor w = weight.dim() == 2 ? weight.unsqueeze(0) : weight;
  return pack_gemm_b(w.transpose(1, 2));
}

// input (M, in) x the packed weight's W^T (in, out) + bias (out,) -> (M, out).
at::Tensor linear_packed_cpu(const at::Tensor& input, const at::Tensor& weight,
                             int64_t out_features, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(input.dim() == 2, "input must have shape (M, in_features), got ",
                    input.sizes());
  const Dtype dtype = cpu_float_dtype(input, "input");
  TORCH_CHECK_VALUE(out_features > 0, "out_features must be positive, got ", out_features);
  const int64_t M = input.size(0), K = input.size(1);
  check_packed_weight(weight, 1, out_features, K, input, "weight");
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK_TYPE(bias->scalar_type() == input.scalar_type(),
                     "bias must have the input's dtype ", input.scalar_type(), ", got ",
                     bias->scalar_type());
    TORCH_CHECK_VALUE(bias->device().is_cpu() && bias->sizes() == at::IntArrayRef{out_features},
                      "bias must be a CPU tensor of shape (", out_features, "), got ",
                      bias->sizes(), " on ", bias->device());
    b = bias->contiguous();
  }
  at::Tensor out = at::empty({M, out_features}, input.options());
  if (M == 0) return out;
  // rows may be apart (a view of a wider matrix) as long as each row is contiguous
  const at::Tensor a = input.stride(1) == 1 && input.stride(0) >= std::max<int64_t>(K, 1)
                           ? input
                           : input.contiguous();
  const at::Tensor w = weight.contiguous();
  const int64_t lda = M == 1 ? std::max<int64_t>(K, 1) : a.stride(0);
  PackedGemmParams p = packed_gemm_params(dtype, M, out_features, K, lda, out_features);
  p.a = a.const_data_ptr();
  p.packed_b = w.const_data_ptr();
  p.bias = b.defined() ? b.const_data_ptr() : nullptr;
  p.c = out.mutable_data_ptr();
  run_gemm_packed(p);
  return out;
}

}  // namespace

at::Tensor pack_gemm_b(const at::Tensor& b) {
  TORCH_CHECK_VALUE(b.dim() == 3, "pack_gemm_b: b must be (batch, K, N), got ", b.sizes());
  GemmPackParams p;
  p.dtype = cpu_float_dtype(b, "pack_gemm_b: b");
  p.batch = b.size(0);
  p.K = b.size(1);
  p.N = b.size(2);
  p.src = b.const_data_ptr();
  p.src_batch_stride = b.stride(0);
  p.src_row_stride = b.stride(1);
  p.src_col_stride = b.stride(2);
  const int64_t panel = gemm_panel(p.dtype);
  // packed per layer call by the LSTM: a cached block, not fresh pages on every call
  at::Tensor packed = empty_cached({p.batch, (p.N + panel - 1) / panel, p.K, panel}, b.options());
  p.packed = packed.mutable_data_ptr();
  run_gemm_pack(p);
  return packed;
}

void run_gemm_packed(const PackedGemmParams& p) { FASTCRNN_CPU_DISPATCH(gemm_packed_cpu, p); }

void check_packed_weight(const at::Tensor& packed, int64_t batch, int64_t out_features,
                         int64_t in_features, const at::Tensor& like, const char* name) {
  TORCH_CHECK_TYPE(packed.scalar_type() == like.scalar_type(), name, " must have the dtype ",
                   like.scalar_type(), ", got ", packed.scalar_type());
  TORCH_CHECK_VALUE(packed.device().is_cpu(), name, " must be a CPU tensor, got ", packed.device());
  const int64_t P = gemm_panel(cpu_float_dtype(like, "input"));
  const std::vector<int64_t> expected{batch, (out_features + P - 1) / P, in_features, P};
  TORCH_CHECK_VALUE(packed.sizes() == at::IntArrayRef(expected), name,
                    " must be a packed weight (pack_linear_weight) of shape ",
                    at::IntArrayRef(expected), " for ", out_features, " outputs and ", in_features,
                    " inputs, got ", packed.sizes());
}

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("pack_linear_weight", &pack_linear_weight_cpu);
  m.impl("linear_packed", &linear_packed_cpu);
}

}  // namespace fastcrnn::ops
