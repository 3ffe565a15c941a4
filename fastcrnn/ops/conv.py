"""Winograd F(2x2, 3x3) convolution for inference, over torch.ops.fastcrnn.winograd_conv3x3.

A 3x3, stride-1, padding-1 convolution with a per-channel epilogue (folded BatchNorm / bias and
ReLU or LeakyReLU) in one call: ``act(scale * conv2d(input, weight) + shift)``. It does 16
instead of 36 multiplies per output pair and channel pair (see csrc/kernels/conv.h), so the
CRNN's convolutions run faster than through oneDNN's direct method. CPU, float32 / float64,
forward only (no autograd: it serves eval-mode inference).
"""

from typing import Optional

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import require_tensor

__all__ = ["winograd_conv3x3", "winograd_weight"]


@torch.library.register_fake("fastcrnn::winograd_weight")
def _winograd_weight_fake(weight):
    return weight.new_empty((16, weight.shape[0], weight.shape[1]))


@torch.library.register_fake("fastcrnn::winograd_conv3x3")
def _winograd_conv3x3_fake(input, weight, scale, shift, negative_slope):
    N, _, H, W = input.shape
    K = weight.shape[1] if weight.dim() == 3 else weight.shape[0]
    return input.new_empty((N, K, H, W)).contiguous(memory_format=torch.channels_last)


def _no_grad_inputs(*tensors: Optional[torch.Tensor]) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            "winograd_conv3x3 is an inference op without a backward: call it under "
            "torch.no_grad() / torch.inference_mode(), or detach its inputs"
        )


def _cpu(t: torch.Tensor, name: str) -> None:
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor, got {t.device}")


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """A convolution weight in the Winograd domain: (K, C, 3, 3) -> (16, K, C).

    Pass the result as ``weight`` to :func:`winograd_conv3x3` to convolve many inputs with
    the same weight without transforming it each time. It is a copy: it does not follow later
    changes to ``weight``.
    """
    require_tensor(weight, "weight")
    _cpu(weight, "weight")
    _no_grad_inputs(weight)
    return torch.ops.fastcrnn.winograd_weight(weight)


def winograd_conv3x3(
    input: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    shift: Optional[torch.Tensor] = None,
    negative_slope: Optional[float] = None,
) -> torch.Tensor:
    """``act(scale * conv2d(input, weight, padding=1) + shift)`` by Winograd F(2x2, 3x3).

    Args:
        input: (N, C, H, W) float32 or float64, CPU, any memory format (channels-last avoids a
            copy).
        weight: (K, C, 3, 3), or its transform (16, K, C) from :func:`winograd_weight`; the
            dtype of ``input``.
        scale, shift: (K,) per output channel, or None (1 and 0). A conv bias and an eval-mode
            BatchNorm fold into them: scale = gamma / sqrt(var + eps),
            shift = (bias - mean) * scale + beta.
        negative_slope: None for no activation, 0.0 for ReLU, else LeakyReLU's slope.

    Returns (N, K, H, W) in channels-last memory format. Equal to ``torch.nn.functional.conv2d``
    up to float rounding (the transforms add a few ulps).
    """
    require_tensor(input, "input")
    require_tensor(weight, "weight")
    for name, t in (("input", input), ("weight", weight), ("scale", scale), ("shift", shift)):
        if t is not None:
            require_tensor(t, name)
            _cpu(t, name)
    _no_grad_inputs(input, weight, scale, shift)
    if negative_slope is not None:
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise TypeError(
                f"negative_slope must be a float or None, got {type(negative_slope).__name__}"
            )
        negative_slope = float(negative_slope)
    return torch.ops.fastcrnn.winograd_conv3x3(input, weight, scale, shift, negative_slope)
