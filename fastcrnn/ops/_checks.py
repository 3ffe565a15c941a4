"""Argument checks shared by the Python op wrappers (the C++ ops re-check what they rely on)."""

from numbers import Integral
from typing import Optional, Sequence, Tuple, Union, cast

import torch

LengthsLike = Union[torch.Tensor, Sequence[int], int, None]


class DtypeMismatchError(TypeError, ValueError, RuntimeError):
    """Tensors that must share a dtype do not. torch raises ValueError for this in some places,
    TypeError or RuntimeError in others; this error is all three, so any of those ``except``
    clauses catches it."""


class ArgumentValueError(ValueError, RuntimeError):
    """An invalid argument value or size where torch raises RuntimeError (from its C++ checks)
    for the same mistake: a ValueError by fastcrnn's convention and a RuntimeError as torch's,
    so code written against either catches it."""


class TensorTypeError(TypeError, RuntimeError):
    """A tensor of the wrong dtype where torch raises RuntimeError for the same mistake: a
    TypeError by fastcrnn's convention and a RuntimeError as torch's."""


def require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_cpu(t: torch.Tensor, name: str) -> None:
    """ValueError naming ``name`` unless ``t`` is on the CPU (the inference-only ops)."""
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor, got {t.device}")


def require_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def require_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    return int(value)


def require_bool(value, name: str) -> bool:
    """`value` if it is a bool, else TypeError (as torch's RNN modules check bias and
    batch_first: a string such as "False" would otherwise mean True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return value


PARAMETER_DEVICE_WORDS = "Input and parameter tensors are not at the same device"
STATE_DEVICE_WORDS = "Input and hidden tensors are not at the same device"


def require_like(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str, words: str) -> None:
    """`t` must have ref's dtype (DtypeMismatchError) and device (ArgumentValueError led by
    `words`, torch's message for the same mistake, which its tests match)."""
    if t.dtype != ref.dtype:
        raise DtypeMismatchError(
            f"{name} dtype {t.dtype} does not match the dtype of the {ref_name}, {ref.dtype}"
        )
    if t.device != ref.device:
        raise ArgumentValueError(
            f"{words}: {name} is on {t.device}, the {ref_name} on {ref.device}"
        )


def decoder_scores(log_probs, blank) -> Tuple[torch.Tensor, int, bool]:
    """The checked input of a CTC decoder: log_probs (T, N, C) or unbatched (T, C), floating,
    with C > 0 and blank in [0, C). Returns (scores (T, N, C), blank, unbatched)."""
    require_tensor(log_probs, "log_probs")
    require_float(log_probs, "log_probs")
    if log_probs.dim() not in (2, 3):
        raise ArgumentValueError(
            f"log_probs must have shape (T, N, C) or unbatched (T, C), got {tuple(log_probs.shape)}"
        )
    unbatched = log_probs.dim() == 2
    scores = log_probs.unsqueeze(1) if unbatched else log_probs
    C = scores.shape[2]
    if C == 0:
        raise ArgumentValueError("log_probs must have at least one class (C > 0)")
    blank = require_int(blank, "blank")
    if not 0 <= blank < C:
        raise ArgumentValueError(f"blank must be in [0, {C}), got {blank}")
    return scores, blank, unbatched


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
    a tensor's values are checked by the op (always on CPU, on CUDA when validating). A tensor
    of any shape with `count` entries is accepted, as torch accepts it (a 0-d tensor for one
    sequence, an (N, 1) column); for unbatched calls also a plain int or a one-entry sequence.
    Errors where torch raises RuntimeError are ArgumentValueError / TensorTypeError, which are
    RuntimeErrors too.
    """
    if value is None:
        return torch.full((count,), limit, dtype=torch.int64, device=device)
    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.int32, torch.int64):
            raise TensorTypeError(
                f"{name} must be integral (an int32 or int64 tensor), got {value.dtype}"
            )
        if value.numel() != count:
            raise ArgumentValueError(
                f"{name} must be of size batch_size: {count} entries (one per batch element), "
                f"got shape {tuple(value.shape)}"
            )
        if value.dim() != 1:
            value = value.reshape(count)
        if value.device != device:
            if value.device.type != "cpu":
                raise ArgumentValueError(
                    f"{name} is on {value.device} but the input is on {device}"
                )
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
        raise ArgumentValueError(
            f"{name} must be of size batch_size: {count} entries (one per batch element), "
            f"got {len(value)}"
        )
    items = [require_int(v, name) for v in value]
    for v in items:
        if v < 0:
            raise ArgumentValueError(
                f"Expected {name} to have value at least 0, but got value {v} "
                f"({name} must lie in [0, {limit}])"
            )
        if v > limit:
            raise ArgumentValueError(
                f"Expected {name} to have value at most {limit}, but got value {v} "
                f"({name} must lie in [0, {limit}])"
            )
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
        if minimum == 1:  # torch's words for its module sizes
            raise ValueError(f"{name} must be greater than zero, got {value}")
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class ProbabilityTypeError(TypeError, ValueError):
    """A probability argument that is not a number: a TypeError by fastcrnn's convention and a
    ValueError as torch's modules raise for a non-number dropout."""


def probability(value, name: str = "dropout") -> float:
    """`value` as a float in [0, 1]; ProbabilityTypeError for a non-number (bools included),
    else ValueError, with torch's words for dropout."""
    if isinstance(value, bool) or not isinstance(value, (Integral, float)):
        raise ProbabilityTypeError(
            f"{name} should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {type(value).__name__}"
        )
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"{name} should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {value}"
        )
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
