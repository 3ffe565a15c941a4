"""Small shared tensor helpers: one-hot encoding, sequence masks and masked softmax.

These are the checked, public versions of the helpers in :mod:`fastcrnn.reference` (which stays
the readable specification the tests compare against). None of them modifies its inputs.
"""

from typing import List, Sequence, Union

import torch

from fastcrnn.ops._checks import require_int

__all__ = ["one_hot", "to_onehot", "sequence_mask", "masked_softmax"]


def _require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _index_tensor(x: torch.Tensor, name: str) -> None:
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got {x.dtype}")


def one_hot(x: torch.Tensor, n_class: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot encoding: (...) integer indices -> (..., n_class) tensor of ``dtype``.

    Every index must lie in [0, n_class); a ValueError names the offending value otherwise.
    (The tutorial's version takes a 1-D batch; any shape works here.)
    """
    _require_tensor(x, "x")
    _index_tensor(x, "x")
    n_class = require_int(n_class, "n_class")
    if n_class <= 0:
        raise ValueError(f"n_class must be positive, got {n_class}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= n_class:
            raise ValueError(
                f"x must hold class indices in [0, {n_class}), got {lo if lo < 0 else hi}"
            )
    out = torch.zeros(*x.shape, n_class, dtype=dtype, device=x.device)
    out.scatter_(-1, x.long().unsqueeze(-1), 1)
    return out


def to_onehot(X: torch.Tensor, n_class: int) -> List[torch.Tensor]:
    """(N, T) indices -> a list of T float32 tensors (N, n_class), one per time step."""
    _require_tensor(X, "X")
    if X.dim() != 2:
        raise ValueError(f"X must have shape (N, T), got {tuple(X.shape)}")
    return [one_hot(X[:, i], n_class) for i in range(X.shape[1])]


def _lengths(valid_len, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(valid_len, (list, tuple)):
        valid_len = torch.tensor([require_int(v, name) for v in valid_len], dtype=torch.int64)
    _require_tensor(valid_len, name)
    if valid_len.dtype == torch.bool or valid_len.is_complex():
        raise TypeError(f"{name} must be an integer or float tensor, got {valid_len.dtype}")
    if valid_len.device != device:
        if valid_len.device.type != "cpu" and device.type != "cpu":
            raise ValueError(f"{name} is on {valid_len.device} but the input is on {device}")
        valid_len = valid_len.to(device)
    return valid_len


def sequence_mask(
    X: torch.Tensor, valid_len: Union[torch.Tensor, Sequence[int]], value: float = 0.0
) -> torch.Tensor:
    """Returns a copy of X (N, T, ...) whose entries at steps t >= valid_len[n] are ``value``.

    valid_len: (N,) tensor (integer or float, as d2l passes) or list of ints. Lengths above T keep
    every step; lengths <= 0 mask all of them. X is never modified (the tutorial's
    ``SequenceMask`` writes into its input; this one does not).
    """
    _require_tensor(X, "X")
    if X.dim() < 2:
        raise ValueError(f"X must have shape (N, T, ...), got {tuple(X.shape)}")
    lens = _lengths(valid_len, "valid_len", X.device)
    if lens.dim() != 1 or lens.numel() != X.shape[0]:
        raise ValueError(f"valid_len must have shape ({X.shape[0]},), got {tuple(lens.shape)}")
    T = X.shape[1]
    keep = torch.arange(T, device=X.device)[None, :] < lens[:, None]
    keep = keep.reshape(keep.shape + (1,) * (X.dim() - 2))
    return torch.where(keep, X, torch.as_tensor(value, dtype=X.dtype, device=X.device))


def masked_softmax(
    X: torch.Tensor, valid_lens: Union[torch.Tensor, Sequence[int], None]
) -> torch.Tensor:
    """Softmax over the last axis of X (B, Q, K), attending only to the first valid_lens keys.

    valid_lens: None (all keys), (B,) (the same length for every query of a batch element) or
    (B, Q); integer or float tensor, or a list of ints for the (B,) form. X is not modified.
    Masked keys get weight exactly 0; a row whose valid length is 0 has no key to attend to and
    returns all zeros (d2l's version would instead spread the weight uniformly over padding).
    The result has X's dtype and gradients flow only through the valid scores.
    """
    _require_tensor(X, "X")
    if not X.dtype.is_floating_point:
        raise TypeError(f"X must be a floating-point tensor, got {X.dtype}")
    if X.dim() != 3:
        raise ValueError(f"X must have shape (B, Q, K), got {tuple(X.shape)}")
    if valid_lens is None:
        return torch.softmax(X, dim=-1)
    B, Q, K = X.shape
    lens = _lengths(valid_lens, "valid_lens", X.device)
    if lens.dim() == 1:
        if lens.numel() != B:
            raise ValueError(
                f"valid_lens must have shape ({B},) or ({B}, {Q}), got {tuple(lens.shape)}"
            )
        lens = lens[:, None].expand(B, Q)
    elif lens.shape != (B, Q):
        raise ValueError(
            f"valid_lens must have shape ({B},) or ({B}, {Q}), got {tuple(lens.shape)}"
        )
    keep = torch.arange(K, device=X.device)[None, None, :] < lens[..., None]
    # A row with no valid key would be all -inf (NaN after softmax, NaN gradients): such rows are
    # filled with 0 instead (finite, uniform) and zeroed below; masked_fill passes no gradient to
    # the filled entries, so X's gradient is exactly 0 there.
    empty = ~keep.any(-1, keepdim=True)
    scores = X.masked_fill(~keep & ~empty, float("-inf")).masked_fill(empty, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return torch.where(keep, weights, torch.zeros((), dtype=X.dtype, device=X.device))
