"""Shared fixtures for the pytest-benchmark suite (``pytest benchmarks/``).

The default ``pytest`` run (``testpaths = tests``) never collects this folder.
Plain helpers live in ``timing.py`` (importable as ``timing``: ``benchmarks/``
is not a package, so pytest puts it on ``sys.path``); import them from there,
not from this conftest. Typical use in a benchmark::

    @pytest.mark.parametrize("device", DEVICES)
    def test_thing(benchmark, device, copy_seconds):
        dev = require_device(device)            # skips cleanly without CUDA
        x = torch.randn(SHAPE, device=dev)
        fn = synced(lambda: thing(x), dev)      # synchronises inside the timed call
        benchmark.pedantic(fn, **pedantic_args(dev))
        record(benchmark, copy_seconds(x, backward=False), nbytes=2 * x.nbytes)
"""

from __future__ import annotations

import os

import pytest
from report import row, table
from timing import PEDANTIC, copy_fwd, copy_fwd_bwd, measure
from torch import Tensor

LOAD_AT_START = pytest.StashKey[float]()  # the 1-minute load average when the session started


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest-benchmark's own table: median, IQR and rounds only (its full table is about 200 columns)."""
    if hasattr(config.option, "benchmark_columns") and not config.option.benchmark_columns:  # not chosen by the user
        config.option.benchmark_columns = ["median", "iqr", "rounds"]
    config.stash[LOAD_AT_START] = os.getloadavg()[0]


def pytest_benchmark_update_machine_info(config, machine_info):
    """What a saved run's numbers also depend on, for ``report.py --write``: torch, its threads, the GPU, and
    the 1-minute load average when the session started and when it was saved, and this process's niceness."""
    import torch

    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["load_average"] = [config.stash.get(LOAD_AT_START, None), os.getloadavg()[0]]
    machine_info["nice"] = os.nice(0)


def pytest_terminal_summary(terminalreporter, config):
    """Each case's ratio to its baseline, throughput and peak memory (``benchmarks/report.py``)."""
    session = getattr(config, "_benchmarksession", None)
    done = [b for b in getattr(session, "benchmarks", []) if b.stats is not None]
    if done:
        rows = [row(b.fullname.split("::")[-1], b.stats.median, b.extra_info) for b in done]
        terminalreporter.write_sep("-", "imgpix: ratio to each case's baseline (plain model or a copy)")
        terminalreporter.write_line(table(rows))


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
            fn = copy_fwd_bwd(x.detach().clone().requires_grad_(True)) if backward else copy_fwd(x.detach())
            args = PEDANTIC[x.device.type]
            cache[key] = measure(fn, x.device, warmup=args["warmup_rounds"], repeats=args["rounds"])
        return cache[key]

    return get
