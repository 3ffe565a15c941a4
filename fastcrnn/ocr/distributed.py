"""Process-group setup and the resumable (optionally distributed) sampler used by training.

Under ``torchrun`` (WORLD_SIZE > 1) training runs DistributedDataParallel: gloo on CPU, nccl on
GPU; only rank 0 logs, validates and writes checkpoints.
"""

import os
from typing import List, Tuple

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
    (resuming in the middle of an epoch)."""

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, distributed: bool = False, dataset=None
    ):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip = 0, 0
        self.base = None
        if distributed:
            self.base = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed)

    def set_epoch(self, epoch: int, skip: int = 0):
        self.epoch, self.skip = epoch, skip
        if self.base is not None:
            self.base.set_epoch(epoch)

    def _indices(self) -> List[int]:
        if self.base is not None:
            return list(self.base)
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        total = len(self.base) if self.base is not None else self.n
        return max(total - self.skip, 0)
