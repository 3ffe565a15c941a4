// 3x3 convolutions for inference (the algorithms in kernels/conv.h): Winograd F(2x2, 3x3) for
// wide layers (argument checks, workspaces, the 16 GEMMs through ATen) and the direct kernel for
// narrow inputs with the fused max-pool; the CPU registrations. No autograd: the op
// serves eval-mode forward passes; fastcrnn/ops/conv.py refuses inputs that require grad.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "kernels/conv.h"
#include "ops/buffer_cache.h"
#include "ops/common.h"
#include "ops/packed_gemm.h"

namespace fastcrnn::ops {
namespace {

constexpr int64_t kWinogradTileChunk = 1024;

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

// (K, C, 3, 3) -> the 16 Winograd-domain matrices U[e]^T (C x K), packed for gemm_packed:
// (16, ceil(K / P), C, P), P = gemm_panel(dtype) (gemm.h).
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
  return pack_gemm_b(u.transpose(1, 2));
}

// (K, C, 3, 3) -> the weight in the Winograd domain, packed (see transform_weight), for
// callers that convolve with the same weight many times.
at::Tensor winograd_weight_cpu(const at::Tensor& weight) {
  return transform_weight(weight, cpu_float_dtype(weight, "weight"));
}

// The checks and inputs both convolutions share: input (N, C, H, W) in channels-last memory,
// the K output channels' epilogue and the activation.
struct ConvCall {
  Dtype dtype = Dtype::kFloat32;
  int64_t N = 0, C = 0, H = 0, W = 0, K = 0;
  at::Tensor x, scale, shift;  // scale / shift undefined when absent
  std::optional<double> negative_slope;
};

// Checks input against weight's dtype; the caller checks weight's shape and passes K and the
// input channels it expects.
ConvCall check_conv_call(const at::Tensor& input, const at::Tensor& weight, int64_t K,
                         int64_t weight_channels, const std::optional<at::Tensor>& scale,
                         const std::optional<at::Tensor>& shift,
                         std::optional<double> negative_slope) {
  ConvCall c;
  c.dtype = cpu_float_dtype(input, "input");
  TORCH_CHECK_VALUE(input.dim() == 4, "input must have shape (N, C, H, W), got ", input.sizes());
  c.N = input.size(0);
  c.C = input.size(1);
  c.H = input.size(2);
  c.W = input.size(3);
  c.K = K;
  TORCH_CHECK_VALUE(weight_channels == c.C, "weight expects ", weight_channels,
                    " input channels, input has ", c.C, " (shape ", input.sizes(), ")");
  TORCH_CHECK_VALUE(c.H > 0 && c.W > 0, "input must have a non-empty image, got ", input.sizes());
  check_channel_vector(scale, input, K, "scale");
  check_channel_vector(shift, input, K, "shift");
  if (negative_slope.has_value())
    TORCH_CHECK_VALUE(std::isfinite(*negative_slope), "negative_slope must be finite, got ",
                      *negative_slope);
  c.negative_slope = negative_slope;
  if (c.N > 0) c.x = input.contiguous(at::MemoryFormat::ChannelsLast);
  if (scale.has_value()) c.scale = scale->contiguous();
  if (shift.has_value()) c.shift = shift->contiguous();
  return c;
}

// input's dtype first (the error users most often meet), then weight's against it.
void check_weight_dtype(const at::Tensor& input, const at::Tensor& weight) {
  cpu_float_dtype(input, "input");
  TORCH_CHECK_TYPE(weight.scalar_type() == input.scalar_type(),
                   "weight must have the dtype of input (", input.scalar_type(), "), got ",
                   weight.scalar_type());
}

// Fills the fields both kernels' parameter structs share.
template <typename Params>
void set_call(Params& p, const ConvCall& c) {
  p.dtype = c.dtype;
  p.N = c.N;
  p.H = c.H;
  p.W = c.W;
  p.C = c.C;
  p.K = c.K;
  p.input = c.x.defined() ? c.x.const_data_ptr() : nullptr;
  p.scale = c.scale.defined() ? c.scale.const_data_ptr() : nullptr;
  p.shift = c.shift.defined() ? c.shift.const_data_ptr() : nullptr;
  p.activation = c.negative_slope.has_value();
  p.negative_slope = c.negative_slope.value_or(0.0);
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& scale,
                                const std::optional<at::Tensor>& shift,
                                std::optional<double> negative_slope,
                                std::optional<int64_t> out_channels) {
  check_weight_dtype(input, weight);
  at::Tensor u;
  int64_t K = 0;
  const Dtype weight_dtype = cpu_float_dtype(weight, "weight");
  const int64_t P = gemm_panel(weight_dtype);
  const bool packed = weight.dim() == 4 && weight.size(0) == 16 && weight.size(3) == P;
  if (packed) {
    TORCH_CHECK_VALUE(out_channels.has_value(),
                      "out_channels is needed with a packed Winograd weight (16, ceil(K / ", P,
                      "), C, ", P, "): it does not record K");
    K = *out_channels;
    TORCH_CHECK_VALUE(K > 0 && (K + P - 1) / P == weight.size(1) && weight.size(2) > 0,
                      "a packed Winograd weight for ", K, " output channels must have shape (16, ",
                      (K + P - 1) / P, ", C, ", P, "), got ", weight.sizes());
    u = weight.contiguous();
  } else {
    TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
                      "weight must have shape (K, C, 3, 3), or be a packed Winograd weight "
                      "(16, ceil(K / ",
                      P, "), C, ", P, ") from winograd_weight, got ", weight.sizes());
    u = transform_weight(weight, weight_dtype);
    K = weight.size(0);
    TORCH_CHECK_VALUE(!out_channels.has_value() || *out_channels == K, "out_channels (",
                      out_channels.value_or(0), ") must equal weight's K (", K, ")");
  }
  const ConvCall c = check_conv_call(input, weight, K, u.size(2), scale, shift, negative_slope);
  const int64_t C = c.C;
  // (N, H, W, K) memory: (N, K, H, W) in channels-last strides
  at::Tensor output = empty_cached({c.N, c.H, c.W, K}, input.options()).permute({0, 3, 1, 2});
  if (c.N == 0) return output;

  Winograd3x3Params p;
  set_call(p, c);
  p.tiles_h = (c.H + 1) / 2;
  p.tiles_w = (c.W + 1) / 2;
  // The tiles go through the three stages in chunks: the GEMMs keep their speed on chunks of
  // this size, while on one tall product per element they lose it, and the workspaces stay
  // small.
  const int64_t all_tiles = c.N * p.tiles_h * p.tiles_w;
  const int64_t chunk = std::min<int64_t>(all_tiles, kWinogradTileChunk);
  at::Tensor v = empty_cached({16, chunk, C}, input.options());
  at::Tensor m = empty_cached({16, chunk, K}, input.options());
  p.output = output.mutable_data_ptr();
  PackedGemmParams gemm = packed_gemm_params(c.dtype, 0, K, C, C, K);
  gemm.batch = 16;
  gemm.packed_b = u.const_data_ptr();
  for (int64_t first = 0; first < all_tiles; first += chunk) {
    p.first_tile = first;
    p.P = std::min(chunk, all_tiles - first);
    // contiguous (16, P, *) views of the workspaces' fronts, for the last, shorter chunk too
    at::Tensor vp = v.view(-1).narrow(0, 0, 16 * p.P * C).view({16, p.P, C});
    at::Tensor mp = m.view(-1).narrow(0, 0, 16 * p.P * K).view({16, p.P, K});
    p.transformed_input = vp.data_ptr();
    run_input_transform(p);
    gemm.M = p.P;
    gemm.a = vp.const_data_ptr();
    gemm.a_batch_stride = p.P * C;
    gemm.c = mp.mutable_data_ptr();
    gemm.c_batch_stride = p.P * K;
    run_gemm_packed(gemm);
    p.products = mp.data_ptr();
    run_output_transform(p);
  }
  return output;
}

void run_direct(const Conv3x3DirectParams& p) { FASTCRNN_CPU_DISPATCH(conv3x3_direct_cpu, p); }

at::Tensor conv3x3_direct_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& scale,
                              const std::optional<at::Tensor>& shift,
                              std::optional<double> negative_slope, bool max_pool) {
  check_weight_dtype(input, weight);
  const at::Tensor g = check_raw_weight(weight);
  const ConvCall c =
      check_conv_call(input, weight, g.size(0), g.size(1), scale, shift, negative_slope);
  if (max_pool)
    TORCH_CHECK_VALUE(c.H >= 2 && c.W >= 2, "max_pool needs an image of at least 2 x 2, got ",
                      input.sizes());
  const int64_t Ho = max_pool ? c.H / 2 : c.H, Wo = max_pool ? c.W / 2 : c.W;
  at::Tensor output = empty_cached({c.N, Ho, Wo, c.K}, input.options()).permute({0, 3, 1, 2});
  if (c.N == 0) return output;
  const at::Tensor taps = g.permute({2, 3, 1, 0}).contiguous();  // (3, 3, C, K)
  Conv3x3DirectParams p;
  set_call(p, c);
  p.weight = taps.const_data_ptr();
  p.max_pool = max_pool;
  p.output = output.mutable_data_ptr();
  run_direct(p);
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("conv3x3_direct", &conv3x3_direct_cpu);
  m.impl("winograd_weight", &winograd_weight_cpu);
  m.impl("winograd_conv3x3", &winograd_conv3x3_cpu);
}

}  // namespace fastcrnn::ops
