"""benchmarks/report.py: the benchmarks' answers (ratio to baseline, throughput, memory) in one narrow table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).parents[1] / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def saved_run(tmp_path: Path) -> Path:
    benchmarks = [
        {"name": "test_model_fwd_bwd[cpu-tiny-fused+generator]" + "x" * 60, "stats": {"median": 0.0125},
         "extra_info": {"images_per_s": 640.0, "ratio_to_plain": 1.84, "peak_MiB": 212.5}},
        {"name": "test_fuse_log[cpu-fwd_bwd]", "stats": {"median": 0.5},
         "extra_info": {"GB/s": 3.1, "ratio_to_copy": 2.29}},
        {"name": "test_synthetic_scenes_64px", "stats": {"median": 2.5}, "extra_info": {"images_per_s": 25.5}},
    ]
    path = tmp_path / "0001_run.json"
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "AMD EPYC"}}, "benchmarks": benchmarks}))
    return path


def test_each_case_against_its_own_baseline(tmp_path):
    text = report.from_json(saved_run(tmp_path))
    lines = text.splitlines()
    assert lines[0].endswith("0001_run.json: AMD EPYC")
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[3:]}
    fused = next(v for k, v in cells.items() if k.endswith("x" * 10))
    assert fused == ["12.50", "1.84", "plain", "640", "", "212.5"]
    assert cells["test_fuse_log[cpu-fwd_bwd]"] == ["500.00", "2.29", "copy", "", "3.1", ""]
    assert cells["test_synthetic_scenes_64px"] == ["2500.00", "", "", "25.5", "", ""]
    assert max(map(len, lines[1:])) < 120


def test_no_saved_run_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report.main([]) == 2
    assert capsys.readouterr().err.startswith("report.py: error: no saved benchmark run under .benchmarks")
