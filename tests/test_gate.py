"""The performance gate's logic (benchmarks/gate.py), not this machine's speed.

Small tensors and few repeats keep it fast; the "passes" side uses a stand-in
as fast as the copy it is compared with, the "fails" side the deliberately
slow ``fuse_log`` that ``gate.py --slow`` demonstrates.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("bench_gate", Path(__file__).resolve().parents[1] / "benchmarks" / "gate.py")
gate = sys.modules["bench_gate"] = importlib.util.module_from_spec(_spec)  # dataclasses look modules up here
_spec.loader.exec_module(gate)

SMALL = (2, 21, 64, 64)


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")] for line in text.strip().splitlines()[2:]]


def test_run_gates_passes_at_and_below_bound_and_fails_above():
    out = io.StringIO()
    ok = gate.run_gates([gate.Gate("below", lambda: 1.5, 4.0), gate.Gate("equal", lambda: 4.0, 4.0)], out)
    assert ok
    assert table_rows(out.getvalue()) == [["below", "1.50", "4.00", "ok"], ["equal", "4.00", "4.00", "ok"]]
    out = io.StringIO()
    assert not gate.run_gates([gate.Gate("fast", lambda: 1.0, 4.0), gate.Gate("slow", lambda: 4.01, 4.0)], out)
    assert out.getvalue().splitlines()[0].split(" | ")[:3] == ["name", "measured ratio", "bound"]
    assert table_rows(out.getvalue())[1][-1] == "FAIL"


def test_a_ratio_over_the_bound_is_remeasured_once():
    noisy = iter([4.2, 3.9])  # one noisy median, then back within the bound
    out = io.StringIO()
    assert gate.run_gates([gate.Gate("noisy", lambda: next(noisy), 4.0)], out)
    assert table_rows(out.getvalue()) == [["noisy", "4.20 then 3.90", "4.00", "ok"]]
    calls = []
    out = io.StringIO()
    assert not gate.run_gates([gate.Gate("slow", lambda: calls.append(1) or 4.5, 4.0)], out)
    assert len(calls) == 2 and table_rows(out.getvalue())[0][1:] == ["4.50 then 4.50", "4.00", "FAIL"]


def test_deliberately_slow_fuse_log_is_correct():
    z = torch.randn(2, 21, 4, 4)
    labels = torch.zeros(2, 21)
    labels[:, [0, 5]] = 1
    torch.testing.assert_close(gate.deliberately_slow_fuse_log(z, labels), gate.fuse_log(z, labels))


def test_fusion_gate_fails_for_slow_fuse_log_and_passes_for_copy_speed():
    def copy_speed(z, labels):  # the copy itself: ratio ~1 whatever the machine's load
        return z.clone()

    fast = gate.default_gates("cpu", fuse_log_impl=copy_speed, shape=SMALL, repeats=5, models=False)
    slow = gate.default_gates("cpu", fuse_log_impl=gate.deliberately_slow_fuse_log, shape=SMALL, repeats=3, models=False)
    assert gate.run_gates(fast, io.StringIO())
    assert not gate.run_gates(slow, io.StringIO())
    assert 0 < fast[0].measure_ratio() <= gate.FUSION_BOUND["cpu"]


def test_main_exit_code_for_slow_demo():
    out = io.StringIO()
    assert gate.main(["--device", "cpu", "--slow", "--fusion-only", "--shape", "2,21,64,64", "--repeats", "3"], out) == 1
    assert "FAIL" in out.getvalue()


def test_main_rejects_non_positive_repeats():
    with pytest.raises(SystemExit):
        gate.main(["--device", "cpu", "--repeats", "0"], io.StringIO())


def test_main_rejects_missing_device():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(SystemExit):
        gate.main(["--device", "cuda"], io.StringIO())
