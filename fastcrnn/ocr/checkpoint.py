"""Training checkpoints: atomic saves, safe loads (``torch.load(weights_only=True)``).

A checkpoint is a dict of plain types only: ``format`` ("fastcrnn-ocr"), ``version``,
``model`` (state dict), ``optimizer`` (state dict or None), ``epoch``, ``step``,
``best_accuracy``, ``charset`` (the alphabet string as given, before any case folding),
``case_insensitive`` and ``config`` (dict of str/int/float/bool/None/lists: the model and data
settings).
"""

import os
import tempfile
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "strip_module_prefix",
    "plain_config",
    "FORMAT",
    "VERSION",
]

FORMAT = "fastcrnn-ocr"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, corrupt, not ours, or for another charset."""


def plain_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of ``config`` that are plain (str, int, float, bool, None, or lists/tuples of
    those), as a new dict; others are dropped (e.g. callables)."""
    out = {}
    for k, v in dict(config).items():
        if isinstance(v, _PLAIN):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, _PLAIN) for x in v):
            out[str(k)] = list(v)
    return out


def save_checkpoint(path: str, state: Mapping[str, Any]) -> None:
    """Saves ``state`` to ``path`` atomically: written to a temporary file in the same folder,
    flushed to disk, then renamed over ``path`` (a crash mid-save leaves the old file intact)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("version", VERSION)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_model_weights(net: torch.nn.Module, state_dict: Mapping[str, Any], mismatch: str) -> None:
    """Loads ``state_dict`` into ``net`` strictly. Weights of other names or shapes raise
    :class:`CheckpointError`: ``mismatch`` (what does not fit, and what to check), then torch's
    list of the differing entries."""
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{mismatch}: {str(exc)[:500]}") from None


def strip_module_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A state dict without the "module." prefixes that DataParallel / DDP add."""
    if all(isinstance(k, str) and k.startswith("module.") for k in state_dict) and state_dict:
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_checkpoint(
    path: str,
    expected_charset: Optional[str] = None,
    map_location="cpu",
    allow_bare_state_dict: bool = False,
) -> Dict[str, Any]:
    """Loads a checkpoint with ``torch.load(weights_only=True)``.

    Raises FileNotFoundError when absent and :class:`CheckpointError` when it is truncated or
    corrupt, is not a fastcrnn OCR checkpoint, or (with ``expected_charset``) holds another
    charset. With ``allow_bare_state_dict`` a plain model state dict (as crnn.pytorch saves) is
    accepted and returned as ``{"model": state_dict}``. "module." prefixes are stripped from the
    model state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip / unpickling errors of all kinds
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupt (or not a torch "
            f"file): {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a dict")
    if obj.get("format") != FORMAT:
        if allow_bare_state_dict and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"model": strip_module_prefix(obj)}
        raise CheckpointError(
            f"checkpoint {path!r} is not a fastcrnn OCR checkpoint (no format={FORMAT!r} entry)"
        )
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has version {obj.get('version')!r}; this "
            f"fastcrnn reads versions up to {VERSION}"
        )
    for key in ("model", "charset", "config"):
        if key not in obj:
            raise CheckpointError(f"checkpoint {path!r} lacks its {key!r} entry")
    if not isinstance(obj["model"], dict):
        raise CheckpointError(f"checkpoint {path!r}: 'model' is not a state dict")
    obj["model"] = strip_module_prefix(obj["model"])
    if expected_charset is not None and obj["charset"] != expected_charset:
        raise CheckpointError(
            f"checkpoint {path!r} was trained for charset "
            f"{obj['charset']!r} ({len(obj['charset'])} characters), not "
            f"{expected_charset!r} ({len(expected_charset)} characters)"
        )
    return obj
