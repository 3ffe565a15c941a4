"""Argument checks shared by the Python op wrappers (the C++ ops re-check what they rely on)."""
from numbers import Integral
from typing import Optional, Sequence, Union

import torch

LengthsLike = Union[torch.Tensor, Sequence[int], int, None]


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


def skip_value_checks(t: torch.Tensor) -> bool:
    """Value checks of CUDA tensors need a host sync: skipped when compiling or capturing."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def lengths_tensor(value: LengthsLike, count: int, limit: int, device: torch.device, name: str,
                   unbatched: bool = False) -> torch.Tensor:
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
            raise ValueError(f"{name} must have {count} entries (one per batch element), "
                             f"got {value.numel()}")
        if value.device != device:
            if value.device.type != "cpu":
                raise ValueError(f"{name} is on {value.device} but the input is on {device}")
            value = value.to(device)
        # .to() of an int64 tensor still costs a dispatch (~2 us): skip it
        return value if value.dtype == torch.int64 else value.to(torch.int64)
    if unbatched and isinstance(value, Integral) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a tensor, list or tuple of ints, got "
                        f"{type(value).__name__}")
    if len(value) != count:
        raise ValueError(f"{name} must have {count} entries (one per batch element), "
                         f"got {len(value)}")
    items = [require_int(v, name) for v in value]
    bad = [v for v in items if v < 0 or v > limit]
    if bad:
        raise ValueError(f"{name} must lie in [0, {limit}], got {bad[0]}")
    return torch.tensor(items, dtype=torch.int64, device=device)


