"""Argument checks shared by the Python op wrappers (the C++ ops re-check what they rely on)."""

from numbers import Integral
from typing import Optional, Sequence, Tuple, Union, cast

import torch

LengthsLike = Union[torch.Tensor, Sequence[int], int, None]


class DtypeMismatchError(TypeError, ValueError):
    """Tensors that must share a dtype do not. torch raises ValueError for this in some places
    and TypeError in others; this error is both, so either ``except`` catches it."""


def require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def require_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def require_like(t, name: str, shape: Tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    """`t` must be a tensor of `shape` with ref's dtype (DtypeMismatchError) and device
    (ValueError), as a recurrent state must match its input."""
    require_tensor(t, name)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype != ref.dtype:
        raise DtypeMismatchError(f"{name} must have the input's dtype {ref.dtype}, got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the input's device {ref.device}, got {t.device}")
    return t


def skip_value_checks(t: torch.Tensor) -> bool:
    """Value checks of CUDA tensors need a host sync: skipped when compiling or capturing."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def lengths_tensor(
    value: LengthsLike,
    count: int,
    limit: int,
    device: torch.device,
    name: str,
    unbatched: bool = False,
) -> torch.Tensor:
    """Returns lengths as a 1-D int64 tensor of `count` entries on `device`.

    None means `limit` for every entry. A list or tuple is checked against [0, limit] here (free);
    a tensor's values are checked by the op (always on CPU, on CUDA when validating).
    For unbatched calls a plain int, a 0-d tensor or a one-entry sequence is accepted.
    """
    if value is None:
        return torch.full((count,), limit, dtype=torch.int64, device=device)
    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be an int32 or int64 tensor, got {value.dtype}")
        if unbatched and value.dim() == 0:
            value = value.reshape(1)
        if value.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
        if value.numel() != count:
            raise ValueError(
                f"{name} must have {count} entries (one per batch element), got {value.numel()}"
            )
        if value.device != device:
            if value.device.type != "cpu":
                raise ValueError(f"{name} is on {value.device} but the input is on {device}")
            value = value.to(device)
        # an int64 tensor needs no .to(), which would still go through the dispatcher
        return value if value.dtype == torch.int64 else value.to(torch.int64)
    if unbatched and isinstance(value, Integral) and not isinstance(value, bool):
        value = [cast(int, value)]  # an Integral: checked by require_int below
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be a tensor, list or tuple of ints, got {type(value).__name__}"
        )
    if len(value) != count:
        raise ValueError(
            f"{name} must have {count} entries (one per batch element), got {len(value)}"
        )
    items = [require_int(v, name) for v in value]
    bad = [v for v in items if v < 0 or v > limit]
    if bad:
        raise ValueError(f"{name} must lie in [0, {limit}], got {bad[0]}")
    return torch.tensor(items, dtype=torch.int64, device=device)


# ---- module constructor arguments (every fastcrnn.nn module checks through these) -------------

#: The implementations every module with a fused path offers: our kernels, or torch's own ops on
#: the same parameters (the export path).
BACKENDS = ("fused", "torch")
#: The backend modules use when none is given.
DEFAULT_BACKEND = "fused"


def positive_int(value, name: str, minimum: int = 1) -> int:
    """`value` as an int >= minimum; TypeError for a non-int (bools included), else ValueError."""
    value = require_int(value, name)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def probability(value, name: str = "dropout") -> float:
    """`value` as a float in [0, 1]; TypeError for a non-number (bools included), else
    ValueError."""
    if isinstance(value, bool) or not isinstance(value, (Integral, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def check_backend(backend: Optional[str]) -> str:
    """`backend` if it names a known backend (None: DEFAULT_BACKEND), else TypeError/ValueError."""
    if backend is None:
        return DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
