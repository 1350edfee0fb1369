"""validation/noisy_labels.py: the §3.2 noisy-label experiment, end to end and in parts.

The ``--quick`` model is trained once per module (``quick_run``) into a shared
cache directory; the other end-to-end runs reuse it. ``.ci/run`` runs this
file, so the quick run is the regression gate (oracle > baseline, case2/case3
not above oracle).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from imgpix import noise_experiment as nx
from imgpix import theory

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "validation" / "noisy_labels.py"
REQUIRED_COLUMNS = {"condition", "m", "k", "PA", "MPA", "FWAA", "MIOU"}
FILES = ("table.csv", "table.md", "summary.json", "degradation.png", "run.json")


ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--no-progress"], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args, "--no-progress"], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def by_condition(rows: list[dict]) -> dict[str, dict]:
    return {row["condition"]: row for row in rows}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("imgpix_cache")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("quick") / "out"
    result = run_cli("--quick", "--out", str(out), "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture(scope="module")
def cli():
    """The script's module, for fast in-process argument checks."""
    spec = importlib.util.spec_from_file_location("noisy_labels_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ end to end


def test_quick_writes_files_and_orders_conditions(quick_run):
    out, result = quick_run
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_table(out / "table.csv")
    assert REQUIRED_COLUMNS <= set(rows[0])
    table = by_condition(rows)
    assert set(nx.CONDITIONS) <= set(table)
    miou = {name: float(row["MIOU"]) for name, row in table.items()}
    assert miou["oracle"] > miou["baseline"]
    assert miou["case2"] <= miou["oracle"]
    assert miou["case3"] <= miou["oracle"]
    assert table["case1"]["m"] == "3" and table["case2"]["k"] == "1" and table["case3"]["m"] == "3"
    assert float(table["oracle"]["theory_degradation_nats"]) == 0.0
    assert "| oracle |" in result.stdout and "| case3 |" in result.stdout  # prints the Markdown table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 0 and summary["device"] == "cpu"
    assert {"torch", "numpy", "python"} <= set(summary["versions"])
    assert summary["timings"]["total_s"] > 0
    assert all(summary["checks"].values())
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_out_is_not_overwritten_without_force(quick_run, cache):
    out, _ = quick_run
    before = {name: (out / name).read_bytes() for name in FILES}
    result = run_cli("--quick", "--out", str(out), "--cache-dir", str(cache))
    assert result.returncode == 2
    assert "--force" in result.stderr and str(out) in result.stderr
    assert {name: (out / name).read_bytes() for name in FILES} == before


def test_force_rerun_with_warm_cache_gives_the_same_table(quick_run, cache):
    out, _ = quick_run
    before = (out / "table.csv").read_text()
    result = run_cli("--quick", "--out", str(out), "--cache-dir", str(cache), "--force")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model: cached" in result.stderr
    assert (out / "table.csv").read_text() == before
    assert json.loads((out / "summary.json").read_text())["model"]["cache_hit"] is True


@pytest.mark.slow
def test_same_seed_cold_training_gives_identical_table(quick_run, tmp_path):
    """Same seed, same CPU -> identical table, training included (a second, separate cache)."""
    out, _ = quick_run
    result = run_cli("--quick", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model: training" in result.stderr
    assert (tmp_path / "out" / "table.csv").read_text() == (out / "table.csv").read_text()


def test_sweep_and_tau_sweep_resume_after_interruption(quick_run, cache, tmp_path):
    out = tmp_path / "sweep"
    args = ("--quick", "--sweep", "--tau-sweep", "--m-grid", "0,2", "--k-grid", "1,all", "--out", str(out),
            "--cache-dir", str(cache))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["m0_k1.json", "m0_kall.json", "m2_k1.json", "m2_kall.json"]
    for name in ("sweep.csv", "sweep_heatmaps.png", "tau_sweep.csv", "tau_sweep.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert -1.0 <= summary["sweep"]["spearman"] <= 1.0
    assert summary["sweep"]["cells_computed_this_run"] == 4
    assert summary["tau_sweep"]["best_tau"] in nx.TAUS
    assert "Spearman" in first.stdout and "best tau" in first.stdout
    taus = read_table(out / "tau_sweep.csv")
    assert [float(r["tau"]) for r in taus] == list(nx.TAUS)
    baseline = float(by_condition(read_table(out / "table.csv"))["baseline"]["MIOU"])
    assert math.isclose(float(taus[0]["MIOU"]), baseline, abs_tol=1e-3)  # tau = 0 keeps every class
    # the oracle cell is the oracle row, and the main table's case rows are sweep cells
    sweep = {(r["m"], r["k"]): r for r in read_table(out / "sweep.csv")}
    assert float(sweep[("0", "all")]["MIOU_drop"]) == 0.0
    merged = (out / "sweep.csv").read_text()

    # An interruption leaves finished cells (written atomically) and no summary.json.
    (out / "cells" / "m2_k1.json").unlink()
    for name in ("summary.json", "sweep.csv", "tau_sweep.csv"):
        (out / name).unlink()
    (out / "cells" / ".m2_k1.json.123.tmp").write_text("{torn")  # a partial write from the killed run
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stderr
    assert json.loads((out / "summary.json").read_text())["sweep"]["cells_computed_this_run"] == 1
    assert (out / "sweep.csv").read_text() == merged
    # finished now: the same command refuses to overwrite it
    assert run_cli(*args).returncode == 2


SHARD_GRID = ("--quick", "--sweep", "--tau-sweep", "--m-grid", "0,2,5", "--k-grid", "1,all")
MERGED_FILES = ("table.csv", "table.md", "sweep.csv", "tau_sweep.csv", "sweep_heatmaps.png", "degradation.png")


def test_sharded_sweep_merges_to_the_unsharded_outputs(quick_run, cache, tmp_path, cli, capsys):
    """2 concurrent shards (one --out) + --merge == the unsharded sweep, byte for byte (same seed, same CPU)."""
    grid = (*SHARD_GRID, "--cache-dir", str(cache))
    whole = run_cli(*grid, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    sharded = tmp_path / "sharded"
    shards = [start_cli(*grid, "--out", str(sharded), "--shard", f"{i}/2") for i in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in shards]
    for proc, (stdout, stderr) in zip(shards, outputs):
        assert proc.returncode == 0, stderr[-3000:]
        assert "--merge" in stdout
    assert not (sharded / "summary.json").exists() and not (sharded / "sweep.csv").exists()  # cells only
    owned = [set(line.split("): ", 1)[1].split(", ")) for line in (out.splitlines()[0] for out, _ in outputs)]
    assert owned == [{"m0_k1", "m2_k1", "m5_k1"}, {"m0_kall", "m2_kall", "m5_kall"}]  # cells [i::2], disjoint
    assert sorted(p.name for p in (sharded / "cells").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole" / "cells").iterdir())

    # --merge refuses to run while a cell is missing, listing it, and changes nothing
    partial = tmp_path / "partial"
    shutil.copytree(sharded, partial)
    for name in ("m2_k1.json", "m5_kall.json"):
        (partial / "cells" / name).unlink()
    before = sorted(p.relative_to(partial) for p in partial.rglob("*"))
    assert cli.main([*grid, "--out", str(partial), "--merge", "--no-progress"]) == 2  # fails before the model
    err = capsys.readouterr().err
    assert "2 of 6 sweep cells missing" in err and "m2_k1, m5_kall" in err
    assert sorted(p.relative_to(partial) for p in partial.rglob("*")) == before

    merged = run_cli(*grid, "--out", str(sharded), "--merge")
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "model: cached" in merged.stderr
    for name in MERGED_FILES:
        assert (sharded / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    for cell in (tmp_path / "whole" / "cells").iterdir():
        assert (sharded / "cells" / cell.name).read_text() == cell.read_text(), cell.name
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((sharded / "summary.json").read_text())
    assert a["table"] == b["table"] and a["tau_sweep"] == b["tau_sweep"]
    assert (a["sweep"]["cells_computed_this_run"], b["sweep"]["cells_computed_this_run"]) == (6, 0)
    assert b["sweep"]["merge_only"] is True
    ignore = ("cells_computed_this_run", "merge_only")
    assert {k: v for k, v in a["sweep"].items() if k not in ignore} == {
        k: v for k, v in b["sweep"].items() if k not in ignore}
    assert merged.stdout.splitlines()[-3] == whole.stdout.splitlines()[-3]  # the Spearman line


def test_concurrent_cold_starts_train_the_cache_entry_once(tmp_path):
    """Two processes released together on an empty cache: one trains, the other waits on the lock and loads."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from imgpix import noise_experiment as nx\n"
        "cache, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])\n"
        "tcfg = nx.train_config(nx.ExperimentConfig(quick=True, epochs=1, num_train=16))\n"
        "ready.touch()\n"
        "while not go.exists():\n"
        "    time.sleep(0.01)\n"
        "model, _, info = nx.trained_model(tcfg, cache, lambda text: print(text, flush=True))\n"
        "print('entry', info.path, info.cache_hit, info.epochs)\n")
    cache, go = tmp_path / "cache", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache), str(tmp_path / f"ready{i}"), str(go)],
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a process did not start"
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs):
        assert proc.returncode == 0, stderr[-3000:]
    stdouts = [stdout for stdout, _ in outs]
    assert sum("model: training" in s for s in stdouts) == 1
    assert sum("model: cached" in s for s in stdouts) == 1
    entries = {line.split()[1] for s in stdouts for line in s.splitlines() if line.startswith("entry ")}
    assert len(entries) == 1  # same checkpoint, loadable after both finished
    model, saved, state = nx.load_checkpoint(entries.pop())
    assert state["epoch"] == 1 and saved.num_train == 16


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("argv, bound", [
    (["--m", "21"], "0 <= m <= N - 1 = 20"),
    (["--m", "-1"], "0 <= m <= N - 1 = 20"),
    (["--k", "0"], "1 <= k <= N = 21"),
    (["--k", "22"], "1 <= k <= N = 21"),
    (["--tau", "1.5"], "0 <= tau <= 1"),
    (["--tau", "-0.1"], "0 <= tau <= 1"),
    (["--m-grid", "0,30"], "0 <= m <= N - 1 = 20"),
    (["--k-grid", "1,0"], "1 <= k <= N = 21"),
    (["--sweep", "--out", "x", "--shard", "2/2"], "0 <= i < n"),
    (["--sweep", "--out", "x", "--shard", "-1/2"], "0 <= i < n"),
    (["--sweep", "--out", "x", "--shard", "0/0"], "0 <= i < n"),
    (["--sweep", "--out", "x", "--shard", "1"], "0 <= i < n"),
    (["--sweep", "--out", "x", "--shard", "a/b"], "0 <= i < n"),
    (["--out", "x", "--shard", "0/2"], "--shard needs --sweep"),
    (["--sweep", "--shard", "0/2"], "--shard needs --out"),
    (["--sweep", "--out", "x", "--shard", "0/2", "--merge"], "separate steps"),
    (["--sweep", "--out", "x", "--shard", "0/2", "--force"], "--force cannot be combined with --shard"),
    (["--out", "x", "--merge"], "--merge needs --sweep"),
    (["--sweep", "--merge"], "--merge needs --out"),
    (["--checkpoint", "x.pt", "--epochs", "3"], "not with --checkpoint"),
    (["--checkpoint", "x.pt", "--generator"], "not with --checkpoint"),
    (["--data", "voc", "--root", "x", "--num-val", "4"], "not with --data voc"),
])
def test_invalid_values_exit_2_naming_the_bound(cli, capsys, argv, bound):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert bound in capsys.readouterr().err


def test_invalid_m_through_the_real_cli():
    result = run_cli("--m", "25", timeout=120)
    assert result.returncode == 2
    assert "0 <= m <= N - 1 = 20" in result.stderr


def test_missing_voc_root_names_the_layout(cli, capsys, tmp_path):
    code = cli.main(["--data", "voc", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert "VOCdevkit/VOC2012/JPEGImages" in err and "SegmentationClass" in err
    assert not (tmp_path / "cache").exists()  # failed before any training


def test_voc_without_root_exits_2(cli, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--data", "voc"])
    assert info.value.code == 2
    assert "--root" in capsys.readouterr().err


# ------------------------------------------------------------------ parts


def test_theory_columns_match_the_equations():
    N = nx.N
    n = np.array([2, 3, 4])
    oracle_cond = nx.Condition("oracle", "oracle", 0, None)
    cols = nx.theory_columns(oracle_cond, n, n, n, np.zeros(3, int))
    assert cols["theory_nats"] == pytest.approx(np.mean([theory.removed_information(N, x) for x in n]), abs=1e-4)
    assert cols["theory_degradation_nats"] == 0.0
    base = nx.theory_columns(nx.Condition("baseline", "none"), n, np.full(3, N), n, N - n)
    assert base["theory_nats"] == 0.0 and base["theory_removed_nats"] == 0.0
    assert base["theory_degradation_nats"] == pytest.approx(np.mean(np.log(N / n)), abs=1e-4)
    m = np.array([3, 3, 3])
    c1 = nx.theory_columns(nx.Condition("case1", "noisy", 3, None), n, n + m, n, m)
    assert c1["theory_nats"] == pytest.approx(np.mean(theory.case1_removed(N, n, m)), abs=1e-4)
    assert c1["theory_outlier_nats"] == pytest.approx(np.mean(np.log((n + m) / n)), abs=1e-4)
    assert c1["theory_lost_nats"] == 0.0
    k = np.ones(3, int)
    c2 = nx.theory_columns(nx.Condition("case2", "noisy", 0, 1), n, k, k, np.zeros(3, int))
    assert c2["theory_nats"] == pytest.approx(np.mean(theory.case2_lost(n, 1)), abs=1e-4)
    assert c2["theory_removed_nats"] == pytest.approx(math.log(N), abs=1e-4)
    c3 = nx.theory_columns(nx.Condition("case3", "noisy", 3, 1), n, k + m, k, m)
    assert c3["theory_nats"] == pytest.approx(theory.case3_outlier(3, 1), abs=1e-4)
    assert c3["theory_degradation_nats"] == pytest.approx(
        theory.case3_outlier(3, 1) + np.mean(np.log(n)), abs=1e-4)


def test_noise_is_seeded_per_cell_and_reproducible():
    oracle = torch.zeros(8, nx.N, dtype=torch.bool)
    oracle[:, 0] = True
    oracle[torch.arange(8), torch.arange(1, 9)] = True
    runs = []
    for _ in range(2):
        cond = nx.noisy("case3", 3, 1, seed=5)
        cond.reset()
        runs.append(cond.labels(oracle, None))
    assert torch.equal(runs[0], runs[1])
    assert (runs[0].sum(1) == 4).all() and ((runs[0] & oracle).sum(1) == 1).all()
    protected = nx.noisy("case2", 0, 1, seed=5, protected=(0,))
    protected.reset()
    assert protected.labels(oracle, None)[:, 0].all()
    assert nx.noise_seed(0, 3, 1) != nx.noise_seed(1, 3, 1) != nx.noise_seed(0, 3, None)


def test_prepare_out_rules(tmp_path):
    cfg = nx.ExperimentConfig(quick=True)
    out, resumed = nx.prepare_out(tmp_path / "a", cfg, False, tmp_path)
    assert not resumed and out.is_dir()
    nx.write_json(out / "run.json", {"config": cfg.identity()})
    assert nx.prepare_out(out, cfg, False, tmp_path) == (out, True)  # unfinished, same config
    with pytest.raises(nx.ExperimentError, match="--force"):
        nx.prepare_out(out, nx.ExperimentConfig(quick=True, m=2), False, tmp_path)
    (out / "summary.json").write_text("{}")
    (out / "mine.txt").write_text("user file")
    with pytest.raises(nx.ExperimentError):
        nx.prepare_out(out, cfg, False, tmp_path)
    assert nx.prepare_out(out, cfg, True, tmp_path) == (out, False)
    assert not (out / "summary.json").exists() and (out / "mine.txt").exists()  # --force removes only ours
    # without --out, the newest unfinished run of the same configuration is resumed
    root = tmp_path / "results"
    (root / "20990101-000000").mkdir(parents=True)
    nx.write_json(root / "20990101-000000" / "run.json", {"config": cfg.identity()})
    assert nx.prepare_out(None, cfg, False, root) == (root / "20990101-000000", True)
    fresh, resumed = nx.prepare_out(None, nx.ExperimentConfig(quick=True, seed=3), False, root)
    assert not resumed and fresh.parent == root and fresh.name != "20990101-000000"


def test_shard_cells_split_the_grid():
    cells = nx.sweep_cells(nx.ExperimentConfig(quick=True))
    for count in (1, 2, 3, 4, len(cells), len(cells) + 2):
        shards = [nx.shard_cells(cells, i, count) for i in range(count)]
        flat = [c for shard in shards for c in shard]
        assert len(flat) == len(cells) and set(flat) == set(cells)  # disjoint, together the whole grid
        assert shards == [nx.shard_cells(cells, i, count) for i in range(count)]  # deterministic
    with pytest.raises(ValueError, match="0 <= i < n"):
        nx.shard_cells(cells, 2, 2)


def test_cache_key_covers_the_full_training_config():
    a = nx.train_config(nx.ExperimentConfig(quick=True))
    b = nx.train_config(nx.ExperimentConfig(quick=True, seed=1))
    c = nx.train_config(nx.ExperimentConfig(quick=True, m=5, k=2))  # evaluation-only settings
    assert nx.config_key(a) != nx.config_key(b)
    assert nx.config_key(a) == nx.config_key(c)
