// Fused LSTM ops: the argument checks shared by CPU and CUDA, and the CPU registrations. The
// recurrence they run is in lstm_recurrence.cpp; the CUDA registrations in lstm_cuda.cpp.
#include "ops/lstm.h"

#include <torch/library.h>

#include "ops/common.h"
#include "ops/packed_gemm.h"

namespace fastcrnn::ops {
namespace {

void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have the input's dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on the input's device ",
                    ref.device(), ", got ", t.device());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, name, " must have shape ", expected, ", got ",
                    t.sizes());
}

// x (T, N, I) 3-D; D directions of H units.
LstmSizes layer_sizes(const at::Tensor& x, int64_t D, int64_t H) {
  LstmSizes s;
  s.T = x.size(0);
  s.N = x.size(1);
  s.I = x.size(2);
  s.D = D;
  s.H = H;
  return s;
}

void check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x, int64_t size) {
  if (!bias.has_value()) return;
  check_like(*bias, x, "bias");
  check_shape(*bias, {size}, "bias");
}

}  // namespace

LstmSizes check_lstm_layer(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x.dim() == 3, "input must have shape (T, N, input_size), got ", x.sizes());
  kernel_dtype(x, "input");
  TORCH_CHECK_VALUE(w_hh.dim() == 3 && (w_hh.size(0) == 1 || w_hh.size(0) == 2),
                    "weight_hh must have shape (D, 4*hidden_size, hidden_size) with D in {1, 2}, "
                    "got ",
                    w_hh.sizes());
  const LstmSizes s = layer_sizes(x, w_hh.size(0), w_hh.size(2));
  TORCH_CHECK_VALUE(s.H > 0 && w_hh.size(1) == 4 * s.H,
                    "weight_hh must have shape (D, 4*H, H), got ", w_hh.sizes());
  check_like(w_hh, x, "weight_hh");
  check_like(w_ih, x, "weight_ih");
  check_shape(w_ih, {s.D * 4 * s.H, s.I}, "weight_ih");
  check_like(h0, x, "h0");
  check_shape(h0, {s.D, s.N, s.H}, "h0");
  check_like(c0, x, "c0");
  check_shape(c0, {s.D, s.N, s.H}, "c0");
  check_bias(bias, x, s.D * 4 * s.H);
  return s;
}

LstmSizes check_lstm_layer_packed(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                  const LstmPackedWeights& w,
                                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x.dim() == 3, "input must have shape (T, N, input_size), got ", x.sizes());
  cpu_float_dtype(x, "input");
  TORCH_CHECK_VALUE(h0.dim() == 3 && (h0.size(0) == 1 || h0.size(0) == 2) && h0.size(2) > 0,
                    "h0 must have shape (D, N, hidden_size) with D in {1, 2}, got ", h0.sizes());
  const LstmSizes s = layer_sizes(x, h0.size(0), h0.size(2));
  check_like(h0, x, "h0");
  check_shape(h0, {s.D, s.N, s.H}, "h0");
  check_like(c0, x, "c0");
  check_shape(c0, {s.D, s.N, s.H}, "c0");
  check_packed_weight(w.w_ih, 1, s.D * 4 * s.H, s.I, x, "weight_ih");
  check_packed_weight(w.w_hh, s.D, 4 * s.H, s.H, x, "weight_hh");
  check_bias(bias, x, s.D * 4 * s.H);
  return s;
}

LstmSizes check_lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                                    const at::Tensor& grad_cn, const at::Tensor& x,
                                    const at::Tensor& w_hh, const at::Tensor& acts,
                                    const at::Tensor& hs, const at::Tensor& cs) {
  TORCH_CHECK_VALUE(x.dim() == 3 && w_hh.dim() == 3 && w_hh.size(2) > 0,
                    "lstm_layer_backward: input must be 3-D and weight_hh (D, 4H, H), got ",
                    x.sizes(), " and ", w_hh.sizes());
  kernel_dtype(x, "input");
  const LstmSizes s = layer_sizes(x, w_hh.size(0), w_hh.size(2));
  const int64_t G = s.D * 4 * s.H;
  check_shape(grad_output, {s.T, s.N, s.D * s.H}, "grad_output");
  check_shape(grad_hn, {s.D, s.N, s.H}, "grad_h_n");
  check_shape(grad_cn, {s.D, s.N, s.H}, "grad_c_n");
  check_shape(acts, {s.T, s.N, G}, "acts");
  check_shape(hs, {s.D, s.T + 1, s.N, s.H}, "hs");
  check_shape(cs, {s.D, s.T + 1, s.N, s.H}, "cs");
  check_like(grad_output, x, "grad_output");
  check_like(acts, x, "acts");
  check_like(hs, x, "hs");
  const auto acc = lstm_acc_type(x.scalar_type());
  TORCH_CHECK_VALUE(cs.scalar_type() == acc && cs.device() == x.device(), "cs must be ", acc,
                    " on ", x.device());
  return s;
}

LstmSizes check_lstm_cell(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x.dim() == 2, "input must have shape (N, input_size), got ", x.sizes());
  kernel_dtype(x, "input");
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(1) > 0 && w_hh.size(0) == 4 * w_hh.size(1),
                    "weight_hh must have shape (4*hidden_size, hidden_size), got ", w_hh.sizes());
  LstmSizes s;
  s.N = x.size(0);
  s.I = x.size(1);
  s.H = w_hh.size(1);
  check_like(w_ih, x, "weight_ih");
  check_shape(w_ih, {4 * s.H, s.I}, "weight_ih");
  check_like(w_hh, x, "weight_hh");
  check_like(h, x, "hx");
  check_shape(h, {s.N, s.H}, "hx");
  check_like(c, x, "cx");
  check_shape(c, {s.N, s.H}, "cx");
  check_bias(bias, x, 4 * s.H);
  return s;
}

LstmSizes check_lstm_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                   const at::Tensor& x, const at::Tensor& w_hh,
                                   const at::Tensor& acts) {
  TORCH_CHECK_VALUE(x.dim() == 2 && w_hh.dim() == 2 && w_hh.size(1) > 0,
                    "lstm_cell_backward: input must be 2-D and weight_hh (4H, H), got ", x.sizes(),
                    " and ", w_hh.sizes());
  kernel_dtype(x, "input");
  LstmSizes s;
  s.N = x.size(0);
  s.I = x.size(1);
  s.H = w_hh.size(1);
  check_shape(grad_h, {s.N, s.H}, "grad_h");
  check_shape(grad_c, {s.N, s.H}, "grad_c");
  check_shape(acts, {s.N, 4 * s.H}, "acts");
  check_like(acts, x, "acts");
  return s;
}

namespace {

void cpu_forward_step(const LstmForwardParams& p) {
  FASTCRNN_CPU_DISPATCH(lstm_forward_step_cpu, p);
}
void cpu_backward_step(const LstmBackwardParams& p) {
  FASTCRNN_CPU_DISPATCH(lstm_backward_step_cpu, p);
}

Tensor6 layer_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lengths,
                  bool save) {
  return lstm_layer_forward(x, h0, c0, w_ih, w_hh, bias, lengths, save, cpu_forward_step)
      .as_tuple();
}

// Inference on weights packed by pack_linear_weight: (output, h_n, c_n).
Tensor3 layer_packed_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const std::optional<at::Tensor>& bias) {
  const LstmPackedWeights packed{w_ih, w_hh};
  const LstmLayerOutputs out = lstm_layer_forward(x, h0, c0, at::Tensor(), at::Tensor(), bias,
                                                  std::nullopt, false, cpu_forward_step, &packed);
  return {out.output, out.h_n, out.c_n};
}

Tensor6 layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                           const at::Tensor& grad_cn, const at::Tensor& x, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const std::optional<at::Tensor>& lengths,
                           const at::Tensor& acts, const at::Tensor& hs, const at::Tensor& cs) {
  return lstm_layer_backward(grad_output, grad_hn, grad_cn, x, w_ih, w_hh, lengths, acts, hs, cs,
                             cpu_backward_step)
      .as_tuple();
}

Tensor3 cell_cpu(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                 const std::optional<at::Tensor>& bias) {
  return lstm_cell_forward(x, h, c, w_ih, w_hh, bias, cpu_forward_step).as_tuple();
}

Tensor6 cell_backward_cpu(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& x,
                          const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih,
                          const at::Tensor& w_hh, const at::Tensor& acts) {
  return lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, acts, cpu_backward_step)
      .as_tuple();
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("lstm_layer", &layer_cpu);
  m.impl("lstm_layer_backward", &layer_backward_cpu);
  m.impl("lstm_layer_packed", &layer_packed_cpu);
  m.impl("lstm_cell", &cell_cpu);
  m.impl("lstm_cell_backward", &cell_backward_cpu);
}

}  // namespace fastcrnn::ops
