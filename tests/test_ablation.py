"""validation/ablation.py and imgpix.experiments.ablation: update matching, the argmax identity of the
addition fusion, an end-to-end run through the command line, resume / --force, bad arguments."""

from __future__ import annotations

import csv
import importlib.util
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
POINTS = sum(len(grid) for _, grid, _ in ablation.TUNING.values())  # tuning runs


@pytest.fixture(scope="module")
def script_main():
    """``validation/ablation.py``'s ``main`` called in this process: its exit status (argparse's too), with the
    SIGTERM handler it installs put back."""
    spec = importlib.util.spec_from_file_location("ablation_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def call(*args: str) -> int:
        handler = signal.getsignal(signal.SIGTERM)
        try:
            return module.main(list(args))
        except SystemExit as stop:
            return stop.code
        finally:
            signal.signal(signal.SIGTERM, handler)

    return call


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, text=True, capture_output=True,
                          timeout=600)


# -- matched segmenter updates ----------------------------------------------------------------------


def test_every_variant_is_planned_to_the_same_segmenter_updates_or_epochs():
    cfg = ablation.AblationConfig(quick=True, epochs=3)
    iterations = cfg.budget["num_train"] // cfg.budget["batch_size"]
    for variant in ablation.VARIANTS:
        tcfg = ablation.plan(cfg, variant, seed=0)
        if variant in ablation.EPOCH_MATCHED:  # the baseline's epochs (images seen, iterations): twice the updates
            assert tcfg.epochs == 2 * 3 and tcfg.updates_per_iteration == 2, variant
        else:
            assert tcfg.epochs * iterations * tcfg.updates_per_iteration == 2 * 3 * iterations, variant
    assert ablation.plan(cfg, "baseline", 0).epochs == 2 * ablation.plan(cfg, "generator", 0).epochs
    assert ablation.plan(cfg, "generator_epochs", 0).epochs == ablation.plan(cfg, "baseline", 0).epochs


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
    assert len(steps) == tcfg.updates_per_iteration == (2 if variant in ("generator", "generator_epochs", "full",
                                                                                   "discriminator") else 1)


def test_configuration_errors_name_the_problem():
    with pytest.raises(ValueError, match="seeds"):
        ablation.AblationConfig(seeds=1)
    with pytest.raises(ValueError, match="num_train"):
        ablation.AblationConfig(num_train=4)
    with pytest.raises(ValueError, match="jobs"):
        ablation.run(ablation.AblationConfig(quick=True), jobs=0)
    with pytest.raises(ValueError, match="--root"):
        ablation.AblationConfig(data="folder")
    with pytest.raises(ValueError, match="--resize"):
        ablation.AblationConfig(resize=64)
    with pytest.raises(ValueError, match="evaluated split"):
        ablation.AblationConfig(eval_split="select")


def test_tuned_settings_reach_the_variants_that_use_them():
    choices = {"generator": 0.1, "discriminator": 10.0, "add": 0.2}
    assert ablation.tuned_settings(choices, "full") == {"aux_weight": 0.1}
    assert ablation.tuned_settings(choices, "generator_epochs") == {"aux_weight": 0.1}
    assert ablation.tuned_settings(choices, "discriminator") == {"aux_weight": 10.0}
    assert ablation.tuned_settings(choices, "add") == {"lr": 0.2}
    assert ablation.tuned_settings(choices, "baseline") == {}
    tcfg = ablation.plan(ablation.AblationConfig(quick=True), "add", 0, settings={"lr": 0.2})
    assert tcfg.lr == 0.2 and tcfg.eval_split == "select"  # learning curves on the selection split


# -- collapsed runs, tuning choices, verdicts -----------------------------------------------------------


def confusion(truth_counts, predicted: int | None = None, rng=None) -> np.ndarray:
    """A [N, N] confusion matrix: every pixel of class c predicted as ``predicted`` (a constant predictor),
    or as itself when None."""
    n = len(truth_counts)
    matrix = np.zeros((n, n), dtype=np.int64)
    for c, count in enumerate(truth_counts):
        matrix[c, c if predicted is None else predicted] = count
    return matrix


def test_constant_score_is_the_majority_class_predictor():
    # predicting class 0 everywhere: IoU_0 = 60 / 100, IoU_1 = IoU_2 = 0 -> MIOU 20 %
    assert ablation.constant_score(confusion([60, 30, 10])) == pytest.approx(20.0)


@given(st.lists(st.integers(1, 1000), min_size=2, max_size=8), st.data())
def test_a_constant_prediction_is_collapsed_and_a_perfect_one_is_not(counts, data):
    assert ablation.collapsed(confusion(counts, data.draw(st.integers(0, len(counts) - 1))))
    assert not ablation.collapsed(confusion(counts))


def test_a_nearly_constant_prediction_is_collapsed():
    from imgpix.experiments.ablation.analysis import COLLAPSE_MARGIN

    matrix = confusion([9000, 1000], 0)  # background everywhere: MIOU 45 %
    matrix[1, 0], matrix[1, 1] = 990, 10  # ten pixels of the object found: MIOU 45.5 %, not a segmenter
    assert ablation.collapsed(matrix)
    matrix[1, 0], matrix[1, 1] = 1000 - 300, 300  # 30 % of the object found: MIOU 61.4 %
    assert not ablation.collapsed(matrix) and COLLAPSE_MARGIN < 61.4 - 45


def test_choose_skips_diverged_and_collapsed_points_and_prefers_the_earlier_on_ties():
    good, better, flat = confusion([50, 50]), confusion([50, 50]), confusion([50, 50], 0)
    good[0, 1], good[0, 0] = 10, 40  # MIOU below the perfect one
    sweep = [{"variant": "generator", "field": "aux_weight", "value": 1.0, "diverged": "", "matrix": good},
             {"variant": "generator", "field": "aux_weight", "value": 0.1, "diverged": "", "matrix": better},
             {"variant": "generator", "field": "aux_weight", "value": 10.0, "diverged": "", "matrix": better},
             {"variant": "add", "field": "lr", "value": 0.05, "diverged": "", "matrix": flat},
             {"variant": "add", "field": "lr", "value": 0.2, "diverged": "training diverged", "matrix": None}]
    assert ablation.choose(sweep) == {"generator": 0.1, "add": 0.05}  # add: every point failed -> the default
    table = ablation.tuning_table(sweep, {"generator": 0.1, "add": 0.05})
    assert table["failed"].tolist() == ["", "", "", "collapsed", "diverged"]
    assert table["chosen"].tolist() == [False, True, False, True, False]


@pytest.mark.parametrize("low, high, failed, paper, ours, against", [
    (0.5, 2.0, False, 4.4, "higher", "agrees"), (-3.0, -1.0, False, 4.4, "lower", "contradicts"),
    (-1.0, 2.0, False, 4.4, "undecided", "undecided"), (0.5, 2.0, True, 4.4, "failed training", "failed training"),
    (0.5, 2.0, False, None, "higher", "n/a"),
])
def test_verdicts_are_decided_by_the_interval_over_seeds(low, high, failed, paper, ours, against):
    from imgpix.experiments.ablation.analysis import against_paper, verdict

    assert verdict(low, high, failed) == ours
    assert against_paper(ours, paper) == against


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

    ablation.plot_learning_curves(history, "select", Capture())
    table_rows = {row.name for _, rows in ablation.TABLES.values() for row in rows}
    variants = [label for label in shown["labels"] if not label.startswith("seed ")]
    assert sorted(variants) == sorted(ablation.curve_name(v) for v in ablation.VARIANTS)
    assert set(variants) <= table_rows
    assert sorted(set(shown["labels"]) - set(variants)) == ["seed 0", "seed 1"]  # seeds told apart


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
    for name in (*(f"{t}.{e}" for t in ablation.TABLES for e in ("csv", "md")), "curves.csv", "tuning.csv",
                 "learning_curves.png", "tables.png", "summary.json", "run.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))
    updates = {r["variant"]: int(r["updates"]) for key in ablation.TABLES for r in _table(out, key)}
    assert {u for v, u in updates.items() if v not in ablation.EPOCH_MATCHED} == {2 * 1 * ITERATIONS}  # by the trainer
    assert updates["generator_epochs"] == 2 * 2 * ITERATIONS  # the baseline's epochs: twice the updates
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
        low, high = float(row["delta_seeds_ci_low"]), float(row["delta_seeds_ci_high"])
        assert row["verdict"] == ("failed training" if row["collapsed_seeds"] != "[]" or
                                  table2["baseline"]["collapsed_seeds"] != "[]" else
                                  "higher" if low > 0 else "lower" if high < 0 else "undecided")
        assert float(row["delta_ci_low"]) <= float(row["delta"]) <= float(row["delta_ci_high"])
        assert low <= float(row["delta"]) <= high
        assert 0 < float(row["p_images"]) <= 1 and int(row["seeds"]) == 2
    table1 = {r["row"]: r for r in _table(out, "table1")}
    assert [float(table1[r]["paper_MIOU"]) for r in ("+ image label", "+ generator", "+ image label + generator")] == [
        74.9, 63.8, 75.7]
    assert table1["baseline"]["MIOU"] == table2["baseline"]["MIOU"]  # one trained baseline, shown twice


def test_quick_run_markdown_tables_fit_a_page_and_hold_every_row(quick_run):
    """Each printed table is two: the scores of every row, then the comparisons of the rows that have a
    reference; no table line runs past 160 characters, and no cell says nan."""
    out = quick_run[0] / "out"
    for key in ablation.TABLES:
        frame = pd.read_csv(out / f"{key}.csv", keep_default_na=False)
        text = (out / f"{key}.md").read_text()
        tables = [block for block in text.split("\n\n") if block.startswith("|")]
        assert len(tables) == 2, key
        rows = [[cell.strip() for cell in line.split("|")[1:-1]] for table in tables for line in table.splitlines()]
        scores, comparison = ([line.split("|")[1].strip() for line in table.splitlines()[2:]] for table in tables)
        assert scores == list(frame["row"])
        assert comparison == list(frame.loc[frame["reference"] != "", "row"])
        assert max(len(line) for table in tables for line in table.splitlines()) <= 160, key
        assert not any("nan" in row for row in rows), key


def test_quick_run_tunes_on_the_selection_split_and_trains_the_cells_with_the_choice(quick_run):
    out = quick_run[0] / "out"
    tuning = pd.read_csv(out / "tuning.csv")
    points = sum(len(grid) for _, grid, _ in ablation.TUNING.values())
    assert len(tuning) == points and tuning.groupby("variant")["chosen"].sum().eq(1).all()
    summary = json.loads((out / "summary.json").read_text())
    for variant, (field, _, users) in ablation.TUNING.items():
        chosen = tuning[(tuning.variant == variant) & tuning.chosen]["value"].item()
        assert summary["choices"][variant] == chosen
        for user in users:
            assert summary["variants"][user]["settings"][field] == chosen
    assert summary["config"]["splits"] == {"evaluated": "val", "selection": "select"}


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
    assert head.startswith("Measured by `python validation/ablation.py --quick`: synthetic `voc` scenes (one fixed set")
    assert f", {cpu_name()}, torch " in head
    assert f"this command computed {2 * len(ablation.VARIANTS) + POINTS} cells and tuning points in " in head
    models = 2 * len(ablation.VARIANTS) + POINTS - len(ablation.TUNING)  # each chosen point is seed 0's cell
    assert f"training {models} models (the others loaded from the model cache)" in head
    assert f"summed over the {models} models" in head
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
    # seed 0's cell loaded the model its tuning run trained; seed 1's was recomputed from the cache
    assert summary["variants"]["add"]["cache_hits"] == [True, True]
    (out / "summary.json").unlink()  # unfinished again, but another configuration asks for it: refused
    other = run_cli(*TINY[:-1], "--seeds", "3", "--out", str(out), "--cache-dir", str(cache), "--no-progress")
    assert other.returncode == 2 and "already exists" in other.stderr and not ablation.cell_path(out, "add", 2).exists()
    (out / "keep.txt").write_text("not ours")
    forced = run_cli(*TINY, "--jobs", "1", "--force", "--out", str(out), "--cache-dir", str(cache))
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["timings"]["cells_computed"] == (2 * len(ablation.VARIANTS)
                                                                                           + POINTS)
    assert (out / "keep.txt").read_text() == "not ours"


def test_real_data_run_reports_test_and_chooses_on_val(tmp_path):
    """A folder dataset: trained on train, learning curves on val, every reported number from test."""
    from voc_tree import build_folder_tree

    tree = build_folder_tree(tmp_path / "data", n_train=16, n_val=32, size=(40, 56))
    sets = tree["root"] / "ImageSets" / "Segmentation"
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in tree["val"][:16]))
    (sets / "test.txt").write_text("".join(f"{i}\n" for i in tree["val"][16:]))
    out = tmp_path / "out"
    too_many = run_cli("--quick", "--seeds", "2", "--no-tune", "--no-progress", "--data", "folder", "--root",
                       str(tree["root"]), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    one_line(too_many, 2, "has 16 images: cannot take 32")  # refused before any work
    assert not out.exists() and not (tmp_path / "cache").exists()
    done = run_cli("--quick", "--seeds", "2", "--no-tune", "--no-progress", "--num-train", "16", "--data", "folder",
                   "--root", str(tree["root"]), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["splits"] == {"evaluated": "test", "selection": "val"}
    assert {int(r["images"]) for r in _table(out, "table1")} == {16}  # the test images
    head = ablation.docs_markdown(summary, "--quick").splitlines()[0]
    assert "the 16 images of the `test` split" in head and "longer side scaled to 48 px" in head
    assert summary["tuning"] == [] and "Not tuned" in summary["markdown"]["tuning"]


@pytest.mark.parametrize("args, words", [
    (("--seeds", "1"), "--seeds"), (("--seeds", "x"), "--seeds"), (("--epochs", "0"), "--epochs"),
    (("--image-size", "8"), "--image-size"), (("--jobs", "0"), "--jobs"), (("--num-train", "4"), "num_train"),
    (("--bogus",), "unrecognized"), (("--device", "gpu0"), "gpu0"), (("--device", "cuda:99"), "cuda:99"),
    (("--scene-preset", "bogus"), "bogus"), (("--threads", "0"), "--threads"), (("--data", "folder"), "--root"),
    (("--resize", "64"), "--resize"),
])
def test_bad_arguments_exit_2_with_one_line(args, words, tmp_path, script_main, capsys):
    """In this process, through the script's own ``main`` (the script in a fresh interpreter is run by the tests
    around this one): a subprocess per case cost 13 torch imports."""
    code = script_main("--quick", "--no-progress", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path), *args)
    errors = capsys.readouterr().err
    assert code == 2
    assert len(errors.strip().splitlines()) == 1 and words in errors and "Traceback" not in errors
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_folder_exits_2_before_any_work(tmp_path):
    done = run_cli("--quick", "--no-progress", "--data", "folder", "--root", "/nonexistent", "--out",
                   str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("ablation.py: error: ") and "/nonexistent" in done.stderr.splitlines()[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


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


def test_unwritable_out_or_cache_is_refused_in_one_line(tmp_path, read_only_dir, script_main, capsys):
    for out, cache, option in ((read_only_dir / "out", tmp_path / "cache", "--out"),
                               (tmp_path / "out", read_only_dir / "cache", "--cache-dir")):
        code = script_main("--quick", "--no-progress", "--out", str(out), "--cache-dir", str(cache))
        errors = capsys.readouterr().err
        one_line(subprocess.CompletedProcess([], code, "", errors), 2, option, "cannot write")
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


def _processes_marked(marker: str) -> list[int]:
    """The pids whose environment holds ``marker`` (a run and the workers it spawned)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads other processes' environments in /proc")
def test_sigterm_stops_the_worker_processes_and_exits_143(tmp_path):
    marker = f"IMGPIX_TEST_MARKER=sigterm-{os.getpid()}-{time.time_ns()}"
    name, value = marker.split("=")
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--seeds", "2", "--epochs", "30",
                                "--num-train", "64", "--no-progress", "--jobs", "2", "--out", str(tmp_path / "out"),
                                "--cache-dir", str(tmp_path / "cache")], cwd=ROOT, env={**ENV, name: value},
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(_processes_marked(marker)) < 4 and time.monotonic() < deadline:  # the run, its tracker, 2 workers
        time.sleep(0.2)
    assert len(_processes_marked(marker)) >= 4, "the run never started its workers"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    assert "ablation.py: terminated; finished cells are saved, rerun the same command to resume" in stderr
    deadline = time.monotonic() + 30
    while _processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_marked(marker) == []  # no orphaned worker keeps training
