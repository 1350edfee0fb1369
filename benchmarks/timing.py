"""Shared timing helpers for the benchmarks and the performance gate.

Everything here reports *seconds* and is meant to be turned into ratios inside
one run (``measure_ratio``): absolute times on a shared machine are noise.

* ``DEVICES`` / ``require_device`` -- device parametrisation; ``cuda`` skips
  cleanly (``pytest.skip`` in tests, ``DeviceUnavailable`` elsewhere).
* ``CLOCKS`` -- ``wall`` (``perf_counter``), ``thread`` (CPU time of the calling
  thread) and ``process`` (CPU time of all the process's threads). CPU time
  does not count the time other processes hold the cores, so a ratio of CPU
  times survives a busy machine; ``thread`` is exact with one intra-op thread
  (``intra_op_threads(1)``), ``process`` counts every intra-op thread, and
  their spinning too unless idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``).
  GPU work is timed on the wall clock only.
* ``measure(fn, device)`` -- median seconds of ``fn()`` after a warm-up, with
  ``torch.cuda.synchronize`` inside the timed region on GPU.
* ``measure_ratio(fn, baseline, device)`` -- a ``Ratio``: per-round ratios with
  the two sides interleaved, extra rounds only while the rounds are too spread
  out for their median to be sure; ``measure_ratios`` does it for several
  functions against one baseline timed once per round.
* ``copy_fwd`` / ``copy_fwd_bwd`` -- the bandwidth baseline: a tensor copy
  (``x.clone()``) of the same size, forward or forward + backward;
  ``fwd_bwd(op, x, grad)`` the same harness for any op.
* ``voc_labels`` -- VOC-like image labels (~3 of 21 classes on).
* ``pedantic_args`` / ``record`` -- pytest-benchmark settings per device, and
  GB/s + ratio to the copy stored in ``benchmark.extra_info``.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor

DEVICES = ("cpu", "cuda")
# rounds / warm-up of ``benchmark.pedantic`` (and of the copy baseline), per device type
PEDANTIC = {"cpu": {"rounds": 8, "warmup_rounds": 2}, "cuda": {"rounds": 30, "warmup_rounds": 5}}


class DeviceUnavailable(RuntimeError):
    """Raised by ``require_device`` outside pytest when the device is missing."""


def device_available(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def require_device(device: str) -> torch.device:
    """``torch.device(device)``, or skip (under pytest) / raise when it is absent."""
    if not device_available(device):
        reason = f"{device} not available (torch {torch.__version__})"
        try:
            import pytest
        except ImportError:  # pragma: no cover - pytest is a dev dependency
            raise DeviceUnavailable(reason) from None
        pytest.skip(reason)
    return torch.device(device)


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synced(fn: Callable[[], object], device: str | torch.device) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation (for pytest-benchmark)."""
    dev = torch.device(device)

    def call() -> None:
        fn()
        sync(dev)

    return call


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread": time.thread_time,
    "process": time.process_time,
}


def clock_fn(clock: str | Callable[[], float], device: str | torch.device) -> Callable[[], float]:
    """The timer named ``clock`` (or ``clock`` itself); CPU clocks only for CPU work."""
    if callable(clock):
        return clock
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    if clock != "wall" and torch.device(device).type != "cpu":
        raise ValueError(f"the {clock} CPU clock does not see {torch.device(device).type} work: use clock='wall'")
    return CLOCKS[clock]


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_once(fn: Callable[[], object], device: str | torch.device, clock: str | Callable[[], float] = "wall") -> float:
    timer = clock_fn(clock, device)
    sync(device)
    start = timer()
    fn()
    sync(device)
    return timer() - start


def measure(fn: Callable[[], object], device: str | torch.device, *, warmup: int = 3, repeats: int = 10,
            clock: str | Callable[[], float] = "wall") -> float:
    """Median time of ``fn()`` in seconds on ``clock``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_once(fn, device, clock) for _ in range(repeats))


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios ``time(fn) / time(baseline)`` of one measurement; ``value`` is their median."""

    rounds: tuple[float, ...]

    @property
    def value(self) -> float:
        return statistics.median(self.rounds)

    @property
    def spread(self) -> float:
        """Interquartile range over median, ``(q3 - q1) / q2`` (0 for one round)."""
        if len(self.rounds) < 2:
            return 0.0
        q1, q2, q3 = statistics.quantiles(self.rounds, n=4, method="inclusive")
        return (q3 - q1) / q2

    @property
    def error(self) -> float:
        """Relative uncertainty of the median, ``spread / sqrt(rounds)`` (its standard error for normal noise
        is 0.93x this)."""
        return self.spread / math.sqrt(len(self.rounds))


def measure_ratio(
    fn: Callable[[], object],
    baseline: Callable[[], object],
    device: str | torch.device,
    *,
    warmup: int = 2,
    repeats: int = 10,
    max_repeats: int | None = None,
    tolerance: float = 0.02,
    clock: str | Callable[[], float] = "wall",
) -> Ratio:
    """``repeats`` rounds of ``time(fn) / time(baseline)``, the two interleaved in alternating order.

    While the median's uncertainty ``Ratio.error`` exceeds ``tolerance``, rounds
    are added, up to ``max_repeats`` in all (default ``repeats``): a quiet
    machine pays for ``repeats`` rounds only.
    """
    return measure_ratios({"fn": fn}, baseline, device, warmup=warmup, repeats=repeats, max_repeats=max_repeats,
                          tolerance=tolerance, clock=clock)["fn"]


def measure_ratios(
    fns: Mapping[str, Callable[[], object]],
    baseline: Callable[[], object],
    device: str | torch.device,
    *,
    warmup: int = 2,
    repeats: int = 10,
    max_repeats: int | None = None,
    tolerance: float | Mapping[str, float] = 0.02,
    clock: str | Callable[[], float] = "wall",
) -> dict[str, Ratio]:
    """``measure_ratio`` of each of ``fns`` against one ``baseline``, measured together: a round times the
    baseline once and each function once, in an order rotated round by round (for one function: alternating,
    as ``measure_ratio``), and each function's ratio in the round is to that baseline time. So the baseline
    runs once per round for all the ratios, not once per ratio. After ``repeats`` rounds, a round times only
    the functions whose ratio's ``Ratio.error`` still exceeds its ``tolerance`` (one for all, or one per
    name), each up to ``max_repeats`` rounds: every ratio gets exactly the rounds ``measure_ratio`` would give it.
    """
    max_repeats = repeats if max_repeats is None else max_repeats
    if not 1 <= repeats <= max_repeats:
        raise ValueError(f"need 1 <= repeats <= max_repeats, got {repeats} and {max_repeats}")
    if not fns:
        raise ValueError("need at least one function to time against the baseline")
    tolerances = tolerance if isinstance(tolerance, Mapping) else dict.fromkeys(fns, tolerance)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
        baseline()
    ratios: dict[str, list[float]] = {name: [] for name in fns}

    def unsure(name: str) -> bool:
        return Ratio(tuple(ratios[name])).error > tolerances[name]

    rounds = 0
    while active := [name for name in fns if rounds < repeats or (rounds < max_repeats and unsure(name))]:
        calls = [*((name, fns[name]) for name in active), (None, baseline)]  # None: the baseline
        shift = rounds % len(calls)  # rotate the order, so no function always runs first or right after another
        times = {name: time_once(call, device, clock) for name, call in calls[shift:] + calls[:shift]}
        for name in active:
            ratios[name].append(times[name] / times[None])
        rounds += 1
    return {name: Ratio(tuple(r)) for name, r in ratios.items()}


def copy_fwd(x: Tensor) -> Callable[[], Tensor]:
    """Forward of a plain copy of ``x``: reads and writes ``x.numel()`` elements."""
    return lambda: x.clone()


def copy_fwd_bwd(x: Tensor) -> Callable[[], None]:
    """Forward + backward of a plain copy: ``x.clone()`` then a cloned gradient.

    ``x`` must require grad; ``grad`` is a fixed upstream gradient, so the
    backward of ``clone`` (an identity) costs one more read + write.
    """
    grad = torch.ones_like(x)

    def run() -> None:
        out = x.clone()
        (g,) = torch.autograd.grad(out, x, grad)
        g.clone()  # autograd passes ``grad`` through; materialise it like a real backward

    return run


def fwd_bwd(op: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor | None = None) -> Callable[[], None]:
    """Forward + backward of ``op(x)`` against a fixed upstream gradient."""

    cache = [grad]

    def run() -> None:
        out = op(x)
        if cache[0] is None:  # created once, outside the steady state
            cache[0] = torch.ones_like(out)
        torch.autograd.grad(out, x, cache[0])

    return run


def gbps(num_bytes: float, seconds: float) -> float:
    return num_bytes / seconds / 1e9


def voc_labels(batch: int, num_classes: int = 21, device: str | torch.device = "cpu", seed: int = 0) -> Tensor:
    """[B, N] binary image labels like VOC's: background plus two random object classes."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, num_classes)
    labels[:, 0] = 1
    for b in range(batch):
        labels[b, 1 + torch.randperm(num_classes - 1, generator=gen)[:2]] = 1
    return labels.to(device)


# ------------------------------------------------------------ pytest-benchmark
def pedantic_args(device: str | torch.device) -> dict[str, Any]:
    """Keyword arguments of ``benchmark.pedantic`` for ``device``."""
    return {"iterations": 1, **PEDANTIC[torch.device(device).type]}


def benchmark_median(benchmark) -> float | None:
    """Median seconds of a finished benchmark (None when benchmarking is disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def record(benchmark, copy_s: float, nbytes: int) -> None:
    """Store GB/s (``nbytes`` / median) and the ratio to a copy's ``copy_s`` in ``extra_info``."""
    median = benchmark_median(benchmark)
    benchmark.extra_info["copy_ms"] = round(copy_s * 1e3, 3)
    if median is not None:
        benchmark.extra_info["GB/s"] = round(gbps(nbytes, median), 2)
        benchmark.extra_info["ratio_to_copy"] = round(median / copy_s, 3)
