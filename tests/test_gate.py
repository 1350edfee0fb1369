"""The performance gate (benchmarks/gate.py and its timing helpers), not this machine's speed.

Unit tests use stand-ins and fake clocks; ``test_gate_survives_competing_load``
runs the real fusion gate (``gate.py --fusion-only``, as CI runs it) while two
processes spin on the CPU, and checks that it passes for ``fuse_log`` and
still fails for the deliberately slow one.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

_bench = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("bench_gate", _bench / "gate.py")
gate = sys.modules["bench_gate"] = importlib.util.module_from_spec(_spec)  # dataclasses look modules up here
_spec.loader.exec_module(gate)  # puts benchmarks/ on sys.path
import timing  # noqa: E402

SMALL = (2, 21, 64, 64)
SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
LOAD_S = 180  # the spinners stop by themselves after this (if the test has not stopped them)


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")] for line in text.strip().splitlines()[2:]]


def fixed(value: float):
    return lambda: timing.Ratio((value,))


def test_bound_is_expected_times_one_plus_margin():
    assert gate.Gate("g", fixed(1.0), 2.0, 0.08).bound == pytest.approx(2.16)


def test_default_bounds_sit_between_expected_and_the_regressions_they_catch():
    gates = gate.default_gates("cpu")
    fusion, *model, memory = gates
    assert fusion.expected < fusion.bound <= 4.0  # the spec: fuse_log fwd+bwd <= 4x a copy on CPU
    for g, (_, _, expected, _) in zip(model, gate.MODEL_GATES):
        # one more segmenter forward costs 1/3 of a plain fwd+bwd (72 of 216 GFLOP)
        assert g.expected == expected and expected < g.bound < expected + 1 / 3
    assert memory.bound > memory.expected == 1.0


def test_run_gates_passes_at_and_below_bound_and_fails_above():
    out = io.StringIO()
    assert gate.run_gates([gate.Gate("below", fixed(1.5), 2.0, 1.0), gate.Gate("equal", fixed(4.0), 2.0, 1.0)], out)
    assert table_rows(out.getvalue()) == [["below", "1.50", "1", "0%", "4.00 = 2.00 x (1 + 1.00)", "ok"],
                                          ["equal", "4.00", "1", "0%", "4.00 = 2.00 x (1 + 1.00)", "ok"]]
    out = io.StringIO()
    assert not gate.run_gates([gate.Gate("fast", fixed(1.0), 2.0, 1.0), gate.Gate("slow", fixed(4.01), 2.0, 1.0)], out)
    assert [cell.strip() for cell in out.getvalue().splitlines()[0].split("|")][:3] == ["name", "ratio", "rounds"]
    assert table_rows(out.getvalue())[1][-1] == "FAIL"


def test_a_ratio_over_the_bound_is_remeasured_once():
    noisy = iter([timing.Ratio((4.2, 4.4, 4.0)), timing.Ratio((3.9,))])  # one noisy median, then within
    out = io.StringIO()
    assert gate.run_gates([gate.Gate("noisy", lambda: next(noisy), 2.0, 1.0)], out)
    assert table_rows(out.getvalue())[0][:4] == ["noisy", "4.20 then 3.90", "3+1", "5% then 0%"]
    calls = []
    out = io.StringIO()
    assert not gate.run_gates([gate.Gate("slow", lambda: calls.append(1) or timing.Ratio((4.5,)), 2.0, 1.0)], out)
    assert len(calls) == 2 and table_rows(out.getvalue())[0][1:] == ["4.50 then 4.50", "1+1", "0% then 0%",
                                                                     "4.00 = 2.00 x (1 + 1.00)", "FAIL"]


def scripted(durations, now):
    """A callable that advances the fake clock ``now[0]`` by the next of ``durations``."""
    steps = iter(durations)

    def run():
        now[0] += next(steps)

    return run


def test_measure_ratio_adds_rounds_only_while_the_median_is_unsure():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    quiet = timing.measure_ratio(scripted(itertools.repeat(2.0), now), scripted(itertools.repeat(1.0), now), "cpu",
                                 warmup=1, repeats=3, max_repeats=9, tolerance=0.02, clock=clock)
    assert quiet.rounds == (2.0, 2.0, 2.0)
    noisy = timing.measure_ratio(scripted(itertools.cycle([1.0, 3.0]), now), scripted(itertools.repeat(1.0), now),
                                 "cpu", warmup=1, repeats=3, max_repeats=9, tolerance=0.02, clock=clock)
    # warm-up took the 1.0, so rounds read 3, 1, 3, ...: the spread stays high up to the cap
    assert noisy.rounds == (3.0, 1.0) * 4 + (3.0,) and noisy.value == 3.0 and noisy.spread == pytest.approx(2 / 3)
    settles = timing.measure_ratio(scripted([1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0], now),
                                   scripted(itertools.repeat(1.0), now), "cpu", warmup=0, repeats=3, max_repeats=9,
                                   tolerance=0.02, clock=clock)
    assert settles.rounds == (1.0, 1.0, 3.0, 1.0, 1.0)  # the IQR of 5 rounds drops to 0: stop
    assert timing.Ratio((1.0, 1.0, 3.0, 1.0)).error == pytest.approx(0.5 / 2)  # IQR 0.5 / median 1 / sqrt(4)


def test_measure_ratios_times_the_baseline_once_a_round_for_every_ratio():
    now, order = [0.0], []
    clock = lambda: now[0]  # noqa: E731

    def timed(name, durations):
        steps = iter(durations)

        def run():
            order.append(name)
            now[0] += next(steps)

        return run

    ratios = timing.measure_ratios({"a": timed("a", itertools.repeat(2.0)), "b": timed("b", itertools.repeat(3.0))},
                                   timed("plain", itertools.repeat(1.0)), "cpu", warmup=1, repeats=3, clock=clock)
    assert {name: r.rounds for name, r in ratios.items()} == {"a": (2.0,) * 3, "b": (3.0,) * 3}
    # one warm-up each, then the order rotates round by round; plain runs once a round, not once a ratio
    assert order == ["a", "b", "plain", "a", "b", "plain", "b", "plain", "a", "plain", "a", "b"]
    # rounds are added only for the ratio that is unsure: b's rounds read 1, 3, 1, ... up to the cap
    order.clear()
    ratios = timing.measure_ratios({"a": timed("a", itertools.repeat(2.0)),
                                    "b": timed("b", itertools.cycle([1.0, 3.0]))},
                                   timed("plain", itertools.repeat(1.0)), "cpu", warmup=0, repeats=3, max_repeats=7,
                                   tolerance={"a": 0.02, "b": 0.02}, clock=clock)
    assert ratios["a"].rounds == (2.0,) * 3 and ratios["b"].rounds == (1.0, 3.0) * 3 + (1.0,)
    assert order.count("a") == 3 and order.count("b") == order.count("plain") == 7
    assert order[9:] == ["plain", "b", "b", "plain"] * 2  # after round 3: b and plain, still alternating
    with pytest.raises(ValueError, match="at least one"):
        timing.measure_ratios({}, lambda: None, "cpu")


def test_gates_of_one_kind_share_one_measurement_and_are_remeasured_alone(monkeypatch):
    together, alone = [], []
    monkeypatch.setattr(gate, "model_ratios", lambda kind, variants, device, rounds, tolerance: together.append(
        (kind, tuple(variants), tolerance)) or {v: timing.Ratio((1.0 + i,)) for i, v in enumerate(variants)})
    monkeypatch.setattr(gate, "model_ratio", lambda kind, variant, device, rounds, tolerance: alone.append(
        (kind, variant, tolerance)) or timing.Ratio((9.0,)))
    gates = {g.name: g for g in gate.default_gates("cpu", repeats=2)}
    fused = gates["FCN-8s fused / plain fwd+bwd [cpu]"]
    generator = gates["FCN-8s fused+generator / plain fwd+bwd [cpu]"]
    assert fused.measure().value == 1.0 and generator.measure().value == 2.0
    assert together == [("model", ("fused", "fused+generator"), {"fused": 0.025, "fused+generator": 0.025})]
    assert generator.measure().value == 9.0 and alone == [("model", "fused+generator", 0.025)]  # measured again
    assert gates["FCN-8s joint / plain training iteration [cpu]"].measure().value == 2.0
    assert together[-1] == ("step", ("3step", "joint"), {"3step": 0.02, "joint": 0.025})


def test_measure_ratio_rejects_bad_round_counts():
    with pytest.raises(ValueError, match="repeats"):
        timing.measure_ratio(lambda: None, lambda: None, "cpu", repeats=5, max_repeats=3)


@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=30), st.floats(0.1, 10))
def test_ratio_median_and_spread_invariants(rounds, scale):
    ratio = timing.Ratio(tuple(rounds))
    assert min(rounds) <= ratio.value <= max(rounds) and ratio.spread >= 0
    scaled = timing.Ratio(tuple(r * scale for r in rounds))
    assert scaled.value == pytest.approx(ratio.value * scale) and scaled.spread == pytest.approx(ratio.spread, abs=1e-9)
    assert ratio.error == pytest.approx(ratio.spread / len(rounds) ** 0.5)


def test_thread_clock_counts_work_not_waiting():
    assert timing.time_once(lambda: time.sleep(0.1), "cpu", "thread") < 0.05 <= timing.time_once(
        lambda: time.sleep(0.1), "cpu", "wall")


def test_cpu_clocks_are_refused_for_gpu_work_and_unknown_clocks_rejected():
    with pytest.raises(ValueError, match="wall"):
        timing.clock_fn("process", "cuda")
    with pytest.raises(ValueError, match="clock must be one of"):
        timing.clock_fn("cpu", "cpu")


def test_intra_op_threads_restores_the_count():
    before = torch.get_num_threads()
    with timing.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_deliberately_slow_fuse_log_is_correct():
    z = torch.randn(2, 21, 4, 4)
    labels = torch.zeros(2, 21)
    labels[:, [0, 5]] = 1
    torch.testing.assert_close(gate.deliberately_slow_fuse_log(z, labels), gate.fuse_log(z, labels))


def test_fusion_gate_fails_for_slow_fuse_log_and_passes_for_copy_speed():
    def copy_speed(z, labels):  # the copy itself: ratio ~1 whatever the machine's load
        return z.clone()

    fast = gate.default_gates("cpu", fuse_log_impl=copy_speed, shape=SMALL, repeats=5, models=False)
    slow = gate.default_gates("cpu", fuse_log_impl=gate.deliberately_slow_fuse_log, shape=SMALL, repeats=3,
                              models=False)
    assert gate.run_gates(fast, io.StringIO())
    assert not gate.run_gates(slow, io.StringIO())
    assert 0 < fast[0].measure().value <= fast[0].bound


class CompetingLoad:
    """``count`` processes spinning on the CPU until ``seconds`` pass or ``stop()`` is called."""

    def __init__(self, count: int = 2, seconds: float = LOAD_S):
        self.before = children_cpu()
        self.procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)]) for _ in range(count)]

    def stop(self) -> float:
        """Stop the spinners still running and wait for them; the CPU seconds of every child process
        ended since the load started (the spinners, and what the test ran meanwhile)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)
        return children_cpu() - self.before


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def competing_load():
    load = CompetingLoad()
    try:
        yield load
    finally:
        load.stop()


def start_gate(*args: str) -> subprocess.Popen:
    """``benchmarks/gate.py --fusion-only`` on CPU as CI runs it: a fresh process (which re-executes
    itself with ``gate.CHILD_ENV``)."""
    return subprocess.Popen([sys.executable, str(_bench / "gate.py"), "--device", "cpu", "--fusion-only", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_gate_survives_competing_load(competing_load):
    before = children_cpu()
    # both at once: CPU time is immune to the other's load too, and the test takes half as long
    runs = [start_gate(), start_gate("--slow", "--repeats", "1")]  # one round: slow is far over the bound
    try:
        (passing, _), (failing, _) = (run.communicate(timeout=600) for run in runs)
    finally:
        for run in runs:
            run.kill()  # a no-op for a finished run
            run.wait()
    gate_cpu = children_cpu() - before
    spun = competing_load.stop() - gate_cpu
    assert runs[0].returncode == 0, passing
    assert runs[1].returncode == 1 and table_rows(failing)[0][-1] == "FAIL", failing
    # the load really competed: the two spinners got at least half as much CPU as the gates
    assert spun > gate_cpu / 2, (spun, gate_cpu)
