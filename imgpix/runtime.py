"""Process-wide settings of a CPU training or evaluation process; they change speed, never a result."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc keep freed buffers for reuse instead of handing them back to the kernel.

    A training step frees and re-allocates the same multi-MiB tensors. By default glibc serves large
    ones with fresh ``mmap`` calls and trims the heap when its top is free, so every step pays page
    faults. Raising ``M_MMAP_THRESHOLD`` (to 32 MiB) and ``M_TRIM_THRESHOLD`` (to 1 GiB) keeps them
    in the heap. Returns False, changing nothing, where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def cpu_worker(threads: int) -> None:
    """Settings of a process that trains or evaluates on the CPU: ``threads`` torch threads, freed
    memory kept (:func:`keep_freed_memory`)."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def machine_busy() -> bool:
    """True when other work keeps the CPU busy: a one-minute load average of 1 or more (False where the
    platform has no load average)."""
    try:
        return os.getloadavg()[0] >= 1.0
    except (AttributeError, OSError):
        return False


def default_threads(model: str, device: str) -> int:
    """Torch threads for a process that trains or evaluates ``model``: for imgpix's tiny net on the CPU, one when
    the machine is busy (threads of busy processes wait on each other: one was about 3x faster beside another
    run) and every core when it is idle (two were about 1.4x faster alone; README, Quick start); else every core
    torch would use."""
    if model == "tiny" and device == "cpu" and machine_busy():
        return 1
    return torch.get_num_threads()
