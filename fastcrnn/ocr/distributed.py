"""Process-group setup and the resumable (optionally distributed) sampler used by training.

Under ``torchrun`` (WORLD_SIZE > 1) training runs DistributedDataParallel: gloo on CPU, nccl on
GPU; only rank 0 logs, validates and writes checkpoints.
"""

import math
import os
from typing import List, Optional, Tuple

import torch

__all__ = ["setup_distributed", "barrier", "cleanup_distributed", "ResumableSampler"]


def setup_distributed(use_cuda: bool) -> Tuple[bool, int, int, torch.device]:
    """Initialises torch.distributed when launched by torchrun (WORLD_SIZE > 1).

    Returns (distributed, rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return True, dist.get_rank(), dist.get_world_size(), device
    return False, 0, 1, torch.device("cuda" if use_cuda else "cpu")


def barrier(distributed: bool) -> None:
    """torch.distributed.barrier() when ``distributed``, else nothing."""
    if distributed:
        import torch.distributed as dist

        dist.barrier()


def cleanup_distributed(distributed: bool) -> None:
    """Destroys the process group set up by :func:`setup_distributed`."""
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffles ``n`` indices with a generator seeded by ``(seed, epoch)`` — or, when
    distributed, uses a DistributedSampler — and can skip the first ``skip`` indices of an epoch
    (resuming in the middle of an epoch).

    With ``window=B`` it draws crnn.pytorch's randomSequentialSampler order instead: an epoch is
    ``n // B`` runs of B consecutive indices, each starting at a random index in [0, n - B],
    then one run of the ``n % B`` left over, also starting in [0, n - B] (a set smaller than B
    is one run of all of it). Runs are drawn independently, so an epoch may repeat some
    samples and miss others, as crnn.pytorch's does; with B the loader's batch size each batch
    is one run (consecutive LMDB records). Distributed, every process draws ceil(n / world)
    indices this way from a generator seeded with its rank too, so all make the same number of
    steps.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        distributed: bool = False,
        dataset=None,
        window: Optional[int] = None,
    ):
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window <= 0
        ):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        self.n, self.seed, self.shuffle, self.window = n, seed, shuffle, window
        self.epoch, self.skip = 0, 0
        self.base = None
        self.rank, self.world = 0, 1
        if distributed and window is not None:
            import torch.distributed as dist

            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif distributed:
            self.base = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed)

    def set_epoch(self, epoch: int, skip: int = 0):
        self.epoch, self.skip = epoch, skip
        if self.base is not None:
            self.base.set_epoch(epoch)

    def _windows(self) -> List[int]:
        """This process's epoch of randomSequentialSampler runs (see the class doc)."""
        assert self.window is not None
        g = torch.Generator().manual_seed((self.seed * 1000 + self.epoch) * 1000 + self.rank)
        count = math.ceil(self.n / self.world)
        size = self.window
        highest_start = max(self.n - size, 0)
        runs = [size] * (count // size) + ([count % size] if count % size else [])
        starts = torch.randint(0, highest_start + 1, (len(runs),), generator=g).tolist()
        out: List[int] = []
        for start, length in zip(starts, runs):
            out.extend(range(start, start + length))
        return out

    def _indices(self) -> List[int]:
        if self.window is not None:
            return self._windows()
        if self.base is not None:
            return list(self.base)
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self._indices()[self.skip :])

    def _total(self) -> int:
        if self.window is not None:
            return math.ceil(self.n / self.world)
        return len(self.base) if self.base is not None else self.n

    def __len__(self) -> int:
        return max(self._total() - self.skip, 0)
