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


# ------------------------------------------------------------------ report.py --write: RESULTS.md from a saved run
def case(group: str, name: str, median: float, params: dict, extra: dict) -> dict:
    """One benchmark as pytest-benchmark saves it (the fields report.py reads, and a few it does not)."""
    return {"group": group, "name": name, "fullname": f"benchmarks/x.py::{name}", "params": params,
            "param": "-".join(map(str, params.values())), "extra_info": extra,
            "options": {"timer": "perf_counter", "rounds": 8, "warmup": False},
            "stats": {"min": median * 0.9, "max": median * 1.2, "median": median, "iqr": median * 0.05, "rounds": 8}}


def fake_run(tmp_path: Path, *, cuda: bool = False) -> Path:
    """A small saved run: the fusion op on CPU (copy and fuse_log, fwd and fwd+bwd), two FCN-8s workloads, the
    synthetic data, a CUDA fusion case if ``cuda``, and a case that failed (no stats)."""
    shape = [8, 21, 320, 320]
    benchmarks = []
    for variant, fwd, bwd in (("copy", 0.0186, 0.0441), ("fuse_log", 0.0199, 0.0476)):
        for backward, median in ((False, fwd), (True, bwd)):
            mode = "fwd_bwd" if backward else "fwd"
            benchmarks.append(case(f"fusion-cpu-float32-{mode}", f"test_fusion[cpu-fp32-{variant}-{mode}]", median,
                                   {"device": "cpu", "dtype": "UNSERIALIZABLE[torch.float32]", "variant": variant,
                                    "backward": backward},
                                   {"copy_ms": 44.1 if backward else 18.6, "GB/s": 6.24 if backward else 5.5,
                                    "ratio_to_copy": round(median / (0.0441 if backward else 0.0186), 3),
                                    "shape": shape}))
    workload = {"model": "fcn8s", "batch": 1, "size": 128}
    for kind, variant, median, ratio in (("model", "plain", 1.234, 1.0), ("step", "3step", 2.91, 2.04)):
        benchmarks.append(case(f"{kind}-cpu-fcn8s-1x128px", f"test_model[cpu-fcn8s-{kind}-{variant}]", median,
                               {"device": "cpu", "arch": "fcn8s", "kind": kind, "variant": variant},
                               {"workload": workload, "peak_MiB": 2399.4, "memory_ratio_to_plain": 1.0,
                                "images_per_s": round(1 / median, 2), "ratio_to_plain": ratio}))
    benchmarks.append(case("data-cpu", "test_synthetic_scenes_64px", 0.125, {},
                           {"size": 64, "items_per_round": 64, "images_per_s": 512.0, "ms_per_image": 1.953}))
    failed = case("model-cpu-tiny-8x128px", "test_model[cpu-tiny-model-plain]", 1.0,
                  {"device": "cpu", "arch": "tiny", "kind": "model", "variant": "plain"}, {})
    failed["stats"] = None
    benchmarks.append(failed)
    if cuda:
        benchmarks.append(case("fusion-cuda-bfloat16-fwd", "test_fusion[cuda-bf16-fuse_log-fwd]", 0.0004,
                               {"device": "cuda", "variant": "fuse_log", "backward": False},
                               {"GB/s": 900.0, "ratio_to_copy": 1.3, "shape": [8, 21, 512, 512]}))
    machine = {"node": "vm", "processor": "x86_64", "python_version": "3.11.9",
               "cpu": {"brand_raw": "AMD EPYC 7B13", "count": 2}, "torch": "2.14.1", "torch_threads": 2,
               "cuda_device": "NVIDIA H100" if cuda else None, "load_average": [7.04, 6.5], "nice": 10}
    data = {"machine_info": machine, "commit_info": {"id": "bbeea0c0ffee", "dirty": True},
            "datetime": "2026-12-07T05:30:00+00:00", "version": "5.3.1", "benchmarks": benchmarks}
    path = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit" / "0007_bbeea0c.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


SECTIONS = ("bench_fusion_cpu", "bench_model_fcn8s_cpu", "bench_model_tiny_cpu", "bench_data_cpu",
            "bench_fusion_cuda")
PROSE = "# Benchmark results\n\nHand-written prose, {n} of it.\n\n"


def results_md(tmp_path: Path, names=SECTIONS) -> Path:
    text = "".join(PROSE.format(n=i) + f"<!-- {name}:begin -->\nold table {i}\n<!-- {name}:end -->\n"
                   for i, name in enumerate(names)) + "\nThe end.\n"
    path = tmp_path / "RESULTS.md"
    path.write_text(text)
    return path


def section(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:begin -->\n")[1].split(f"<!-- {name}:end -->")[0]


def cells(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_write_rewrites_only_the_marked_sections_the_run_holds(tmp_path, monkeypatch, capsys):
    run, results = fake_run(tmp_path), results_md(tmp_path)
    monkeypatch.chdir(tmp_path)  # the newest run under ./.benchmarks, as in the repository
    assert report.main(["--write", "--results", str(results)]) == 0
    assert capsys.readouterr().out == f"wrote bench_fusion_cpu, bench_model_fcn8s_cpu, bench_data_cpu of {results} " \
                                      f"from {Path('.benchmarks/Linux-CPython-3.11-64bit/0007_bbeea0c.json')}\n"
    text = results.read_text()
    # the prose outside the markers, and the sections this run has no cases for, are as they were
    for i, name in enumerate(SECTIONS):
        assert PROSE.format(n=i) + f"<!-- {name}:begin -->" in text
    assert text.endswith("\nThe end.\n")
    assert section(text, "bench_model_tiny_cpu") == "old table 2\n"  # its only case failed
    assert section(text, "bench_fusion_cuda") == "old table 4\n"  # a CPU-only run keeps the GPU table
    fusion = section(text, "bench_fusion_cpu")
    assert "old table" not in fusion
    # where the numbers come from: the file, its date and commit, CPU, torch and load from machine_info
    head = fusion.splitlines()[0]
    for words in ("`python benchmarks/report.py --write`", "0007_bbeea0c.json", "2026-12-07 05:30 UTC",
                  "bbeea0c + uncommitted changes", "AMD EPYC 7B13", "2 logical CPUs", "torch 2.14.1",
                  "Python 3.11.9", "load average 7.0 -> 6.5", "nice 10"):
        assert words in head, (words, head)
    assert "**float32 [8, 21, 320, 320]**" in fusion
    assert cells(fusion, "copy (`x.clone()`, bandwidth limit)") == ["18.6 ms", "1.00", "44.1 ms", "1.00", "6.2"]
    assert cells(fusion, "`fuse_log` (channel-slab kernel)") == ["19.9 ms", "1.07", "47.6 ms", "1.08", "6.2"]
    assert "log_softmax" not in fusion.split("|", 1)[1].replace("masked", "")  # no row for a case not run
    model = section(text, "bench_model_fcn8s_cpu")
    assert "VGG16 FCN-8s, 1 x 3 x 128 x 128" in model
    assert cells(model, "fwd+bwd plain") == ["1.23 s", "0.81", "1.00", "2399", "1.000"]
    assert cells(model, "training step, the paper's 3 steps") == ["2.91 s", "0.34", "2.04", "2399", "1.000"]
    data = section(text, "bench_data_cpu")
    assert cells(data, "`test_synthetic_scenes_64px` (64 items of 64 px a round)") == ["125 ms", "512.0", "1.953"]
    assert max(map(len, text.splitlines())) <= 400  # one line per row
    # the same run written again changes nothing
    assert report.main(["--write", "--results", str(results), str(run)]) == 0
    assert results.read_text() == text


def test_write_fills_the_gpu_table_from_a_gpu_run(tmp_path):
    run, results = fake_run(tmp_path, cuda=True), results_md(tmp_path)
    assert report.write(results, run) == ["bench_fusion_cpu", "bench_model_fcn8s_cpu", "bench_fusion_cuda",
                                          "bench_data_cpu"]
    gpu = section(results.read_text(), "bench_fusion_cuda")
    assert gpu.startswith("*Written by") and "NVIDIA H100, AMD EPYC 7B13" in gpu.splitlines()[0]
    assert "**bfloat16 [8, 21, 512, 512]**" in gpu and cells(gpu, "`fuse_log` (channel-slab kernel)")[:2] == [
        "400 us", "1.30"]


def test_write_without_a_marker_changes_nothing_and_names_it(tmp_path, capsys):
    run = fake_run(tmp_path)
    results = results_md(tmp_path, names=("bench_fusion_cpu", "bench_data_cpu"))
    before = results.read_text()
    assert report.main(["--write", "--results", str(results), str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report.py: error: ") and "bench_model_fcn8s_cpu" in err and len(err.splitlines()) == 1
    assert results.read_text() == before


def test_write_refuses_a_file_that_is_not_a_saved_run(tmp_path, capsys):
    results = results_md(tmp_path)
    before = results.read_text()
    (tmp_path / "other.json").write_text(json.dumps({"machine_info": {}}))
    assert report.main(["--write", "--results", str(results), str(tmp_path / "other.json")]) == 2
    assert "not a saved pytest-benchmark run" in capsys.readouterr().err
    assert results.read_text() == before


def test_the_repository_results_hold_every_marker_once():
    """RESULTS.md itself: every section --write can fill has its markers, once, so a CPU or GPU run can be
    written back."""
    text = (Path(__file__).parents[1] / "benchmarks" / "RESULTS.md").read_text()
    for name in SECTIONS + ("bench_model_fcn8s_cuda", "bench_model_tiny_cuda"):
        assert text.count(f"<!-- {name}:begin -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, name
    assert "python benchmarks/report.py --write" in text
