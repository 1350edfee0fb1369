"""torch.distributed glue: the same training script runs alone or under ``torchrun``.

Only rank 0 writes files; evaluation shards the split without padding and sums
the confusion matrices with ``all_reduce``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if active() else 0


def world_size() -> int:
    return tdist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on GPU); return the device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    cuda = torch.device(device).type == "cuda"
    tdist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def sampler(dataset: Dataset, shuffle: bool, seed: int):
    """Training: a DistributedSampler; evaluation: an unpadded strided shard; alone: None."""
    if not active():
        return None
    if shuffle:
        return DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    return list(range(rank(), len(dataset), world_size()))


def wrap(module: nn.Module) -> nn.Module:
    """DistributedDataParallel around ``module`` when running distributed."""
    if not active():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        tdist.all_reduce(tensor)
    return tensor
