"""Fused LSTM ops over torch.ops.fastcrnn.lstm_layer / lstm_cell: fake kernels, autograd, checks.

``lstm_layer`` runs one layer over a whole sequence, one direction or both in one call;
``lstm_cell`` runs one step. Both match nn.LSTM / nn.LSTMCell (gates i, f, g, o).
The multi-layer / bidirectional / PackedSequence module lives in fastcrnn.nn.lstm.
"""

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from fastcrnn import reference
from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import ArgumentValueError, require_tensor, skip_value_checks

__all__ = ["lstm_layer", "lstm_cell"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# fake (meta) kernels: shapes for torch.compile
# ---------------------------------------------------------------------------------------------


@torch.library.register_fake("fastcrnn::lstm_layer")
def _lstm_layer_fake(input, h0, c0, weight_ih, weight_hh, bias, lengths, save_for_backward=True):
    T, N, _ = input.shape
    D, _, H = weight_hh.shape
    if not save_for_backward:
        return (
            input.new_empty((T, N, D * H)),
            input.new_empty((D, N, H)),
            input.new_empty((D, N, H)),
            input.new_empty((0,)),
            input.new_empty((0,)),
            input.new_empty((0,), dtype=_acc_dtype(input.dtype)),
        )
    return (
        input.new_empty((T, N, D * H)),
        input.new_empty((D, N, H)),
        input.new_empty((D, N, H)),
        input.new_empty((T, N, D * 4 * H)),
        input.new_empty((D, T + 1, N, H)),
        input.new_empty((D, T + 1, N, H), dtype=_acc_dtype(input.dtype)),
    )


@torch.library.register_fake("fastcrnn::lstm_layer_backward")
def _lstm_layer_backward_fake(
    grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, lengths, acts, hs, cs
):
    D = weight_hh.shape[0]
    return (
        input.new_empty(input.shape),
        grad_h_n.new_empty(grad_h_n.shape, dtype=input.dtype),
        grad_c_n.new_empty(grad_c_n.shape, dtype=input.dtype),
        input.new_empty(weight_ih.shape),
        input.new_empty(weight_hh.shape),
        input.new_empty((D * weight_hh.shape[1],)),
    )


@torch.library.register_fake("fastcrnn::lstm_cell")
def _lstm_cell_fake(input, hx, cx, weight_ih, weight_hh, bias):
    N = input.shape[0]
    H = weight_hh.shape[1]
    return input.new_empty((N, H)), input.new_empty((N, H)), input.new_empty((N, 4 * H))


@torch.library.register_fake("fastcrnn::lstm_cell_backward")
def _lstm_cell_backward_fake(grad_h, grad_c, input, hx, cx, weight_ih, weight_hh, acts):
    return (
        input.new_empty(input.shape),
        input.new_empty(hx.shape),
        input.new_empty(cx.shape),
        input.new_empty(weight_ih.shape),
        input.new_empty(weight_hh.shape),
        input.new_empty((weight_hh.shape[0],)),
    )


# ---------------------------------------------------------------------------------------------
# autograd
# ---------------------------------------------------------------------------------------------


def _layer_setup_context(ctx, inputs, output):
    input, h0, c0, weight_ih, weight_hh, bias, lengths = inputs[:7]
    _, _, _, acts, hs, cs = output
    ctx.saved_states = len(inputs) < 8 or bool(inputs[7])
    # h0, c0 and bias only for a double backward, which recomputes the layer
    ctx.save_for_backward(input, weight_ih, weight_hh, lengths, acts, hs, cs, h0, c0, bias)
    # acts / hs / cs never get a gradient: without this, autograd would fill three zero tensors
    # as large as the saved state on every backward
    ctx.set_materialize_grads(False)


def _differentiable_layer_backward(ctx, grads, input, h0, c0, weight_ih, weight_hh, bias, lengths):
    """The layer's gradients as a graph, for create_graph=True (a gradient of the gradient): the
    layer recomputed step by step with the reference's differentiable cell, then differentiated
    by autograd. The fused backward kernel has no derivative of its own."""
    D, _, H = weight_hh.shape
    outs, h_n, c_n = [], [], []
    with torch.enable_grad():
        for d in range(D):
            gates = slice(d * 4 * H, (d + 1) * 4 * H)
            weights = (weight_ih[gates], weight_hh[d], None if bias is None else bias[gates], None)
            out, (h, c) = reference.recurrent_layer(
                reference.lstm_cell, input, (h0[d], c0[d]), weights, lengths, reverse=d == 1
            )
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        results = (torch.cat(outs, -1), torch.stack(h_n), torch.stack(c_n))
    wrt = (input, h0, c0, weight_ih, weight_hh, bias)
    wanted = [k for k, t in enumerate(wrt) if t is not None and ctx.needs_input_grad[k]]
    found = torch.autograd.grad(
        results,
        [wrt[k] for k in wanted],
        grads,
        create_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )
    answer: List[Optional[torch.Tensor]] = [None] * 8
    for k, g in zip(wanted, found):
        answer[k] = g
    return tuple(answer)


def _layer_backward(ctx, grad_output, grad_h_n, grad_c_n, _g_acts, _g_hs, _g_cs):
    if not ctx.saved_states:
        raise RuntimeError(
            "lstm_layer was called with save_for_backward=False: it kept no "
            "states to differentiate through"
        )
    input, weight_ih, weight_hh, lengths, acts, hs, cs, h0, c0, bias = ctx.saved_tensors
    T, N, _ = input.shape
    D, _, H = weight_hh.shape
    if grad_output is None:
        grad_output = input.new_zeros((T, N, D * H))
    if grad_h_n is None:
        grad_h_n = input.new_zeros((D, N, H))
    if grad_c_n is None:
        grad_c_n = input.new_zeros((D, N, H))
    if torch.is_grad_enabled():  # only under create_graph=True
        return _differentiable_layer_backward(
            ctx,
            (grad_output, grad_h_n, grad_c_n),
            input,
            h0,
            c0,
            weight_ih,
            weight_hh,
            bias,
            lengths,
        )
    dx, dh0, dc0, dw_ih, dw_hh, db = torch.ops.fastcrnn.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, lengths, acts, hs, cs
    )
    return dx, dh0, dc0, dw_ih, dw_hh, (db if bias is not None else None), None, None


torch.library.register_autograd(
    "fastcrnn::lstm_layer", _layer_backward, setup_context=_layer_setup_context
)


# The cell's autograd lives in C++ (csrc/ops/lstm_autograd.cpp): it runs once per decoder
# step, where the Python autograd's cost showed.


# ---------------------------------------------------------------------------------------------
# public wrappers
# ---------------------------------------------------------------------------------------------


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype an LSTM runs in under torch.autocast on `device`, or None when not autocasting."""
    dev = device.type
    if dev not in ("cpu", "cuda"):
        return None
    if not torch.is_autocast_enabled(dev):
        return None
    return torch.get_autocast_dtype(dev)


def _to_autocast(cast: Optional[torch.dtype], *tensors: Any) -> Tuple[Any, ...]:
    """The tensors in the autocast dtype (non-tensors, left for the checks to reject, as they
    are); unchanged when not autocasting."""
    if cast is None:
        return tensors
    return tuple(t.to(cast) if isinstance(t, torch.Tensor) else t for t in tensors)


def _call_op(op, cast: Optional[torch.dtype], device: torch.device, *args):
    """Calls the op with autocast off when the arguments were already cast for it: autocast
    would otherwise see our op's float16 inputs again."""
    if cast is None:
        return op(*args)
    with torch.autocast(device.type, enabled=False):
        return op(*args)


def _check_lengths_values(lengths: torch.Tensor, T: int, validate: bool) -> None:
    """CPU lengths are always checked by the op; CUDA ones here when validating: one reduction
    to one device flag, one host sync."""
    if lengths.is_cuda and validate and not skip_value_checks(lengths):
        if bool(((lengths < 0) | (lengths > T)).any()):
            raise ArgumentValueError(f"lengths must lie in [0, T={T}]")


WeightArg = Union[torch.Tensor, Sequence[torch.Tensor]]


def lstm_layer(
    input: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weight_ih: WeightArg,
    weight_hh: WeightArg,
    bias: Optional[WeightArg] = None,
    lengths: Optional[torch.Tensor] = None,
    validate: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer over a whole sequence, one direction or both (D = 1 or 2) in one call.

    Args:
        input: (T, N, I) time-major, float32/float64 (CPU also float16/bfloat16; CUDA
            float32/float16/bfloat16/float64). Any strides.
        h0, c0: (D, N, H), the input's dtype and device.
        weight_ih: (D*4H, I) or a sequence of D (4H, I) tensors (forward, then reverse).
        weight_hh: (D, 4H, H) or a sequence of D (4H, H) tensors.
        bias: None, (D*4H,) or a sequence of D (4H,) tensors: the combined bias_ih + bias_hh.
        lengths: None or (N,) int32/int64 on the input's device: steps t >= lengths[n] leave
            sequence n's state unchanged and output zeros; the reverse direction starts at each
            sequence's own last valid step. Values must lie in [0, T] (checked for CPU tensors,
            and for CUDA tensors when ``validate`` outside torch.compile / graph capture, at
            one host synchronisation per call and none with ``validate=False``; an unchecked
            length < 0 acts as 0 and one > T as T). fastcrnn.nn.LSTM checks its lengths once
            per forward (in its first layer), so a multi-layer forward also syncs once.

    Returns (output (T, N, D*H), h_n (D, N, H), c_n (D, N, H)) in the input's dtype. Cell state
    and accumulation are float32 (float64 for float64 input). Under torch.autocast the layer runs
    in the autocast dtype. Differentiable in input, h0, c0, weights and bias.
    """
    # The op checks every tensor's shape, dtype and device (csrc/ops/lstm.cpp): one authority.
    require_tensor(input, "input")
    if not isinstance(weight_ih, torch.Tensor):
        weight_ih = torch.cat(list(weight_ih), 0)
    if not isinstance(weight_hh, torch.Tensor):
        weight_hh = torch.stack(list(weight_hh), 0)
    if bias is not None and not isinstance(bias, torch.Tensor):
        bias = torch.cat(list(bias), 0)
    cast = autocast_dtype(input.device)
    # the differentiable inputs, in the op's order (the weights and bias are single tensors
    # since the cat / stack above)
    tensors = _to_autocast(cast, input, h0, c0, weight_ih, weight_hh, bias)
    input = tensors[0]
    if isinstance(lengths, torch.Tensor) and input.dim() == 3:
        _check_lengths_values(lengths, input.shape[0], validate)
    # Without a backward to come the op keeps no per-step activations or state history.
    save = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors
    )
    out = _call_op(torch.ops.fastcrnn.lstm_layer, cast, input.device, *tensors, lengths, save)
    return out[0], out[1], out[2]


def lstm_cell(
    input: torch.Tensor,
    hx: torch.Tensor,
    cx: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One fused LSTM step, as nn.LSTMCell: returns (h', c'), each (N, H).

    input (N, I); hx, cx (N, H); weight_ih (4H, I); weight_hh (4H, H); bias None or (4H,) (the
    combined bias_ih + bias_hh). All one dtype and device (see :func:`lstm_layer` for dtypes);
    under torch.autocast the step runs in the autocast dtype.

    The gates come from two GEMMs (input and hx); ONE pointwise kernel applies the activations
    and the c/h update; backward is one pointwise kernel, then the GEMMs.
    """
    # The op checks every tensor's shape, dtype and device (csrc/ops/lstm.cpp): one authority.
    require_tensor(input, "input")
    cast = autocast_dtype(input.device)
    input, hx, cx, weight_ih, weight_hh, bias = _to_autocast(
        cast, input, hx, cx, weight_ih, weight_hh, bias
    )
    h, c, _ = _call_op(
        torch.ops.fastcrnn.lstm_cell, cast, input.device, input, hx, cx, weight_ih, weight_hh, bias
    )
    return h, c
