// Autograd of fastcrnn::lstm_cell, in C++: a decoder calls the cell once per step, and at the
// seq2seq sizes the Python torch.library autograd (setup_context, backward, the generated node)
// cost a visible share of a step whose matrix products are the same as nn.LSTMCell's. The layer
// op runs once per sequence and keeps its Python autograd (fastcrnn/ops/lstm.py).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

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

class LstmCellFunction : public torch::autograd::Function<LstmCellFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& hx,
                               const at::Tensor& cx, const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [h, c, acts] = cell_op().call(x, hx, cx, w_ih, w_hh, bias);
    ctx->save_for_backward({x, hx, cx, w_ih, w_hh, acts});
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->mark_non_differentiable({acts});
    ctx->set_materialize_grads(false);  // acts gets no gradient: no zero tensor for it
    return {h, c, acts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // grad mode is on in a backward only under create_graph=True: a gradient of the gradient
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(),
                                "fastcrnn's LSTM cell does not support double backward "
                                "(create_graph=True); use torch.nn.LSTMCell for that");
    variable_list out(6);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor grad_h = grads[0].defined() ? grads[0] : at::zeros_like(s[1]);
    const at::Tensor grad_c = grads[1].defined() ? grads[1] : at::zeros_like(s[2]);
    auto [dx, dh, dc, dw_ih, dw_hh, db] =
        cell_backward_op().call(grad_h, grad_c, s[0], s[1], s[2], s[3], s[4], s[5]);
    out[0] = dx;
    out[1] = dh;
    out[2] = dc;
    out[3] = dw_ih;
    out[4] = dw_hh;
    if (ctx->saved_data["has_bias"].toBool()) out[5] = db;
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
