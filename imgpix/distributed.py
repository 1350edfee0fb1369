"""torch.distributed glue: the same training script runs alone or under ``torchrun``.

``torchrun --standalone --nproc_per_node=N -m imgpix.cli train ...`` starts N
processes; :func:`init_from_env` joins them into one process group (``gloo``
on CPU, ``nccl`` on CUDA), the networks are wrapped in
``DistributedDataParallel`` (gradients averaged over processes in every
backward pass) and each process reads its own shard of the training set
through a ``DistributedSampler``. ``--batch-size`` is per process: one
optimiser step sees ``N * batch_size`` images.

Only rank 0 writes files; evaluation shards the split without padding (no
sample counted twice) and sums the confusion matrices with ``all_reduce``.
BatchNorm statistics are per process (plain DDP; ``SyncBatchNorm`` needs a
GPU); :func:`broadcast_buffers` copies rank 0's running statistics to every
process before evaluation so that all ranks evaluate the model rank 0 saves.
Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function is a no-op.
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
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    tdist.init_process_group(backend="nccl" if cuda else "gloo",
                             **({"device_id": torch.device(device)} if cuda else {}))
    return device


def shutdown() -> None:
    """Leave the process group (``destroy_process_group``) if one was joined."""
    if active():
        tdist.destroy_process_group()


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


def mean_over_ranks(values: dict[str, float], device="cpu") -> dict[str, float]:
    """The average of each value over all processes (same keys on every rank)."""
    if not active() or not values:
        return values
    names = list(values)  # insertion order: the loss names come out in the same order on every rank
    total = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    tdist.all_reduce(total)
    return {name: v / world_size() for name, v in zip(names, total.tolist())}


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process."""
    if not active():
        return
    for buffer in module.buffers():
        tdist.broadcast(buffer, src=0)
