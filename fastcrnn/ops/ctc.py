"""CTC loss over torch.ops.fastcrnn.ctc_loss (one call: ctc_loss_forward, zero_infinity and the
reduction, with its autograd in C++; ctc_loss_backward computes the gradient).

Two public functions with the semantics of torch.nn.functional.ctc_loss:
:func:`ctc_loss` (from log-probabilities) and :func:`ctc_loss_from_logits` (the log_softmax fused
in: neither pass materialises log-probabilities, only one normaliser per frame).
"""

from typing import NamedTuple

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import (
    ArgumentValueError,
    LengthsLike,
    TensorTypeError,
    lengths_tensor,
    require_float,
    require_int,
    require_tensor,
    skip_value_checks,
)

_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction, as the op takes it


@torch.library.register_fake("fastcrnn::ctc_loss_forward")
def _ctc_forward_fake(
    log_probs, targets, input_lengths, target_lengths, blank, from_logits, zero_infinity, validate
):
    T, N, _ = log_probs.shape
    acc = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    if validate:
        # the op sizes log_alpha from the longest target (csrc/ops/ctc.cpp, ctc_workspace_width),
        # a value only the data holds. Traced calls (torch.compile, export) pass validate=False.
        W = torch.library.get_ctx().new_dynamic_size(min=1)
    else:
        bound = targets.shape[1] if targets.dim() == 2 else targets.numel()
        W = 2 * torch.sym_min(bound, T) + 1
    return (
        log_probs.new_empty((N,), dtype=acc),
        log_probs.new_empty((N, T, W), dtype=acc),
        log_probs.new_empty((T, N) if from_logits else (0,), dtype=acc),
    )


@torch.library.register_fake("fastcrnn::ctc_loss_backward")
def _ctc_backward_fake(
    grad,
    log_probs,
    targets,
    input_lengths,
    target_lengths,
    nll,
    log_alpha,
    norms,
    blank,
    from_logits,
    zero_infinity,
):
    return log_probs.new_empty(log_probs.shape, dtype=log_probs.dtype)


# Autograd of ctc_loss_forward / ctc_loss_backward (double backward raises) and the composite
# fastcrnn::ctc_loss (forward, zero_infinity, reduction) live in C++: csrc/ops/ctc_autograd.cpp.
_ctc_loss_op = torch.ops.fastcrnn.ctc_loss.default


class CtcInputs(NamedTuple):
    """The checked CTC arguments in the op's form."""

    scores: torch.Tensor  # (T, N, C) on the input's device
    targets: torch.Tensor  # (N, S) padded or 1-D concatenated, on the same device
    input_lengths: torch.Tensor  # (N,) int64
    target_lengths: torch.Tensor  # (N,) int64
    blank: int
    unbatched: bool  # the caller passed (T, C) and (S,)


def ctc_inputs(
    scores, targets, input_lengths, target_lengths, blank, name: str, full_length_default=False
) -> CtcInputs:
    """Checks the arguments every CTC op shares (the loss, forced alignment) and brings them to
    the op's form. Lengths are required unless `full_length_default`, which reads None as the
    whole input (T) and, for padded or unbatched targets, the whole target row."""
    require_tensor(scores, name)
    if not scores.is_floating_point():
        raise TensorTypeError(
            f"{name} must be float32, float64, float16 or bfloat16, got {scores.dtype}"
        )
    require_float(scores, name)
    given_shape = tuple(scores.shape)
    if scores.dim() not in (2, 3):
        raise ArgumentValueError(
            f"{name} must have shape (T, N, C) or unbatched (T, C), got {tuple(scores.shape)}"
        )
    blank = require_int(blank, "blank")
    require_tensor(targets, "targets")
    if targets.dtype not in (torch.int32, torch.int64):
        raise TensorTypeError(f"targets must be an int32 or int64 tensor, got {targets.dtype}")
    unbatched = scores.dim() == 2
    device = scores.device
    if unbatched:
        if targets.dim() != 1:
            raise ArgumentValueError(
                f"unbatched {name} (T, C) needs 1-D targets (S,), got shape {tuple(targets.shape)}"
            )
        scores = scores.unsqueeze(1)
        targets = targets.unsqueeze(0)
    elif targets.dim() not in (1, 2):
        raise ArgumentValueError(
            f"targets must be (N, S) padded or 1-D concatenated, got shape {tuple(targets.shape)}"
        )
    T, N, C = scores.shape
    if scores.numel() == 0:
        # as torch: an empty batch has no mean, and T = 0 has no alignment to score
        raise ArgumentValueError(f"{name} tensor must not be empty, got shape {given_shape}")
    if not 0 <= blank < C:
        raise ArgumentValueError(f"blank must be in label range [0, {C}), got {blank}")
    if targets.device != device:
        if targets.device.type == "cpu":
            targets = targets.to(device)
        else:
            raise ArgumentValueError(f"targets is on {targets.device} but {name} is on {device}")
    padded = targets.dim() == 2
    if padded and targets.shape[0] != N:
        raise ArgumentValueError(
            f"targets must have one row per batch element ({N}), got {targets.shape[0]}"
        )
    bound = targets.shape[1] if padded else targets.numel()
    if not full_length_default and (input_lengths is None or target_lengths is None):
        raise TypeError("input_lengths and target_lengths are required")
    if target_lengths is None and not padded:
        raise TypeError("target_lengths is required with 1-D concatenated targets")
    input_lengths = lengths_tensor(
        input_lengths, N, T, device, "input_lengths", unbatched=unbatched
    )
    given = target_lengths
    target_lengths = lengths_tensor(
        target_lengths, N, bound, device, "target_lengths", unbatched=unbatched
    )
    if isinstance(given, (list, tuple)) and not padded and sum(given) > bound:
        raise ArgumentValueError(
            f"concatenated targets hold {bound} labels, fewer than the sum of target_lengths"
        )
    return CtcInputs(scores, targets, input_lengths, target_lengths, blank, unbatched)


def call_checked(op, *args):
    """Calls a CTC op, turning its value-check ValueErrors (lengths within T and S, target
    classes) into ArgumentValueError: torch raises RuntimeError for bad lengths."""
    try:
        return op(*args)
    except ValueError as error:
        raise ArgumentValueError(str(error)) from None


def _ctc(
    scores, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, from_logits
):
    name = "logits" if from_logits else "log_probs"
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {tuple(_REDUCTIONS)}, got {reduction!r}")
    if not isinstance(zero_infinity, bool):
        raise TypeError(f"zero_infinity must be a bool, got {type(zero_infinity).__name__}")
    inputs = ctc_inputs(scores, targets, input_lengths, target_lengths, blank, name)
    scores = inputs.scores
    # compute in float32 like F.ctc_loss: under autocast, and for half / bfloat16 on the CPU
    low = scores.dtype in (torch.float16, torch.bfloat16)
    if low and (scores.device.type == "cpu" or torch.is_autocast_enabled(scores.device.type)):
        scores = scores.float()
    # CPU tensors are value-checked by the op (plain loops, free); CUDA ones when validating
    losses = call_checked(
        _ctc_loss_op,
        scores,
        inputs.targets,
        inputs.input_lengths,
        inputs.target_lengths,
        inputs.blank,
        _REDUCTIONS[reduction],
        zero_infinity,
        from_logits,
        not skip_value_checks(scores),
    )
    return losses[0] if inputs.unbatched and reduction == "none" else losses


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """Connectionist Temporal Classification loss: a drop-in for
    ``torch.nn.functional.ctc_loss`` (same arguments, values and gradient).

    Args:
        log_probs: (T, N, C) or unbatched (T, C) log-probabilities (normally a log_softmax
            output), float32 or float64 (float16 / bfloat16: computed in float32; on CUDA they are
            read directly). Any strides.
        targets: (N, S) padded or 1-D concatenated (sum(target_lengths),) class indices, int32 or
            int64 (unbatched: (S,)). A CPU tensor is accepted with CUDA log_probs.
        input_lengths: (N,) int32/int64 tensor, list or tuple of lengths in [0, T].
        target_lengths: (N,) int32/int64 tensor, list or tuple of lengths in [0, S].
        blank: the blank class, in [0, C).
        reduction: 'none' (per-sample losses, (N,)), 'sum', or 'mean' (each loss divided by its
            target length clamped to >= 1, then the mean over the batch).
        zero_infinity: an impossible alignment (loss +inf) gives loss 0 and zero gradient.

    Returns the loss in float32 (float64 for float64 input). Its gradient with respect to
    log_probs is torch's: ``exp(log_probs) - posterior`` on frames t < input_length, 0 beyond
    (exactly the logits gradient when a log_softmax sits upstream). An impossible alignment
    (target longer than its input) without zero_infinity gives loss inf and a NaN gradient in
    every class of its frames t < input_length, as torch's CPU kernel does (torch's CUDA kernel
    can leave finite values in that sample's non-target classes).

    Deviation from torch: a target value < 0, >= C or equal to blank raises ValueError (torch
    silently computes garbage). Value checks of CUDA tensors cost ONE host synchronisation per
    call (all checks fold into one device flag, fetched together with the longest target
    length; the backward adds none); lengths given as lists are checked on the host, though
    copying them to the GPU synchronises too. The checks are skipped, with no
    synchronisation, under torch.compile and CUDA-graph capture, where an invalid row gets a NaN
    loss and NaN gradient instead (never an out-of-bounds access). Memory: the (N, T, W)
    workspace has W = 2 * min(longest target, T) + 1 states per frame when validated (padded and
    concatenated targets alike); unvalidated, the static bound of the targets' shape sets it
    (the padded width, or len(targets) for 1-D targets). NaN in log_probs at a frame t <
    input_length gives that sample a NaN loss and gradient; NaN beyond input_length is ignored.
    Double backward raises NotImplementedError.
    """
    return _ctc(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank,
        reduction,
        zero_infinity,
        from_logits=False,
    )


def ctc_loss_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike,
    target_lengths: LengthsLike,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """CTC loss with the log_softmax fused in: equals
    ``F.ctc_loss(logits.log_softmax(-1), ...)`` in value and in gradient with respect to logits,
    without materialising the log-probabilities (only one log-sum-exp per frame is kept).

    Args are those of :func:`ctc_loss`, with ``logits`` (T, N, C) / (T, C) unnormalised scores.
    The gradient is ``softmax(logits) - posterior`` on frames t < input_length, 0 beyond.
    A frame whose logits hold NaN or +inf, or are all -inf, has NaN log-probabilities (as
    log_softmax), which gives its sample a NaN loss.
    """
    return _ctc(
        logits,
        targets,
        input_lengths,
        target_lengths,
        blank,
        reduction,
        zero_infinity,
        from_logits=True,
    )
