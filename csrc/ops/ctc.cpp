#include "ops/ctc.h"

#include <torch/library.h>

#include <algorithm>
#include <string>

#include "ops/buffer_cache.h"
#include "ops/common.h"

namespace fastcrnn::ops {

int64_t ctc_workspace_width(int64_t T, int64_t longest) {
  return 2 * std::min(std::max<int64_t>(longest, 0), T) + 1;
}

int64_t check_ctc_values(const at::Tensor& input_lengths, const at::Tensor& targets,
                         const at::Tensor& target_lengths, int64_t T, int64_t C, int64_t blank) {
  const bool padded = targets.dim() == 2;
  const int64_t bound = padded ? targets.size(1) : targets.numel();
  if (input_lengths.numel() == 0) return 0;
  const at::Tensor& il = input_lengths;
  const at::Tensor& tl = target_lengths;
  // bit 0: an input length outside [0, T]; bit 1: a target length outside [0, bound];
  // bit 2: concatenated targets shorter than the sum of the lengths; bit 3: a used target value
  // outside [0, C) or equal to blank. Everything stays on the device until the one copy below.
  at::Tensor flags = il.lt(0).logical_or_(il.gt(T)).any().to(at::kLong);
  flags.add_(tl.lt(0).logical_or_(tl.gt(bound)).any().to(at::kLong), 2);
  at::Tensor total;
  if (!padded) {
    total = tl.sum();
    flags.add_(total.gt(bound).to(at::kLong), 4);
  }
  if (targets.numel() > 0) {
    const at::Tensor pos = at::arange(bound, tl.options());
    const at::Tensor used = padded ? pos.unsqueeze(0).lt(tl.unsqueeze(1)) : pos.lt(total);
    const at::Tensor wrong =
        targets.lt(0).logical_or_(targets.ge(C)).logical_or_(targets.eq(blank));
    flags.add_(wrong.logical_and_(used).any().to(at::kLong), 8);
  }
  // the one host synchronisation of a validated call
  const at::Tensor summary = at::stack({flags, tl.max()}).to(at::kCPU);
  const int64_t bits = summary[0].item<int64_t>();
  TORCH_CHECK_VALUE(!(bits & 1), "input_lengths must lie in [0, T=", T, "]");
  if (padded) {
    TORCH_CHECK_VALUE(!(bits & 2), "target_lengths must lie in [0, S=", bound,
                      "] (S: the padded targets' width)");
  } else {
    TORCH_CHECK_VALUE(!(bits & 2), "target_lengths must lie in [0, len(targets)=", bound, "]");
    TORCH_CHECK_VALUE(!(bits & 4), "concatenated targets hold ", bound,
                      " labels, fewer than the sum of target_lengths");
  }
  TORCH_CHECK_VALUE(!(bits & 8), "targets must lie in [0, C=", C, ") and differ from blank=", blank,
                    " (fastcrnn rejects what torch.nn.functional.ctc_loss silently mis-computes)");
  return summary[1].item<int64_t>();
}

int64_t prepare_ctc(const at::Tensor& log_probs, const at::Tensor& targets,
                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                    int64_t blank, bool from_logits, bool validate, CtcParams& p,
                    std::vector<at::Tensor>& keep) {
  const char* name = from_logits ? "logits" : "log_probs";
  TORCH_CHECK_VALUE(log_probs.dim() == 3, name, " must have shape (T, N, C), got ",
                    log_probs.sizes());
  p.dtype = kernel_dtype(log_probs, name);
  TORCH_CHECK_TYPE(!log_probs.is_cpu() || p.dtype == Dtype::kFloat32 || p.dtype == Dtype::kFloat64,
                   name, " on the CPU must be float32 or float64, got ", log_probs.scalar_type());
  p.T = log_probs.size(0);
  p.N = log_probs.size(1);
  p.C = log_probs.size(2);
  TORCH_CHECK_VALUE(p.C > 0, name, " must have at least one class (C > 0)");
  TORCH_CHECK_VALUE(blank >= 0 && blank < p.C, "blank must be in [0, ", p.C, "), got ", blank);
  TORCH_CHECK_VALUE(p.T < (int64_t(1) << 30) && p.C < (int64_t(1) << 31), name,
                    ": T must be below 2^30 and C below 2^31");
  const at::Device device = log_probs.device();
  at::Tensor scores = log_probs.stride(2) == 1 || p.C == 1 ? log_probs : log_probs.contiguous();

  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong || targets.scalar_type() == at::kInt,
                   "targets must be an int32 or int64 tensor, got ", targets.scalar_type());
  TORCH_CHECK_VALUE(targets.dim() == 1 || targets.dim() == 2,
                    "targets must be (N, S) padded or 1-D concatenated, got shape ",
                    targets.sizes());
  TORCH_CHECK_VALUE(targets.device() == device, "targets must be on ", device, ", got ",
                    targets.device());
  const bool padded = targets.dim() == 2;
  if (padded) {
    TORCH_CHECK_VALUE(targets.size(0) == p.N, "targets must have one row per batch element (", p.N,
                      "), got ", targets.size(0));
  }
  at::Tensor in_len = checked_lengths(input_lengths, p.N, device, "input_lengths");
  at::Tensor tgt_len = checked_lengths(target_lengths, p.N, device, "target_lengths");
  at::Tensor tgt = targets.to(at::kLong).contiguous();
  const int64_t bound = padded ? tgt.size(1) : tgt.numel();
  int64_t longest = -1;  // the longest target length, where the host knows it
  at::Tensor offsets;
  if (log_probs.is_cpu()) {
    // free on the CPU: plain loops over the (small) lengths and targets, which also fill the
    // offsets (tensor ops here would cost more than the kernels of a small batch)
    offsets = at::empty({p.N}, tgt_len.options());
    int64_t* offs = offsets.data_ptr<int64_t>();
    const int64_t* il = in_len.data_ptr<int64_t>();
    const int64_t* tl = tgt_len.data_ptr<int64_t>();
    const int64_t* lab = tgt.data_ptr<int64_t>();
    int64_t total = 0;
    longest = 0;
    for (int64_t n = 0; n < p.N; ++n) {
      // torch's words ("to have value at most"), which its tests match
      TORCH_CHECK_VALUE(il[n] >= 0 && il[n] <= p.T, "Expected input_lengths to have value ",
                        il[n] < 0 ? "at least 0" : "at most T=",
                        il[n] < 0 ? "" : std::to_string(p.T), ", but got value ", il[n],
                        " at index ", n, " (input_lengths must lie in [0, T=", p.T, "])");
      TORCH_CHECK_VALUE(tl[n] >= 0 && tl[n] <= bound, "Expected target_lengths to have value ",
                        tl[n] < 0 ? "at least 0" : "at most ",
                        tl[n] < 0 ? "" : std::to_string(bound), ", but got value ", tl[n],
                        " at index ", n, " (target_lengths must lie in [0, ",
                        padded ? "S=" : "len(targets)=", bound, "])");
      const int64_t off = padded ? n * bound : total;
      offs[n] = off;
      total += tl[n];
      longest = std::max(longest, tl[n]);
      TORCH_CHECK_VALUE(padded || total <= bound, "concatenated targets hold ", bound,
                        " labels, fewer than the sum of target_lengths");
      for (int64_t i = 0; i < tl[n]; ++i) {
        const int64_t c = lab[off + i];
        TORCH_CHECK_VALUE(c >= 0 && c < p.C && c != blank, "targets must lie in [0, C=", p.C,
                          ") and differ from blank=", blank, ", got ", c, " for batch element ", n,
                          " (fastcrnn rejects what torch.nn.functional.ctc_loss silently "
                          "mis-computes)");
      }
    }
  } else {
    offsets = padded ? at::arange(p.N, tgt_len.options()).mul_(bound)
                     : at::cumsum(tgt_len, 0).sub_(tgt_len);
    if (validate) longest = check_ctc_values(in_len, tgt, tgt_len, p.T, p.C, blank);
  }
  keep = {scores, tgt, in_len, tgt_len, offsets};
  p.scores = scores.data_ptr();
  p.stride_t = scores.stride(0);
  p.stride_n = scores.stride(1);
  p.from_logits = from_logits;
  p.blank = blank;
  p.targets = tgt.data_ptr<int64_t>();
  p.targets_numel = tgt.numel();
  p.target_offsets = offsets.data_ptr<int64_t>();
  p.input_lengths = in_len.data_ptr<int64_t>();
  p.target_lengths = tgt_len.data_ptr<int64_t>();
  p.max_target_length = bound;
  // Sized from the longest target when validated: with 1-D targets the static bound is
  // len(targets), the sum of all lengths, which alone would give every sample up to 2T + 1
  // states. Unvalidated calls keep the static width, which the fake kernel can compute.
  p.W = ctc_workspace_width(p.T, validate && longest >= 0 ? longest : bound);
  return longest;
}

static at::ScalarType acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

CtcForwardOutputs allocate_ctc_forward(const at::Tensor& log_probs, CtcParams& p) {
  const auto opts = log_probs.options().dtype(acc_type(log_probs));
  at::Tensor nll = at::empty({p.N}, opts);
  at::Tensor log_alpha = empty_cached({p.N, p.T, p.W}, opts);
  at::Tensor norms = p.from_logits ? at::empty({p.T, p.N}, opts) : at::empty({0}, opts);
  p.nll = nll.data_ptr();
  p.log_alpha = log_alpha.data_ptr();
  p.norms = p.from_logits ? norms.data_ptr() : nullptr;
  return {nll, log_alpha, norms};
}

at::Tensor prepare_ctc_backward(const at::Tensor& grad_nll, const at::Tensor& log_probs,
                                const at::Tensor& nll, const at::Tensor& log_alpha,
                                const at::Tensor& norms, bool zero_infinity, int64_t longest,
                                CtcParams& p, std::vector<at::Tensor>& keep) {
  const auto acc = acc_type(log_probs);
  const auto check = [&](const at::Tensor& t, at::IntArrayRef shape, const char* arg) {
    TORCH_CHECK_VALUE(t.sizes() == shape, arg, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK_VALUE(t.device() == log_probs.device(), arg, " must be on ", log_probs.device());
  };
  check(grad_nll, {p.N}, "grad");
  check(nll, {p.N}, "nll");
  // the forward's width: sized from the longest target when it validated, else the static bound
  const int64_t W = log_alpha.dim() == 3 ? log_alpha.size(2) : -1;
  const int64_t min_width = longest >= 0 ? ctc_workspace_width(p.T, longest) : 1;
  TORCH_CHECK_VALUE(W % 2 == 1 && W >= min_width && W <= p.W, "log_alpha must have shape (N=", p.N,
                    ", T=", p.T, ", W) with W odd in [", min_width, ", ", p.W,
                    "] (the forward's output), got ", log_alpha.sizes());
  p.W = W;
  check(log_alpha, {p.N, p.T, p.W}, "log_alpha");
  if (p.from_logits) check(norms, {p.T, p.N}, "norms");
  TORCH_CHECK_TYPE(nll.scalar_type() == acc && log_alpha.scalar_type() == acc &&
                       (!p.from_logits || norms.scalar_type() == acc),
                   "saved CTC tensors must be ", acc);
  at::Tensor g = grad_nll.to(acc).contiguous();
  at::Tensor nll_c = nll.contiguous(), alpha_c = log_alpha.contiguous(),
             norms_c = norms.contiguous();
  // CUDA keeps log_beta here; the CPU backward needs no (N, T, W) workspace
  at::Tensor gamma = log_probs.is_cuda()
                         ? at::empty({p.N, p.T, p.W}, log_alpha.options().dtype(acc))
                         : at::Tensor();
  at::Tensor grad = empty_cached({p.T, p.N, p.C}, log_probs.options());
  keep.insert(keep.end(), {g, nll_c, alpha_c, norms_c, gamma});
  p.grad_nll = g.data_ptr();
  p.nll = nll_c.data_ptr();
  p.log_alpha = alpha_c.data_ptr();
  p.norms = p.from_logits ? norms_c.data_ptr() : nullptr;
  p.gamma = gamma.defined() ? gamma.data_ptr() : nullptr;
  p.grad = grad.data_ptr();
  p.zero_infinity = zero_infinity;
  return grad;
}

namespace {

void forward_cpu(const CtcParams& p) { FASTCRNN_CPU_DISPATCH(ctc_loss_forward_cpu, p); }
void backward_cpu(const CtcParams& p) { FASTCRNN_CPU_DISPATCH(ctc_loss_backward_cpu, p); }

CtcForwardOutputs ctc_loss_forward_cpu_op(const at::Tensor& log_probs, const at::Tensor& targets,
                                          const at::Tensor& input_lengths,
                                          const at::Tensor& target_lengths, int64_t blank,
                                          bool from_logits, bool /*zero_infinity: backward*/,
                                          bool validate) {
  CtcParams p;
  std::vector<at::Tensor> keep;
  prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank, from_logits, validate, p,
              keep);
  CtcForwardOutputs out = allocate_ctc_forward(log_probs, p);
  forward_cpu(p);
  return out;
}

at::Tensor ctc_loss_backward_cpu_op(const at::Tensor& grad_nll, const at::Tensor& log_probs,
                                    const at::Tensor& targets, const at::Tensor& input_lengths,
                                    const at::Tensor& target_lengths, const at::Tensor& nll,
                                    const at::Tensor& log_alpha, const at::Tensor& norms,
                                    int64_t blank, bool from_logits, bool zero_infinity) {
  CtcParams p;
  std::vector<at::Tensor> keep;
  const int64_t longest = prepare_ctc(log_probs, targets, input_lengths, target_lengths, blank,
                                      from_logits, false, p, keep);
  at::Tensor grad = prepare_ctc_backward(grad_nll, log_probs, nll, log_alpha, norms, zero_infinity,
                                         longest, p, keep);
  backward_cpu(p);
  return grad;
}

// torch.ops.fastcrnn._ctc_check_values: check_ctc_values on any device, for the tests.
int64_t ctc_check_values_op(const at::Tensor& input_lengths, const at::Tensor& targets,
                            const at::Tensor& target_lengths, int64_t T, int64_t C, int64_t blank) {
  TORCH_CHECK_VALUE(input_lengths.dim() == 1, "input_lengths must be 1-D, got shape ",
                    input_lengths.sizes());
  const int64_t N = input_lengths.size(0);
  TORCH_CHECK_VALUE(targets.dim() == 1 || (targets.dim() == 2 && targets.size(0) == N),
                    "targets must be (N, S) padded or 1-D concatenated, got shape ",
                    targets.sizes());
  const at::Device device = input_lengths.device();
  TORCH_CHECK_VALUE(targets.device() == device, "targets must be on ", device);
  return check_ctc_values(checked_lengths(input_lengths, N, device, "input_lengths"),
                          targets.to(at::kLong).contiguous(),
                          checked_lengths(target_lengths, N, device, "target_lengths"), T, C,
                          blank);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcrnn, CompositeExplicitAutograd, m) {
  m.impl("_ctc_check_values", &ctc_check_values_op);
}

TORCH_LIBRARY_IMPL(fastcrnn, CPU, m) {
  m.impl("ctc_loss_forward", &ctc_loss_forward_cpu_op);
  m.impl("ctc_loss_backward", &ctc_loss_backward_cpu_op);
}

}  // namespace fastcrnn::ops
