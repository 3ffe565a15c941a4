"""The CPU buffer cache of fastcrnn's ops.

The LSTM and CTC loss ops take their large CPU buffers (>= 64 KiB: gates, states, weight and
input gradients, CTC's alpha table and gradient) from a bounded cache of blocks that earlier
buffers released, instead of fresh memory from malloc. Under glibc, blocks that large come from
mmap or from a heap that is trimmed when they are freed, so every new one is fresh pages and its
first write pays a page fault per 4 KiB. A decoder's cell step writes a few MB of such buffers
and the CTC gradient at a 6,000-class alphabet tens of MB, so faults would cost a large share of
the ops' time (benchmarks/cache_effect.py measures it). The cache holds
released blocks up to a limit (256 MiB, or the ``FASTCRNN_CPU_CACHE_MB`` environment variable
read at the first allocation; 0 turns it off); beyond it the largest go back to the system.
Tensors handed out are ordinary CPU tensors.
"""

import numbers

from fastcrnn._ext import _C

__all__ = ["cpu_cache_info", "empty_cpu_cache", "set_cpu_cache_limit"]


def cpu_cache_info() -> dict:
    """``{"held_bytes": ..., "limit_bytes": ...}``: bytes held by released blocks, and the limit."""
    return dict(_C.cpu_cache_info())


def empty_cpu_cache() -> None:
    """Returns every block the cache holds to the system (tensors in use keep theirs)."""
    _C.empty_cpu_cache()


def set_cpu_cache_limit(nbytes: int) -> None:
    """Sets how many bytes of released blocks the cache may hold; 0 empties it and turns it off."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if not 0 <= nbytes < 1 << 62:
        raise ValueError(f"nbytes must lie in [0, 2**62), got {nbytes}")
    _C.set_cpu_cache_limit(int(nbytes))
