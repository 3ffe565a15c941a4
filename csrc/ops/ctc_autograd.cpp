// Autograd of the CTC loss ops, and the fastcrnn::ctc_loss composite (forward + zero_infinity +
// reduction). Device-independent: one Autograd kernel serves the CPU and CUDA implementations.
// Kept in C++ because at the workloads we measure the kernels take tens of microseconds and a
// Python autograd.Function (plus its materialised zero gradients for log_alpha and norms) cost
// more than the kernels themselves.
#include <ATen/Dispatch.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "ops/common.h"
#include "ops/ctc.h"

namespace fastcrnn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSig = CtcForwardOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, int64_t, bool, bool, bool);
using BackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, int64_t, bool, bool);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op = typed_op<ForwardSig>("fastcrnn::ctc_loss_forward");
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op = typed_op<BackwardSig>("fastcrnn::ctc_loss_backward");
  return op;
}

// Runs the forward op below autograd and saves what ctc_loss_backward needs.
CtcForwardOutputs forward_and_save(AutogradContext* ctx, const at::Tensor& log_probs,
                                   const at::Tensor& targets, const at::Tensor& input_lengths,
                                   const at::Tensor& target_lengths, int64_t blank,
                                   bool from_logits, bool zero_infinity, bool validate) {
  at::AutoDispatchBelowADInplaceOrView below;
  auto out = forward_op().call(log_probs, targets, input_lengths, target_lengths, blank,
                               from_logits, zero_infinity, validate);
  const auto& [nll, log_alpha, norms] = out;
  ctx->save_for_backward(
      {log_probs, targets, input_lengths, target_lengths, nll, log_alpha, norms});
  ctx->saved_data["blank"] = blank;
  ctx->saved_data["from_logits"] = from_logits;
  ctx->saved_data["zero_infinity"] = zero_infinity;
  return out;
}

// d loss / d log_probs from the per-sample gradient, with what forward_and_save kept.
at::Tensor saved_backward(AutogradContext* ctx, const at::Tensor& grad_nll) {
  const variable_list s = ctx->get_saved_variables();
  return backward_op().call(
      grad_nll, s[0], s[1], s[2], s[3], s[4], s[5], s[6], ctx->saved_data["blank"].toInt(),
      ctx->saved_data["from_logits"].toBool(), ctx->saved_data["zero_infinity"].toBool());
}

class CtcForwardFunction : public torch::autograd::Function<CtcForwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& log_probs,
                               const at::Tensor& targets, const at::Tensor& input_lengths,
                               const at::Tensor& target_lengths, int64_t blank, bool from_logits,
                               bool zero_infinity, bool validate) {
    auto [nll, log_alpha, norms] =
        forward_and_save(ctx, log_probs, targets, input_lengths, target_lengths, blank, from_logits,
                         zero_infinity, validate);
    ctx->mark_non_differentiable({log_alpha, norms});
    // log_alpha and norms never receive a gradient: do not allocate zeros for them
    ctx->set_materialize_grads(false);
    return {nll, log_alpha, norms};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(8);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return out;
    out[0] = saved_backward(ctx, grads[0]);
    return out;
  }
};

// Plain CPU tensors (not fake, functional or batched ones being traced): the reduction and its
// gradient are loops over N entries, cheaper than the three or four tensor ops they replace.
bool plain_cpu(const at::Tensor& losses, const at::Tensor& target_lengths) {
  return losses.is_cpu() && target_lengths.is_cpu() && !at::isTensorSubclassLike(losses) &&
         !at::isTensorSubclassLike(target_lengths);
}

// Per-sample losses to the loss: zero_infinity, then reduction (at::Reduction: 0 none, 1 mean
// dividing each loss by its target length clamped to >= 1 as torch, 2 sum).
at::Tensor reduce_losses(at::Tensor losses, const at::Tensor& target_lengths, int64_t reduction,
                         bool zero_infinity) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (reduction != 0 && plain_cpu(losses, target_lengths)) {
    const at::Tensor tl = target_lengths.to(at::kLong).contiguous();
    const int64_t* len = tl.data_ptr<int64_t>();
    const at::Tensor v = losses.contiguous();
    at::Tensor out = at::empty({}, losses.options());
    AT_DISPATCH_FLOATING_TYPES(losses.scalar_type(), "ctc_loss_reduce", [&] {
      const scalar_t* x = v.data_ptr<scalar_t>();
      double acc = 0;
      for (int64_t n = 0; n < v.numel(); ++n) {
        const double loss = zero_infinity && x[n] == inf ? 0.0 : double(x[n]);
        acc += reduction == 1 ? loss / double(std::max<int64_t>(len[n], 1)) : loss;
      }
      // mean of an empty batch: 0 / 0 = NaN, as torch
      *out.data_ptr<scalar_t>() =
          static_cast<scalar_t>(reduction == 1 ? acc / double(v.numel()) : acc);
    });
    return out;
  }
  if (zero_infinity) losses = at::where(losses.eq(inf), at::zeros_like(losses), losses);
  if (reduction == 0) return losses;
  if (reduction == 2) return losses.sum();
  return losses.div(target_lengths.clamp_min(1).to(losses.scalar_type())).mean();
}

// The gradient of each sample's loss from the gradient of the reduced loss (a loss zeroed by
// zero_infinity gets its zero gradient from the kernel).
at::Tensor per_sample_grad(const at::Tensor& grad, const at::Tensor& nll,
                           const at::Tensor& target_lengths, int64_t reduction) {
  if (reduction == 0) return grad;
  if (plain_cpu(grad, target_lengths) && !grad.requires_grad()) {
    const int64_t N = nll.numel();
    const at::Tensor tl = target_lengths.to(at::kLong).contiguous();
    const int64_t* len = tl.data_ptr<int64_t>();
    at::Tensor out = at::empty({N}, nll.options());
    AT_DISPATCH_FLOATING_TYPES(nll.scalar_type(), "ctc_loss_reduce_backward", [&] {
      const double g = grad.item<double>();
      scalar_t* o = out.data_ptr<scalar_t>();
      for (int64_t n = 0; n < N; ++n) {
        o[n] = static_cast<scalar_t>(
            reduction == 1 ? g / double(std::max<int64_t>(len[n], 1)) / double(N) : g);
      }
    });
    return out;
  }
  // sizes may be symbolic here (torch.compile traces this backward)
  const at::Tensor each = grad.expand_symint(nll.sym_sizes());
  if (reduction == 2) return each;
  return each.div(target_lengths.clamp_min(1).to(nll.scalar_type()))
      .div_(c10::Scalar(nll.sym_numel()));
}

// The whole loss (forward, zero_infinity, reduction) as one autograd node: at small sizes each
// recorded op (where, div, mean, and their backward nodes) costs about as much as a kernel.
class CtcLossFunction : public torch::autograd::Function<CtcLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& log_probs,
                            const at::Tensor& targets, const at::Tensor& input_lengths,
                            const at::Tensor& target_lengths, int64_t blank, int64_t reduction,
                            bool zero_infinity, bool from_logits, bool validate) {
    const at::Tensor nll =
        std::get<0>(forward_and_save(ctx, log_probs, targets, input_lengths, target_lengths, blank,
                                     from_logits, zero_infinity, validate));
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView below;
    return reduce_losses(nll, target_lengths, reduction, zero_infinity);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(9);
    if (!ctx->needs_input_grad(0)) return out;
    const variable_list s = ctx->get_saved_variables();
    out[0] = saved_backward(
        ctx, per_sample_grad(grads[0], s[4], s[3], ctx->saved_data["reduction"].toInt()));
    return out;
  }
};

class CtcBackwardFunction : public torch::autograd::Function<CtcBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& grad,
                            const at::Tensor& log_probs, const at::Tensor& targets,
                            const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                            const at::Tensor& nll, const at::Tensor& log_alpha,
                            const at::Tensor& norms, int64_t blank, bool from_logits,
                            bool zero_infinity) {
    at::AutoDispatchBelowADInplaceOrView below;
    return backward_op().call(grad, log_probs, targets, input_lengths, target_lengths, nll,
                              log_alpha, norms, blank, from_logits, zero_infinity);
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list /*grads*/) {
    C10_THROW_ERROR(
        NotImplementedError,
        "fastcrnn.ctc_loss does not support double backward (a gradient of its gradient); "
        "use torch.nn.functional.ctc_loss for that");
  }
};

CtcForwardOutputs ctc_loss_forward_autograd(const at::Tensor& log_probs, const at::Tensor& targets,
                                            const at::Tensor& input_lengths,
                                            const at::Tensor& target_lengths, int64_t blank,
                                            bool from_logits, bool zero_infinity, bool validate) {
  if (!records_grad({&log_probs})) {
    // no graph to record: skip the autograd node and the saved tensors
    at::AutoDispatchBelowADInplaceOrView below;
    return forward_op().call(log_probs, targets, input_lengths, target_lengths, blank, from_logits,
                             zero_infinity, validate);
  }
  variable_list out = CtcForwardFunction::apply(log_probs, targets, input_lengths, target_lengths,
                                                blank, from_logits, zero_infinity, validate);
  return {out[0], out[1], out[2]};
}

at::Tensor ctc_loss_backward_autograd(const at::Tensor& grad, const at::Tensor& log_probs,
                                      const at::Tensor& targets, const at::Tensor& input_lengths,
                                      const at::Tensor& target_lengths, const at::Tensor& nll,
                                      const at::Tensor& log_alpha, const at::Tensor& norms,
                                      int64_t blank, bool from_logits, bool zero_infinity) {
  if (!records_grad({&grad, &log_probs, &nll, &log_alpha, &norms})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return backward_op().call(grad, log_probs, targets, input_lengths, target_lengths, nll,
                              log_alpha, norms, blank, from_logits, zero_infinity);
  }
  return CtcBackwardFunction::apply(grad, log_probs, targets, input_lengths, target_lengths, nll,
                                    log_alpha, norms, blank, from_logits, zero_infinity);
}

// The whole loss in one dispatcher call.
at::Tensor ctc_loss_composite(const at::Tensor& log_probs, const at::Tensor& targets,
                              const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                              int64_t blank, int64_t reduction, bool zero_infinity,
                              bool from_logits, bool validate) {
  TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2,
                    "reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  if (records_grad({&log_probs})) {
    return CtcLossFunction::apply(log_probs, targets, input_lengths, target_lengths, blank,
                                  reduction, zero_infinity, from_logits, validate);
  }
  at::Tensor nll = std::get<0>(forward_op().call(log_probs, targets, input_lengths, target_lengths,
                                                 blank, from_logits, zero_infinity, validate));
  return reduce_losses(nll, target_lengths, reduction, zero_infinity);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, Autograd, m) {
  m.impl("ctc_loss_forward", &ctc_loss_forward_autograd);
  m.impl("ctc_loss_backward", &ctc_loss_backward_autograd);
}

TORCH_LIBRARY_IMPL(fastcrnn, CompositeImplicitAutograd, m) {
  m.impl("ctc_loss", &ctc_loss_composite);
}

}  // namespace fastcrnn::ops
