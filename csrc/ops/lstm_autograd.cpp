// Autograd of fastcrnn::lstm_cell, in C++: a decoder calls the cell once per step, and at the
// seq2seq sizes the Python torch.library autograd (setup_context, backward, the generated node)
// cost a visible share of a step whose matrix products are the same as nn.LSTMCell's. The layer
// op runs once per sequence and keeps its Python autograd (fastcrnn/ops/lstm.py).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <vector>

#include "ops/common.h"
#include "ops/lstm.h"

namespace fastcrnn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using CellSig = Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, const std::optional<at::Tensor>&);
using CellBackwardSig = Tensor6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&);

const c10::TypedOperatorHandle<CellSig>& cell_op() {
  static const auto op = typed_op<CellSig>("fastcrnn::lstm_cell");
  return op;
}

const c10::TypedOperatorHandle<CellBackwardSig>& cell_backward_op() {
  static const auto op = typed_op<CellBackwardSig>("fastcrnn::lstm_cell_backward");
  return op;
}

// The cell's gradients in differentiable ATen ops, for a backward that must itself be
// differentiated (create_graph=True): the fused backward kernel has no derivative. The gates are
// recomputed from the saved inputs; the formulas are those of the fused backward.
variable_list differentiable_cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                           const variable_list& saved, bool has_bias) {
  const at::Tensor& x = saved[0];
  const at::Tensor& hx = saved[1];
  const at::Tensor& cx = saved[2];
  const at::Tensor& w_ih = saved[3];
  const at::Tensor& w_hh = saved[4];
  at::Tensor gates = at::matmul(x, w_ih.t()) + at::matmul(hx, w_hh.t());
  if (has_bias) gates = gates + saved[6];
  const std::vector<at::Tensor> chunks = gates.chunk(4, 1);
  const at::Tensor i = chunks[0].sigmoid();
  const at::Tensor f = chunks[1].sigmoid();
  const at::Tensor g = chunks[2].tanh();
  const at::Tensor o = chunks[3].sigmoid();
  const at::Tensor tanh_c = (f * cx + i * g).tanh();
  const at::Tensor grad_c_next = grad_c + grad_h * o * (1 - tanh_c * tanh_c);
  const at::Tensor grad_gates =
      at::cat({grad_c_next * g * i * (1 - i), grad_c_next * cx * f * (1 - f),
               grad_c_next * i * (1 - g * g), grad_h * tanh_c * o * (1 - o)},
              1);
  variable_list out(6);
  out[0] = grad_gates.mm(w_ih);
  out[1] = grad_gates.mm(w_hh);
  out[2] = grad_c_next * f;
  out[3] = grad_gates.t().mm(x);
  out[4] = grad_gates.t().mm(hx);
  if (has_bias) out[5] = grad_gates.sum(0);
  return out;
}

class LstmCellFunction : public torch::autograd::Function<LstmCellFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& hx,
                               const at::Tensor& cx, const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [h, c, acts] = cell_op().call(x, hx, cx, w_ih, w_hh, bias);
    // bias only for a double backward, which recomputes the gates
    ctx->save_for_backward({x, hx, cx, w_ih, w_hh, acts, bias.value_or(at::Tensor())});
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->mark_non_differentiable({acts});
    ctx->set_materialize_grads(false);  // acts gets no gradient: no zero tensor for it
    return {h, c, acts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor grad_h = grads[0].defined() ? grads[0] : at::zeros_like(s[1]);
    const at::Tensor grad_c = grads[1].defined() ? grads[1] : at::zeros_like(s[2]);
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // grad mode is on in a backward only under create_graph=True: a gradient of the gradient
    if (at::GradMode::is_enabled())
      return differentiable_cell_backward(grad_h, grad_c, s, has_bias);
    auto [dx, dh, dc, dw_ih, dw_hh, db] =
        cell_backward_op().call(grad_h, grad_c, s[0], s[1], s[2], s[3], s[4], s[5]);
    out[0] = dx;
    out[1] = dh;
    out[2] = dc;
    out[3] = dw_ih;
    out[4] = dw_hh;
    if (has_bias) out[5] = db;
    return out;
  }
};

Tensor3 lstm_cell_autograd(const at::Tensor& x, const at::Tensor& hx, const at::Tensor& cx,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& bias) {
  if (!records_grad({&x, &hx, &cx, &w_ih, &w_hh, bias ? &*bias : nullptr})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return cell_op().call(x, hx, cx, w_ih, w_hh, bias);
  }
  variable_list out = LstmCellFunction::apply(x, hx, cx, w_ih, w_hh, bias);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, Autograd, m) { m.impl("lstm_cell", &lstm_cell_autograd); }

}  // namespace fastcrnn::ops
