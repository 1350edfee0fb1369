"""Shared fixtures for the pytest-benchmark suite (``pytest benchmarks/``).

The default ``pytest`` run (``testpaths = tests``) never collects this folder.
Helpers live in ``timing.py`` (importable here because ``benchmarks/`` is not a
package: pytest puts it on ``sys.path``). Typical use in a benchmark::

    @pytest.mark.parametrize("device", DEVICES)
    def test_thing(benchmark, device, copy_seconds):
        dev = require_device(device)            # skips cleanly without CUDA
        x = torch.randn(SHAPE, device=dev)
        fn = synced(lambda: thing(x), dev)      # synchronises inside the timed call
        benchmark.pedantic(fn, **pedantic_args(dev))
        record(benchmark, copy_seconds(x, backward=False), nbytes=2 * x.nbytes)
"""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import Tensor

from timing import copy_fwd, copy_fwd_bwd, gbps, measure

# rounds / warm-up for benchmark.pedantic, per device type
PEDANTIC = {"cpu": {"rounds": 8, "warmup_rounds": 2}, "cuda": {"rounds": 30, "warmup_rounds": 5}}


def pedantic_args(device: torch.device | str) -> dict:
    return {"iterations": 1, **PEDANTIC[torch.device(device).type]}


@pytest.fixture(scope="session")
def copy_seconds():
    """``copy_seconds(x, backward)``: median seconds of a copy of ``x``'s size, dtype, device.

    Measured once per (shape, dtype, device, backward) in this session, so the
    ratios recorded by ``record`` compare timings from the same run.
    """
    cache: dict[tuple, float] = {}

    def get(x: Tensor, backward: bool) -> float:
        key = (tuple(x.shape), x.dtype, str(x.device), backward)
        if key not in cache:
            if backward:
                leaf = x.detach().clone().requires_grad_(True)
                fn = copy_fwd_bwd(leaf)
            else:
                fn = copy_fwd(x.detach())
            repeats = PEDANTIC[x.device.type]["rounds"]
            cache[key] = measure(fn, x.device, warmup=PEDANTIC[x.device.type]["warmup_rounds"], repeats=repeats)
        return cache[key]

    return get


def benchmark_median(benchmark) -> float | None:
    """Median seconds of the finished benchmark (None when benchmarking is disabled)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    data = getattr(stats.stats, "data", None)
    return statistics.median(data) if data else stats.stats.median


def record(benchmark, copy_s: float, nbytes: int) -> None:
    """Store GB/s (``nbytes`` / median) and the ratio to the copy in ``extra_info``."""
    median = benchmark_median(benchmark)
    benchmark.extra_info["copy_ms"] = round(copy_s * 1e3, 3)
    if median is not None:
        benchmark.extra_info["GB/s"] = round(gbps(nbytes, median), 2)
        benchmark.extra_info["ratio_to_copy"] = round(median / copy_s, 3)
