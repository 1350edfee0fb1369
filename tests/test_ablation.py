"""validation/ablation.py and imgpix.experiments.ablation: update matching, the argmax identity of the
addition fusion, an end-to-end run through the command line, resume / --force, bad arguments."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from runs import default_sigint

from imgpix.data.loaders import build_loader
from imgpix.experiments import ablation
from imgpix.fusion import fuse, fused_log_probs
from imgpix.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "validation" / "ablation.py"
ENV = {**os.environ, "PYTHONHASHSEED": "0"}
TINY = ("--quick", "--seeds", "2", "--epochs", "1", "--num-train", "16", "--num-val", "8", "--no-progress")
ITERATIONS = 16 // ablation.PRESETS["quick"]["batch_size"]  # per epoch, in the TINY run


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, text=True, capture_output=True,
                          timeout=600)


# -- matched segmenter updates ----------------------------------------------------------------------


def test_every_variant_is_planned_to_the_same_segmenter_updates():
    cfg = ablation.AblationConfig(quick=True, epochs=3)
    iterations = cfg.budget["num_train"] // cfg.budget["batch_size"]
    for variant in ablation.VARIANTS:
        tcfg = ablation.plan(cfg, variant, seed=0)
        assert tcfg.epochs * iterations * tcfg.updates_per_iteration == 2 * 3 * iterations, variant
    assert ablation.plan(cfg, "baseline", 0).epochs == 2 * ablation.plan(cfg, "generator", 0).epochs


@pytest.mark.parametrize("variant", list(ablation.VARIANTS))
def test_updates_per_iteration_counts_the_segmenter_optimiser_steps(variant, one_thread):
    """The planning rule against the trainer: count ``seg_opt.step`` calls of one real iteration."""
    tcfg = ablation.plan(ablation.AblationConfig(quick=True, num_train=8), variant, seed=0, progress=False)
    trainer = Trainer(tcfg)
    steps = []
    original = trainer.seg_opt.step
    trainer.seg_opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    image, mask = next(iter(build_loader(tcfg, "train", shuffle=True, epoch=1)))
    trainer.iteration(image, mask)
    assert len(steps) == tcfg.updates_per_iteration == (2 if variant in ("generator", "full",
                                                                                   "discriminator") else 1)


def test_configuration_errors_name_the_problem():
    with pytest.raises(ValueError, match="seeds"):
        ablation.AblationConfig(seeds=1)
    with pytest.raises(ValueError, match="num_train"):
        ablation.AblationConfig(num_train=4)
    with pytest.raises(ValueError, match="jobs"):
        ablation.run(ablation.AblationConfig(quick=True), jobs=0)


# -- Table 3: addition and dot fusion pick the same class -------------------------------------------


@st.composite
def logits_and_labels(draw):
    """Bounded logits [1, N, H, W] and binary labels [N] with at least one class."""
    n = draw(st.integers(2, 8))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    logits = draw(arrays(np.float64, (1, n, h, w), elements=st.floats(-20, 20, allow_subnormal=False)))
    labels = draw(arrays(np.bool_, (n,)))
    labels[draw(st.integers(0, n - 1))] = True
    return torch.from_numpy(logits), torch.from_numpy(labels)


def restricted_argmax(probs: torch.Tensor, labels: torch.Tensor, resolution: float) -> torch.Tensor:
    """argmax of P over the labelled classes. ``assume``s what floating point needs for the identity: the
    labelled maximum exceeds ``resolution`` (the rounding of 1 + P), and every other labelled probability
    equals it or lies more than ``resolution`` below it."""
    restricted = probs.masked_fill(~labels[None, :, None, None], float("-inf"))
    top = restricted.max(dim=1, keepdim=True).values
    gap = (top - probs)[:, labels]
    assume(bool((top > resolution).all() and ((gap == 0) | (gap > resolution)).all()))
    return restricted.argmax(1)


@given(logits_and_labels())
def test_addition_argmax_equals_argmax_of_p_restricted_to_the_labels(case):
    """argmax (P + L) / (1 + n) = argmax_{c in L} P_c for binary L with n >= 1 classes, since
    P_c + 1 > 1 >= P_u for c in L, u not in L (exact in real numbers; float64 rounds 1 + P at 2.2e-16)."""
    logits, labels = case
    probs = torch.softmax(logits, dim=1)
    expected = restricted_argmax(probs, labels, 1e-12)
    assert torch.equal(fuse(probs, labels, mode="add").argmax(1), expected)


@given(logits_and_labels())
def test_addition_and_dot_fusion_of_float32_logits_pick_the_same_class(case):
    """The path of Table 3's 'addition at test' row: :func:`fused_log_probs` on float32 logits."""
    logits, labels = case
    logits = logits.float()
    expected = restricted_argmax(torch.softmax(logits, dim=1), labels, 1e-6)
    assert torch.equal(fused_log_probs(logits, labels, "add").argmax(1), expected)
    assert torch.equal(fused_log_probs(logits, labels, "dot").argmax(1), expected)


# -- plots use the table's row names ----------------------------------------------------------------


def test_learning_curve_legend_names_every_variant_by_its_row():
    history = pd.DataFrame([{"variant": v, "seed": s, "epoch": e, "updates": 4 * e, "MIOU": float(e + s)}
                            for v in ablation.VARIANTS for s in range(2) for e in range(1, 4)])
    shown = {}

    class Capture:  # stands in for the run's outputs registry
        def save_figure(self, name, fig):
            shown["labels"] = [text.get_text() for ax in fig.axes for text in ax.get_legend().get_texts()]

    ablation.plot_learning_curves(history, Capture())
    table_rows = {row.name for _, rows in ablation.TABLES.values() for row in rows}
    assert sorted(shown["labels"]) == sorted(ablation.curve_name(v) for v in ablation.VARIANTS)
    assert set(shown["labels"]) <= table_rows


def test_plateau_change_is_the_last_quarter_minus_the_third():
    history = pd.DataFrame([{"variant": "baseline", "seed": s, "epoch": e, "updates": e, "MIOU": float(v)}
                            for s in range(2) for e, v in enumerate([0, 10, 20, 30, 40, 44, 46, 46], start=1)])
    found = ablation.plateau(history).iloc[0]
    assert found["last_quarter_change"] == pytest.approx(46 - 42)
    assert found["final_val_MIOU"] == 46 and found["updates"] == 8


# -- end to end through the command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ablation")
    done = run_cli(*TINY, "--jobs", "2", "--device", "cpu", "--out", str(base / "out"), "--cache-dir",
                   str(base / "cache"))
    return base, done


def _table(out: Path, key: str) -> list[dict]:
    with (out / f"{key}.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_quick_run_writes_every_output_with_matched_updates(quick_run):
    base, done = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    out = base / "out"
    for name in ("table1.csv", "table1.md", "table2.csv", "table2.md", "table3.csv", "table3.md", "curves.csv",
                 "learning_curves.png", "tables.png", "summary.json", "run.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))
    updates = {int(r["updates"]) for key in ablation.TABLES for r in _table(out, key)}
    assert updates == {2 * 1 * ITERATIONS}  # measured by the trainer, equal for every row
    summary = json.loads((out / "summary.json").read_text())
    assert {v: summary["variants"][v]["epochs"] for v in ("baseline", "generator")} == {"baseline": 2, "generator": 1}
    assert "### Table 2" in done.stdout and "paper" in done.stdout


def test_quick_run_tables_hold_the_paper_and_the_paired_tests(quick_run):
    out = quick_run[0] / "out"
    table2 = {r["row"]: r for r in _table(out, "table2")}
    rows = ("baseline", "+ discriminator", "+ generator")
    assert [float(table2[r]["paper_MIOU"]) for r in rows] == [59.4, 60.6, 63.8]
    assert float(table2["+ generator"]["paper_delta"]) == pytest.approx(4.4)
    for row in (table2["+ discriminator"], table2["+ generator"]):
        assert row["sign_agrees"] == ("yes" if float(row["delta"]) > 0 else "no")
        assert float(row["delta_ci_low"]) <= float(row["delta"]) <= float(row["delta_ci_high"])
        assert 0 < float(row["p_images"]) <= 1 and int(row["seeds"]) == 2
    table1 = {r["row"]: r for r in _table(out, "table1")}
    assert table1["baseline"]["MIOU"] == table2["baseline"]["MIOU"]  # one trained baseline, shown twice


def test_addition_applied_to_the_dot_trained_net_predicts_what_dot_predicts(quick_run):
    table3 = {r["row"]: r for r in _table(quick_run[0] / "out", "table3")}
    same = table3["addition at test, dot-trained net"]
    assert float(same["agree_%"]) == 100.0 and float(same["delta"]) == 0.0
    assert same["MIOU"] == table3[ablation.DOT]["MIOU"]


def test_docs_head_says_what_the_command_computed_and_where(quick_run):
    """The README's measured-by line: the CPU, and whether the command trained cells or only rewrote outputs."""
    from imgpix.experiments.report import cpu_name

    summary = json.loads((quick_run[0] / "out" / "summary.json").read_text())
    head = ablation.docs_markdown(summary, "--quick").splitlines()[0]
    assert head.startswith("Measured by `python validation/ablation.py --quick` ")
    assert f", {cpu_name()}, torch " in head
    assert f"this command computed {2 * len(ablation.VARIANTS)} cells in " in head
    summary["timings"]["cells_computed"] = 0
    assert "this command rewrote the outputs from the saved cells in " in ablation.docs_markdown(summary, "--quick")


def test_rerun_resume_and_force(quick_run):
    base, done = quick_run
    assert done.returncode == 0
    out, cache = base / "out", base / "cache"
    again = run_cli(*TINY, "--jobs", "1", "--out", str(out), "--cache-dir", str(cache))
    assert again.returncode == 0 and "rewriting the outputs of the finished run" in again.stderr
    assert json.loads((out / "summary.json").read_text())["timings"]["cells_computed"] == 0
    (out / "summary.json").unlink()
    ablation.cell_path(out, "add", 1).unlink()
    resumed = run_cli(*TINY, "--jobs", "1", "--out", str(out), "--cache-dir", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the unfinished run" in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings"]["cells_computed"] == 1
    assert summary["variants"]["add"]["cache_hits"] == [False, True]  # seed 1's cell: recomputed from the cache
    (out / "summary.json").unlink()  # unfinished again, but another configuration asks for it: refused
    other = run_cli(*TINY[:-1], "--seeds", "3", "--out", str(out), "--cache-dir", str(cache), "--no-progress")
    assert other.returncode == 2 and "already exists" in other.stderr and not ablation.cell_path(out, "add", 2).exists()
    (out / "keep.txt").write_text("not ours")
    forced = run_cli(*TINY, "--jobs", "1", "--force", "--out", str(out), "--cache-dir", str(cache))
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["timings"]["cells_computed"] == 2 * len(ablation.VARIANTS)
    assert (out / "keep.txt").read_text() == "not ours"


@pytest.mark.parametrize("args, words", [
    (("--seeds", "1"), "--seeds"), (("--seeds", "x"), "--seeds"), (("--epochs", "0"), "--epochs"),
    (("--image-size", "8"), "--image-size"), (("--jobs", "0"), "--jobs"), (("--num-train", "4"), "num_train"),
    (("--bogus",), "unrecognized"), (("--device", "gpu0"), "gpu0"), (("--device", "cuda:99"), "cuda:99"),
    (("--scene-preset", "bogus"), "bogus"), (("--threads", "0"), "--threads"),
])
def test_bad_arguments_exit_2_with_one_line(args, words, tmp_path):
    done = run_cli("--quick", "--no-progress", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path), *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_exits_2(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    done = run_cli("--quick", "--no-progress", "--out", str(target), "--cache-dir", str(tmp_path))
    assert done.returncode == 2 and "not a directory" in done.stderr and "Traceback" not in done.stderr


# -- start-up, output folders and locks through the script ----------------------------------------------




def one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert done.returncode == code, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert all(word in lines[0] for word in words), lines[0]


def test_unwritable_out_or_cache_is_refused_in_one_line(tmp_path, read_only_dir):
    one_line(run_cli("--quick", "--no-progress", "--out", str(read_only_dir / "out"), "--cache-dir",
                     str(tmp_path / "cache")), 2, "--out", "cannot write")
    one_line(run_cli("--quick", "--no-progress", "--out", str(tmp_path / "out"), "--cache-dir",
                     str(read_only_dir / "cache")), 2, "--cache-dir", "cannot write")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_second_run_into_a_live_runs_out_is_refused(tmp_path):
    from imgpix.lock import LOCK_NAME, OutputLock

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        one_line(run_cli(*TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")), 2, str(out),
                 f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_ctrl_c_during_start_up_exits_130_in_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, str(SCRIPT), *TINY, "--out", str(tmp_path / "out"), "--cache-dir",
                                str(tmp_path / "cache")], cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=default_sigint)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    one_line(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), 130, "interrupted")
