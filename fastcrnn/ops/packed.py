"""Products with a weight packed once, for CPU inference, over torch.ops.fastcrnn.
pack_linear_weight / linear_packed / lstm_layer_packed.

A weight that serves many calls (a frozen model's Linear and LSTM layers) is packed once into
the layout of our product kernel (csrc/kernels/gemm.h: column panels of 128 bytes), so that a
call reads it as one stream and packs nothing. A packed weight is a copy: it does not follow
later changes to the weight it was made from. CPU, float32 / float64, forward only (no
autograd).
"""

from typing import NamedTuple, Optional, Tuple

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import require_cpu, require_tensor

__all__ = [
    "PackedLinearWeight",
    "PackedLstmWeights",
    "linear_packed",
    "lstm_layer_packed",
    "pack_linear_weight",
    "pack_lstm_weights",
]


def panel(dtype: torch.dtype) -> int:
    """Output columns per panel of a packed weight: 128 bytes (csrc/kernels/gemm.h)."""
    return 128 // dtype.itemsize


def no_grad_inputs(family: str, *tensors: Optional[torch.Tensor]) -> None:
    """Raises RuntimeError when autograd would need a backward that these inference ops lack."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"the {family} ops are inference ops without a backward: call it under "
            "torch.no_grad() / torch.inference_mode(), or detach its inputs"
        )


class PackedLinearWeight(NamedTuple):
    """A (out_features, in_features) weight packed for :func:`linear_packed`.

    packed: (1, ceil(out_features / P), in_features, P), P = 32 for float32, 16 for float64.
    out_features: the padding to a multiple of P hides it from the tensor's shape.
    """

    packed: torch.Tensor
    out_features: int


class PackedLstmWeights(NamedTuple):
    """An LSTM layer's weights packed for :func:`lstm_layer_packed` (D directions, H units).

    weight_ih: (1, ceil(D * 4H / P), input_size, P), from weight_ih (D * 4H, input_size).
    weight_hh: (D, ceil(4H / P), H, P), from weight_hh (D, 4H, H).
    """

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor


@torch.library.register_fake("fastcrnn::pack_linear_weight")
def _pack_linear_weight_fake(weight):
    w = weight if weight.dim() == 3 else weight.unsqueeze(0)
    P = panel(weight.dtype)
    return weight.new_empty((w.shape[0], (w.shape[1] + P - 1) // P, w.shape[2], P))


@torch.library.register_fake("fastcrnn::linear_packed")
def _linear_packed_fake(input, weight, out_features, bias):
    return input.new_empty((input.shape[0], out_features))


@torch.library.register_fake("fastcrnn::lstm_layer_packed")
def _lstm_layer_packed_fake(input, h0, c0, weight_ih, weight_hh, bias):
    T, N, _ = input.shape
    D, _, H = h0.shape
    return input.new_empty((T, N, D * H)), h0.new_empty(h0.shape), c0.new_empty(c0.shape)


def pack_linear_weight(weight: torch.Tensor) -> PackedLinearWeight:
    """Packs a Linear layer's weight (out_features, in_features), float32 / float64, CPU."""
    require_tensor(weight, "weight")
    require_cpu(weight, "weight")
    no_grad_inputs("fastcrnn.ops.packed", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (out_features, in_features), got {weight.shape}")
    return PackedLinearWeight(torch.ops.fastcrnn.pack_linear_weight(weight), int(weight.shape[0]))


def linear_packed(
    input: torch.Tensor, weight: PackedLinearWeight, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``input @ W.T + bias`` (``F.linear``) with W packed by :func:`pack_linear_weight`.

    input: (M, in_features), float32 / float64 CPU, of the weight's dtype; bias:
    (out_features,) or None. Returns (M, out_features).
    """
    require_tensor(input, "input")
    if not isinstance(weight, PackedLinearWeight):
        raise TypeError(
            f"weight must be a PackedLinearWeight (pack_linear_weight), got {type(weight).__name__}"
        )
    no_grad_inputs("fastcrnn.ops.packed", input, bias)
    return torch.ops.fastcrnn.linear_packed(input, weight.packed, weight.out_features, bias)


def pack_lstm_weights(weight_ih: torch.Tensor, weight_hh: torch.Tensor) -> PackedLstmWeights:
    """Packs one LSTM layer's weights: weight_ih (D * 4H, input_size), both directions' rows
    stacked, and weight_hh (D, 4H, H) (:func:`fastcrnn.ops.lstm_layer`'s layout), D in {1, 2}."""
    for t, name in ((weight_ih, "weight_ih"), (weight_hh, "weight_hh")):
        require_tensor(t, name)
        require_cpu(t, name)
    no_grad_inputs("fastcrnn.ops.packed", weight_ih, weight_hh)
    if weight_hh.dim() != 3 or weight_hh.shape[0] not in (1, 2) or weight_hh.shape[2] < 1:
        raise ValueError(
            f"weight_hh must have shape (D, 4H, H), D in {{1, 2}}, got {weight_hh.shape}"
        )
    D, G, H = weight_hh.shape
    if G != 4 * H:
        raise ValueError(f"weight_hh must have shape (D, 4H, H), got {tuple(weight_hh.shape)}")
    if weight_ih.dim() != 2 or weight_ih.shape[0] != D * G:
        raise ValueError(
            f"weight_ih must have shape ({D * G}, input_size), got {tuple(weight_ih.shape)}"
        )
    if weight_ih.dtype != weight_hh.dtype:
        raise TypeError(
            f"weight_ih and weight_hh differ in dtype: {weight_ih.dtype}, {weight_hh.dtype}"
        )
    return PackedLstmWeights(
        torch.ops.fastcrnn.pack_linear_weight(weight_ih),
        torch.ops.fastcrnn.pack_linear_weight(weight_hh),
    )


def lstm_layer_packed(
    input: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weights: PackedLstmWeights,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer (one or both directions) on weights packed by :func:`pack_lstm_weights`:
    :func:`fastcrnn.ops.lstm_layer` without lengths or autograd.

    input (T, N, input_size), h0 and c0 (D, N, H), bias (D * 4H,) (bias_ih + bias_hh) or None;
    float32 / float64 CPU. Returns output (T, N, D * H), h_n and c_n (D, N, H).
    """
    for t, name in ((input, "input"), (h0, "h0"), (c0, "c0")):
        require_tensor(t, name)
    if not isinstance(weights, PackedLstmWeights):
        raise TypeError(
            f"weights must be PackedLstmWeights (pack_lstm_weights), got {type(weights).__name__}"
        )
    no_grad_inputs("fastcrnn.ops.packed", input, h0, c0, bias)
    return torch.ops.fastcrnn.lstm_layer_packed(
        input, h0, c0, weights.weight_ih, weights.weight_hh, bias
    )
