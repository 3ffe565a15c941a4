// Winograd F(2x2, 3x3) convolution for inference (the algorithm in kernels/conv.h): argument
// checks, workspaces, the 16 GEMMs through ATen, and the CPU registration. No autograd: the op
// serves eval-mode forward passes; fastcrnn/ops/conv.py refuses inputs that require grad.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <optional>

#include "kernels/conv.h"
#include "ops/common.h"

namespace fastcrnn::ops {
namespace {

Dtype conv_dtype(const at::Tensor& t, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, arg,
                   " must be float32 or float64, got ", t.scalar_type());
  return t.scalar_type() == at::kDouble ? Dtype::kFloat64 : Dtype::kFloat32;
}

void check_channel_vector(const std::optional<at::Tensor>& v, const at::Tensor& like, int64_t K,
                          const char* arg) {
  if (!v.has_value()) return;
  TORCH_CHECK_TYPE(v->scalar_type() == like.scalar_type(), arg, " must have the dtype of input (",
                   like.scalar_type(), "), got ", v->scalar_type());
  TORCH_CHECK_VALUE(v->device() == like.device(), arg, " must be on ", like.device(), ", got ",
                    v->device());
  TORCH_CHECK_VALUE(v->dim() == 1 && v->size(0) == K, arg, " must have shape (", K,
                    ",), one entry per output channel, got ", v->sizes());
}

void run_input_transform(const Winograd3x3Params& p) {
  FASTCRNN_CPU_DISPATCH(winograd_input_transform_cpu, p);
}
void run_weight_transform(const Winograd3x3Params& p) {
  FASTCRNN_CPU_DISPATCH(winograd_weight_transform_cpu, p);
}
void run_output_transform(const Winograd3x3Params& p) {
  FASTCRNN_CPU_DISPATCH(winograd_output_transform_cpu, p);
}

at::Tensor check_raw_weight(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
                    "weight must have shape (K, C, 3, 3), got ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) > 0 && weight.size(1) > 0,
                    "weight must have at least one input and one output channel, got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.device().is_cpu(), "weight must be a CPU tensor, got ", weight.device());
  return weight.contiguous();
}

at::Tensor transform_weight(const at::Tensor& weight, Dtype dtype) {
  const at::Tensor g = check_raw_weight(weight);
  Winograd3x3Params p;
  p.dtype = dtype;
  p.K = g.size(0);
  p.C = g.size(1);
  at::Tensor u = at::empty({16, p.K, p.C}, g.options());
  p.weight = g.const_data_ptr();
  p.transformed_weight = u.mutable_data_ptr();
  run_weight_transform(p);
  return u;
}

// (K, C, 3, 3) -> (16, K, C): the weight in the Winograd domain, for callers that convolve with
// the same weight many times.
at::Tensor winograd_weight_cpu(const at::Tensor& weight) {
  return transform_weight(weight, conv_dtype(weight, "weight"));
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& scale,
                                const std::optional<at::Tensor>& shift,
                                std::optional<double> negative_slope) {
  const Dtype dtype = conv_dtype(input, "input");
  TORCH_CHECK_VALUE(input.dim() == 4, "input must have shape (N, C, H, W), got ", input.sizes());
  TORCH_CHECK_VALUE(input.device().is_cpu(), "input must be a CPU tensor, got ", input.device());
  TORCH_CHECK_TYPE(weight.scalar_type() == input.scalar_type(),
                   "weight must have the dtype of input (", input.scalar_type(), "), got ",
                   weight.scalar_type());
  at::Tensor u;
  if (weight.dim() == 3) {
    TORCH_CHECK_VALUE(weight.size(0) == 16 && weight.size(1) > 0 && weight.size(2) > 0,
                      "a transformed weight must have shape (16, K, C), got ", weight.sizes());
    TORCH_CHECK_VALUE(weight.device().is_cpu(), "weight must be a CPU tensor, got ",
                      weight.device());
    u = weight.contiguous();
  } else {
    u = transform_weight(weight, dtype);
  }
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = u.size(1);
  TORCH_CHECK_VALUE(u.size(2) == C, "weight expects ", u.size(2), " input channels, input has ", C,
                    " (shape ", input.sizes(), ")");
  TORCH_CHECK_VALUE(H > 0 && W > 0, "input must have a non-empty image, got ", input.sizes());
  check_channel_vector(scale, input, K, "scale");
  check_channel_vector(shift, input, K, "shift");
  if (negative_slope.has_value())
    TORCH_CHECK_VALUE(std::isfinite(*negative_slope), "negative_slope must be finite, got ",
                      *negative_slope);

  at::Tensor output =
      at::empty({N, K, H, W}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (N == 0) return output;
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor a = scale.has_value() ? scale->contiguous() : at::Tensor();
  const at::Tensor b = shift.has_value() ? shift->contiguous() : at::Tensor();

  Winograd3x3Params p;
  p.dtype = dtype;
  p.N = N;
  p.H = H;
  p.W = W;
  p.C = C;
  p.K = K;
  p.tiles_h = (H + 1) / 2;
  p.tiles_w = (W + 1) / 2;
  p.P = N * p.tiles_h * p.tiles_w;
  at::Tensor v = at::empty({16, p.P, C}, input.options());
  at::Tensor m = at::empty({16, p.P, K}, input.options());
  p.input = x.const_data_ptr();
  p.transformed_input = v.mutable_data_ptr();
  run_input_transform(p);
  at::bmm_out(m, v, u.transpose(1, 2));
  p.products = m.const_data_ptr();
  p.scale = a.defined() ? a.const_data_ptr() : nullptr;
  p.shift = b.defined() ? b.const_data_ptr() : nullptr;
  p.activation = negative_slope.has_value();
  p.negative_slope = negative_slope.value_or(0.0);
  p.output = output.mutable_data_ptr();
  run_output_transform(p);
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("winograd_weight", &winograd_weight_cpu);
  m.impl("winograd_conv3x3", &winograd_conv3x3_cpu);
}

}  // namespace fastcrnn::ops
