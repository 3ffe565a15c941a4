"""3x3 convolutions for inference, over torch.ops.fastcrnn.winograd_conv3x3 / conv3x3_direct.

A 3x3, stride-1, padding-1 convolution with a per-channel epilogue (folded BatchNorm / bias and
ReLU or LeakyReLU) in one call: ``act(scale * conv2d(input, weight) + shift)``.
:func:`winograd_conv3x3` does 16 instead of 36 multiplies per output pair and channel pair (see
csrc/kernels/conv.h), for the CRNN's wide layers; :func:`conv3x3_direct` is for inputs with few
channels (a grey image), with the 2x2 max-pool that follows fused in. CPU, float32 / float64,
forward only (no autograd: they serve eval-mode inference).
"""

from typing import NamedTuple, Optional, Union

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import require_cpu, require_tensor
from fastcrnn.ops.packed import no_grad_inputs, panel

__all__ = ["WinogradWeight", "conv3x3_direct", "winograd_conv3x3", "winograd_weight"]


class WinogradWeight(NamedTuple):
    """A 3x3 convolution weight prepared for :func:`winograd_conv3x3`.

    packed: (16, ceil(K / P), C, P): the 16 Winograd-domain matrices, each (C x K) in panels
        of P output channels (zero-padded) as the product kernel reads them; P = 32 for
        float32, 16 for float64.
    out_channels: K (the packing pads it to a multiple of P, so the tensor does not record it).
    """

    packed: torch.Tensor
    out_channels: int


@torch.library.register_fake("fastcrnn::winograd_weight")
def _winograd_weight_fake(weight):
    K, C = weight.shape[0], weight.shape[1]
    P = panel(weight.dtype)
    return weight.new_empty((16, (K + P - 1) // P, C, P))


@torch.library.register_fake("fastcrnn::winograd_conv3x3")
def _winograd_conv3x3_fake(input, weight, scale, shift, negative_slope, out_channels=None):
    N, _, H, W = input.shape
    K = out_channels if out_channels is not None else weight.shape[0]
    return input.new_empty((N, K, H, W)).contiguous(memory_format=torch.channels_last)


@torch.library.register_fake("fastcrnn::conv3x3_direct")
def _conv3x3_direct_fake(input, weight, scale, shift, negative_slope, max_pool):
    N, _, H, W = input.shape
    if max_pool:
        H, W = H // 2, W // 2
    out = input.new_empty((N, weight.shape[0], H, W))
    return out.contiguous(memory_format=torch.channels_last)


def winograd_weight(weight: torch.Tensor) -> WinogradWeight:
    """A convolution weight (K, C, 3, 3) in the Winograd domain, packed for the products.

    Pass the result as ``weight`` to :func:`winograd_conv3x3` to convolve many inputs with
    the same weight without transforming and packing it each time. It is a copy: it does not
    follow later changes to ``weight``.
    """
    require_tensor(weight, "weight")
    require_cpu(weight, "weight")
    no_grad_inputs("fastcrnn.ops.conv", weight)
    return WinogradWeight(torch.ops.fastcrnn.winograd_weight(weight), int(weight.shape[0]))


def winograd_conv3x3(
    input: torch.Tensor,
    weight: Union[torch.Tensor, WinogradWeight],
    scale: Optional[torch.Tensor] = None,
    shift: Optional[torch.Tensor] = None,
    negative_slope: Optional[float] = None,
) -> torch.Tensor:
    """``act(scale * conv2d(input, weight, padding=1) + shift)`` by Winograd F(2x2, 3x3).

    Args:
        input: (N, C, H, W) float32 or float64, CPU, any memory format (channels-last avoids a
            copy).
        weight: (K, C, 3, 3), or the :class:`WinogradWeight` that :func:`winograd_weight`
            made of it; the dtype of ``input``.
        scale, shift: (K,) per output channel, or None (1 and 0). A conv bias and an eval-mode
            BatchNorm fold into them: scale = gamma / sqrt(var + eps),
            shift = (bias - mean) * scale + beta.
        negative_slope: None for no activation, 0.0 for ReLU, else LeakyReLU's slope.

    Returns (N, K, H, W) in channels-last memory format. Equal to ``torch.nn.functional.conv2d``
    up to float rounding (the transforms add a few ulps).
    """
    out_channels = None
    if isinstance(weight, WinogradWeight):
        weight, out_channels = weight
    negative_slope = _check_conv_args(input, weight, scale, shift, negative_slope)
    return torch.ops.fastcrnn.winograd_conv3x3(
        input, weight, scale, shift, negative_slope, out_channels
    )


def conv3x3_direct(
    input: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    shift: Optional[torch.Tensor] = None,
    negative_slope: Optional[float] = None,
    max_pool: bool = False,
) -> torch.Tensor:
    """``act(scale * conv2d(input, weight, padding=1) + shift)``, then with ``max_pool`` a 2x2
    stride-2 max-pool (``F.max_pool2d(y, 2)``), computed directly per output pixel: for inputs
    with few channels (a CRNN's grey-image first layer), where Winograd or a GEMM has too little
    work per pixel.

    Args as :func:`winograd_conv3x3` (``weight`` only as (K, C, 3, 3)); ``max_pool`` (bool)
    fuses the pool, so only the pooled image is written (it needs H, W >= 2).

    Returns (N, K, H, W), or (N, K, H // 2, W // 2) with ``max_pool``, channels-last.
    """
    negative_slope = _check_conv_args(input, weight, scale, shift, negative_slope)
    if not isinstance(max_pool, bool):
        raise TypeError(f"max_pool must be a bool, got {type(max_pool).__name__}")
    return torch.ops.fastcrnn.conv3x3_direct(input, weight, scale, shift, negative_slope, max_pool)


def _check_conv_args(input, weight, scale, shift, negative_slope) -> Optional[float]:
    """The Python-side checks both ops share (the C++ op checks shapes and dtypes)."""
    for name, t in (("input", input), ("weight", weight), ("scale", scale), ("shift", shift)):
        if t is not None or name in ("input", "weight"):  # scale and shift may be None
            require_cpu(require_tensor(t, name), name)
    no_grad_inputs("fastcrnn.ops.conv", input, weight, scale, shift)
    if negative_slope is None:
        return None
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(
            f"negative_slope must be a float or None, got {type(negative_slope).__name__}"
        )
    return float(negative_slope)
