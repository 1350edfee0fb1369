"""validation/noisy_labels.py end to end: the fair-baseline noisy-label experiment, at a tiny budget.

One real command-line run (``main_run``, 2 seeds, 6 models trained into a module cache) is shared by the
tests; the other runs reuse its cached models, so they only evaluate. They call the script's
``main(argv)`` in this process (same parser and exit codes, without paying the interpreter and torch
start-up again), except shard 0/2, which runs in a second process beside shard 1/2.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runs import default_sigint

from imgpix.data.common import NUM_CLASSES as N
from imgpix.experiments import noisy_labels as nl
from imgpix.experiments.cache import config_key
from imgpix.files import read_data

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "validation" / "noisy_labels.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
TINY = ("--quick", "--epochs", "1", "--num-train", "32", "--num-val", "16", "--no-progress", "--jobs", "1")
CONFIG = nl.NoiseConfig(quick=True, epochs=1, num_train=32, num_val=16, seeds=2)  # what TINY + --seeds 2 means
MAIN_CONDITIONS = ["unfused", "oracle", "case1 (m=3)", "case2 (k=1)", "case3 (m=3, k=1)", "labeler@0.25"]
OUTPUTS = ("table.csv", "table.md", "claims.csv", "claims.md", "verdicts.csv", "verdicts.md", "equation_tests.csv",
           "equation_tests.md", "tau_curve.csv", "tau_curve.md", "tau_anchor.csv", "tau_anchor.md", "tau_curve.png",
           "theory.png", "learning_curves.png", "summary.json", "report.md")
MODELS = ["unfused", "fused", "fused-labeler"]  # the default models: the fair baseline, oracle labels, the paper's
PAGE = 125  # characters: the widest Markdown table line a page holds
PNG = b"\x89PNG\r\n\x1a\n"
STALE = ("ambiguity.csv", "ambiguity.md", "ambiguity.png")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def args(out: Path, cache: Path, *extra: str, seeds: int = 2) -> list[str]:
    return [*TINY, "--seeds", str(seeds), "--out", str(out), "--cache-dir", str(cache), *extra]


def popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *argv], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)


def finish(process: subprocess.Popen) -> Outcome:
    stdout, stderr = process.communicate(timeout=600)
    return Outcome(process.returncode, stdout, stderr)


def call(cli, argv: list[str]) -> Outcome:
    """The script's ``main(argv)`` in this process; argparse's exits become exit codes."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return Outcome(code, stdout.getvalue(), stderr.getvalue())


def seed_results(out: Path) -> list[dict]:
    return [read_data(path) for path in sorted((out / "seeds").glob("seed*.json.gz"))]


def per_image(results: list[dict], model: str, condition: str) -> pd.DataFrame:
    """Label counts of every image of every seed, with the image's true background presence."""
    frames = []
    for r in results:
        records = r["records"]
        part = records[(records.model == model) & (records.condition == condition)].sort_values("image")
        truth = r["models"]["unfused"]["matrices"]["unfused"].sum(axis=2)  # pixels of each true class per image
        frames.append(part.assign(background=(truth[part.image.to_numpy(), 0] > 0).astype(int)))
    return pd.concat(frames, ignore_index=True)[["seed", "image", "n", "size", "kept", "outliers", "background"]]


def one_error_line(outcome: Outcome, *words: str) -> None:
    """Exit 2, no traceback, one ``error:`` line (argparse's usage may precede it) naming ``words``."""
    assert outcome.code == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0] == lines[-1], outcome.stderr
    for word in words:
        assert word in errors[0]




@pytest.fixture(scope="module")
def cli(one_thread):
    spec = importlib.util.spec_from_file_location("noisy_labels_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, cache) -> tuple[Path, Outcome]:
    out = tmp_path_factory.mktemp("main") / "out"
    outcome = finish(popen(args(out, cache)))  # the script in a fresh interpreter
    assert outcome.code == 0, outcome.stderr[-3000:]
    return out, outcome


@pytest.fixture(scope="module")
def table(main_run) -> pd.DataFrame:
    """summary.json's table: table.csv's rows with their ``model`` and ``condition``."""
    return pd.DataFrame(json.loads((main_run[0] / "summary.json").read_text())["table"])


@pytest.fixture(scope="module")
def results(main_run) -> list[dict]:
    return seed_results(main_run[0])


@pytest.fixture(scope="module")
def forced(tmp_path_factory, main_run, cache, cli) -> tuple[Path, Outcome]:
    """A copy of the finished main run, rerun with --force, other settings (1 seed, background unprotected)
    and --require; files an earlier sweep wrote (ambiguity.*, recorded in run.json) and a foreign one
    (notes.txt) are planted first."""
    out = tmp_path_factory.mktemp("forced") / "out"
    shutil.copytree(main_run[0], out)
    record = json.loads((out / "run.json").read_text())
    for name in STALE:
        (out / name).write_text("stale\n")
    record["outputs"] = sorted({*record["outputs"], *STALE})
    (out / "run.json").write_text(json.dumps(record))
    (out / "notes.txt").write_text("mine\n")
    outcome = call(cli, args(out, cache, "--force", "--no-protect-background", "--require", "oracle_beats_baseline",
                             seeds=1))
    assert outcome.code in (0, 1), outcome.stderr[-3000:]
    return out, outcome


# ------------------------------------------------------------------ the main run
def test_run_writes_every_output(main_run):
    out, outcome = main_run
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG, name
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed0.json.gz", "seed1.json.gz"]
    assert "unfused + unfused" in outcome.stdout and "oracle_beats_baseline" in outcome.stdout
    assert (out / "tau_anchor.md").read_text().startswith("| model ")  # the anchor alone, no empty tau table


def test_summary_holds_claims_verdicts_labeler_headline_and_table(main_run, table):
    out = main_run[0]
    summary = json.loads((out / "summary.json").read_text())
    assert {"claims", "verdicts", "labeler", "headline", "table"} <= set(summary)
    labeler = summary["labeler"]
    assert labeler["tau"] == 0.25
    assert all(0 <= labeler[key] <= 1 for key in ("mAP", "precision", "recall"))
    assert [row["row"] for row in summary["table"]] == table["row"].tolist()
    claims = pd.read_csv(out / "claims.csv")
    assert [c["claim"] for c in summary["claims"]] == claims["claim"].tolist() == list(nl.CLAIMS)
    assert set(summary["headline"]) <= set(nl.CLAIMS) and "oracle_beats_baseline" in summary["headline"]
    assert len(summary["verdicts"]) == len(pd.read_csv(out / "verdicts.csv")) > 0


def test_every_row_names_its_model_and_condition(table, main_run):
    csv = pd.read_csv(main_run[0] / "table.csv")
    assert csv["row"].tolist() == table["row"].tolist()
    assert csv["MIOU"].to_numpy() == pytest.approx(table["MIOU"].to_numpy(), abs=1e-9)
    assert (table["row"] == table["model"] + " + " + table["condition"]).all()
    assert table["model"].tolist() == [m for m in MODELS for _ in MAIN_CONDITIONS]
    assert table["condition"].tolist() == MAIN_CONDITIONS * len(MODELS)
    assert "unfused + labeler@0.25" in table["row"].tolist()
    assert (table["seeds"] == 2).all() and (table["images"] == 16).all()


def test_baseline_is_the_model_trained_without_fusion(table, results, cache, main_run):
    base = table.set_index("row").loc["unfused + unfused"]
    assert base["size"] == N and base["removed"] == 0 and base["lost_fraction"] == 0
    claims = pd.read_csv(main_run[0] / "claims.csv").set_index("claim")
    assert claims.loc["oracle_beats_baseline", "a"] == "unfused + unfused"
    assert claims.loc["oracle_beats_baseline", "b"] == "fused + oracle"
    for r in results:
        for model, fusion, labels, labeler in (("unfused", None, "none", "tiny"), ("fused", "dot", "oracle", None)):
            entry = cache / "models" / config_key(nl.train_config(CONFIG, model, r["seed"], 1.0))
            config = json.loads((entry / "config.json").read_text())
            assert (config["fusion"], config["train_labels"], config["seed"]) == (fusion, labels, r["seed"])
            assert config["labeler"] == labeler  # one labeler per seed, trained beside the baseline
            pd.testing.assert_frame_equal(r["models"][model]["history"], pd.read_csv(entry / "metrics.csv"))
        assert r["models"]["fused"]["labeler"] == r["models"]["unfused"]["labeler"]  # the fused model borrows it


def test_both_models_get_the_same_number_of_updates(table, main_run):
    assert table["updates"].nunique() == 1 and table["updates"].iloc[0] == 1 * (32 // 16)
    summary = json.loads((main_run[0] / "summary.json").read_text())
    assert {m["segmenter_updates"] for m in summary["models"].values()} == {2}


def test_every_model_sees_the_same_noisy_labels(table, results):
    label_conditions = [c for c in results[0]["records"].condition.unique() if not c.startswith("labeler")]
    for condition in label_conditions:
        unfused = per_image(results, "unfused", condition)
        for model in ("fused", "fused-labeler", "untrained"):
            pd.testing.assert_frame_equal(per_image(results, model, condition), unfused)
    counts = table[~table.condition.str.startswith("labeler")].set_index(["model", "condition"])
    for column in ("n", "size", "kept", "outliers"):
        assert (counts.loc["unfused", column] == counts.loc["fused", column]).all(), column


def test_case3_adds_outliers_to_case2s_kept_classes(results):
    case2, case3 = per_image(results, "fused", "case2 (k=1)"), per_image(results, "fused", "case3 (m=3, k=1)")
    assert (case3.kept == case2.kept).all()
    assert (case3["size"] == case2["size"] + case3.outliers).all() and (case3.outliers == 3).all()


def test_background_is_protected_by_default(table, results):
    """Kept when present, never an outlier: Case 2 keeps background plus k objects, Case 1 draws its m
    outliers among the absent object classes only."""
    case2 = per_image(results, "fused", "case2 (k=1)")
    objects = case2.n - case2.background
    assert case2.background.any()
    assert (case2.kept == case2.background + np.minimum(1, objects)).all()
    case1 = per_image(results, "fused", "case1 (m=5)")
    assert (case1.kept == case1.n).all() and (case1.outliers == np.minimum(5, N - 1 - objects)).all()
    noisy = table[table.condition.str.startswith("case")]
    assert (noisy.kept >= 1).all()
    labeler = per_image(results, "fused", "labeler@0.25")
    assert (labeler.kept >= labeler.background).all() and (labeler["size"] >= 1).all()


def test_no_protect_background_lets_k_drop_it(forced, results):
    out, _ = forced
    assert json.loads((out / "run.json").read_text())["config"]["protect_background"] is False
    protected = per_image(results[:1], "fused", "case2 (k=1)")
    unprotected = per_image(seed_results(out), "fused", "case2 (k=1)")
    assert (unprotected.kept == np.minimum(1, unprotected.n)).all()  # background counts as one of the k
    assert (protected.kept > unprotected.kept).any()


# ------------------------------------------------------------------ claims over seeds, verdicts, tau curves
def per_seed_miou(results: list[dict], row: str) -> np.ndarray:
    from imgpix.experiments.stats import score

    model, condition = row.split(" + ", 1)
    return np.array([score(r["models"][model]["matrices"][condition].sum(0), "MIOU") for r in results])


def test_claims_are_decided_over_seeds(main_run, results):
    """Per claim: the per-seed differences, their paired t interval and p over seeds (scipy's ttest_rel),
    supported exactly when that interval excludes 0 on the claimed side, the image-level interval beside it,
    and the seeds a decision would need when the run does not decide."""
    from scipy import stats as sps

    from imgpix.experiments import stats

    summary = json.loads((main_run[0] / "summary.json").read_text())
    for claim in summary["claims"]:
        a, b = per_seed_miou(results, claim["a"]), per_seed_miou(results, claim["b"])
        assert claim["per_seed"] == pytest.approx(list(b - a)) and claim["difference"] == pytest.approx((b - a).mean())
        assert claim["seeds"] == 2 and claim["seed_sd"] == pytest.approx(np.std(b - a, ddof=1))
        assert {"images_ci_low", "images_ci_high", "images_p"} <= set(claim) and "effect_size" not in claim
        if claim["decision"] == "not tested":
            assert not claim["supported"] and claim["note"].startswith("not tested: ")
            continue
        if np.std(b - a) > 0:
            reference = sps.ttest_rel(b, a)
            assert claim["seeds_p"] == pytest.approx(reference.pvalue)
            assert (claim["seeds_ci_low"], claim["seeds_ci_high"]) == pytest.approx(tuple(
                reference.confidence_interval(0.95)))
        sign = 1 if claim["expected"] == "b > a" else -1
        low, high = sorted((sign * claim["seeds_ci_low"], sign * claim["seeds_ci_high"]))
        assert claim["supported"] == (low > 0) == (claim["decision"] == "supported")
        assert claim["seeds_needed"] == stats.seeds_needed(claim["difference"], claim["seed_sd"])


def test_the_headline_is_the_seed_level_result_with_its_per_seed_values(main_run):
    summary = json.loads((main_run[0] / "summary.json").read_text())
    text = nl.headline_markdown(summary)
    assert "decided over seeds" in text and "paired t-test over the seeds" in text
    assert list(summary["headline"])[0] == "labeler_trained_beats_baseline"  # the paper's protocol first
    for claim in summary["headline"].values():
        line = next(line for line in text.splitlines() if f"`{claim['b']}` - `{claim['a']}`" in line)
        if claim["decision"] == "not tested":
            assert claim["note"] in line
            continue
        assert "per seed " + ", ".join(f"{v:+.2f}" for v in claim["per_seed"]) in line
        assert "Over seeds: 95% CI" in line and "(paired t, 1 df)" in line
        assert "Given these trained networks (16 images resampled)" in line
        floor = claim["images_p"] <= 1 / (summary["resamples"] + 1) + 1e-12
        assert (f"p < 1/{summary['resamples'] + 1}" in line) == floor
        assert ("would decide it at this mean and sd" in line or "would decide a mean" in line) == (
            claim["decision"] == "not decided")
    assert "d_z" not in text and "effect size" not in text


def test_no_markdown_shows_nan_or_inf_and_every_table_fits_a_page(main_run, forced):
    for out in (main_run[0], forced[0]):
        for path in out.glob("*.md"):
            text = path.read_text()
            assert not re.findall(r"\b(?:nan|inf)\b", text, flags=re.IGNORECASE), path
            wide = [line for line in text.splitlines() if line.startswith("|") and len(line) > PAGE]
            assert not wide, (path, wide[:1])


def test_verdicts_are_in_words_per_equation_and_per_model(main_run):
    from imgpix.experiments import theory_tests as tt
    from imgpix.experiments import verdicts as vd

    out = main_run[0]
    verdicts = pd.read_csv(out / "verdicts.csv", keep_default_na=False)
    assert verdicts.equation.astype(str).tolist() == list(tt.EQUATIONS)
    words = (vd.HOLDS, vd.REFUTED, vd.INCONCLUSIVE, vd.NOT_TESTABLE, vd.NOT_IN_DESIGN)
    for verdict in verdicts.verdict:
        assert verdict == vd.NOT_TESTED or any(verdict.startswith(w) for w in words), verdict
    assert set(verdicts.identity_check) <= {vd.IDENTITY_PASSES, vd.IDENTITY_FAILS, "not run"}
    tests = pd.read_csv(out / "equation_tests.csv", keep_default_na=False)
    six = tests[tests.equation.astype(str) == "6"]
    assert set(six.model) == {*MODELS, "untrained"}
    assert six.set_index("model").loc["untrained", "verdict"] == vd.IDENTITY_PASSES
    assert set(six[six.model != "untrained"].verdict) <= {vd.HOLDS, vd.REFUTED, vd.INCONCLUSIVE}
    eq13 = verdicts.set_index(verdicts.equation.astype(str)).loc["13/14"]
    assert eq13.verdict == "not testable in this design for trained networks"  # one m and k in this design
    assert "m' = 3" in eq13.note and "k' = 2" in eq13.note  # the background is kept with the one object


def test_tau_curves_carry_intervals_over_seeds_and_the_anchor(main_run, results, table):
    from scipy import stats as sps

    out = main_run[0]
    curve = pd.read_csv(out / "tau_curve.csv")
    assert set(curve.model) == set(MODELS) and (curve.seeds == 2).all()
    row = curve[(curve.model == "fused-labeler") & (curve.tau == 0.25)].iloc[0]
    values = [r["models"]["fused-labeler"]["tau_curve"][0.25] for r in results]
    low, high = sps.t.interval(0.95, 1, loc=np.mean(values), scale=sps.sem(values)) if np.std(values) else [
        np.mean(values)] * 2
    assert (row["mean"], row.low, row.high) == pytest.approx((np.mean(values), low, high))
    anchor = pd.read_csv(out / "tau_anchor.csv").set_index("model")
    assert set(anchor.index) == set(MODELS)
    by_row = table.set_index("row")
    for model in MODELS:  # tau = 0 keeps every class: each curve starts at its model's unfused score
        assert anchor.loc[model, "MIOU_tau0"] == pytest.approx(by_row.loc[f"{model} + unfused", "MIOU"])
        assert anchor.loc[model, "baseline_MIOU"] == pytest.approx(by_row.loc["unfused + unfused", "MIOU"])
    assert "MIOU at tau = 0" in (out / "tau_curve.md").read_text()


def test_choices_are_made_on_the_selection_split(main_run, cache, results):
    """The learning curves (which set the budget) come from the 'select' scenes, never the evaluated 'val' ones."""
    out = main_run[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"] == {"evaluated": "val", "selection": "select"}
    for model in MODELS:
        config = json.loads((cache / "models" / config_key(nl.train_config(CONFIG, model, 0, 1.0)) / "config.json")
                            .read_text())
        assert config["eval_split"] == "select"
    assert "selection split `select`, disjoint from the `val` images" in (out / "report.md").read_text()


def test_one_seed_decides_no_claim(forced):
    """--seeds 1: no interval over seeds, so no claim is supported, and the report says why."""
    out, _ = forced
    claims = pd.read_csv(out / "claims.csv", keep_default_na=False)
    assert not claims.supported.any()
    assert set(claims.decision) <= {"not decided", "not tested"}
    undecided = claims[claims.decision == "not decided"]
    assert (undecided.note == "not decided: one seed (an interval over seeds needs at least 2)").all()
    assert "not decided: one seed, no interval over seeds" in (out / "report.md").read_text()


# ------------------------------------------------------------------ figures (drawn from made-up results)
class Figures:
    """Stands in for :class:`imgpix.experiments.runner.Outputs`: lays each figure out as it is saved, keeps its
    axes and whether the legend lies below them (off the data), and closes it."""

    def __init__(self):
        self.axes, self.legend_below = {}, {}

    def save_figure(self, name, fig):
        import matplotlib.pyplot as plt

        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        self.axes[name] = ax
        self.legend_below[name] = ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
        plt.close(fig)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_tau_plot_names_its_bands_marks_the_default_tau_and_tells_equal_levels_apart():
    from imgpix.experiments.noisy_labels.plots import plot_tau

    taus = [0.0, 0.25, 0.5]
    curve = pd.DataFrame([{"model": m, "tau": t, "mean": 5.0 + t, "sd": 1.0, "seeds": 3, "low": 4.0, "high": 6.0 + t}
                          for m in MODELS for t in taus])
    table = pd.DataFrame([{"row": f"{m} + {c}", "model": m, "condition": c, "MIOU": 5.3 if c == "oracle" else 4.8,
                           "MIOU_seeds_low": 4.0, "MIOU_seeds_high": 5.5}
                          for m in MODELS for c in ("unfused", "oracle")])
    figures = Figures()
    plot_tau(curve, table, CONFIG, figures)
    ax = figures.axes["tau_curve.png"]
    texts = legend_texts(ax)
    assert "95% t intervals over 3 seeds" in ax.get_title() and any("95% t interval over seeds" in t for t in texts)
    assert any(f"default tau = {CONFIG.tau:g}" in t for t in texts)
    vertical = [line for line in ax.get_lines() if list(line.get_xdata()) == [CONFIG.tau] * 2]
    assert len(vertical) == 1
    oracle = [line for line in ax.get_lines() if list(line.get_ydata()) == [5.3, 5.3]]  # three equal levels
    assert len(oracle) == 3 and len({(str(line.get_linestyle()), line.get_linewidth()) for line in oracle}) == 3
    assert sum(t.endswith("oracle: 5.3") for t in texts) == 3
    assert len({line.get_marker() for line in ax.get_lines() if len(line.get_xdata()) == len(taus)}) == 3
    assert figures.legend_below["tau_curve.png"]


def test_theory_plot_shows_one_box_per_model_and_size_against_log_n_over_l():
    from imgpix.experiments.noisy_labels.plots import plot_theory

    rng = np.random.default_rng(0)
    records = pd.DataFrame([{"model": m, "condition": c, "size": size, "removed": rng.uniform(0, 1)}
                            for m in ("untrained", *MODELS) for c in ("oracle", "case1 (m=3)", "unfused")
                            for size in (1, 2, 4) for _ in range(20) if c != "unfused" or size == 1])
    figures = Figures()
    plot_theory(records, CONFIG, figures)
    ax = figures.axes["theory.png"]
    assert len(ax.patches) == 4 * 3  # a box per model and |L|
    theory = ax.collections[-1]
    assert sorted(seg[0][1] for seg in theory.get_segments()) == pytest.approx(sorted(np.log(N / np.array([1, 2, 4]))))
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["1", "2", "4"]
    assert "theory: removed = log(N/|L|) (Eqs. 6, 10)" in legend_texts(ax) and figures.legend_below["theory.png"]


@pytest.mark.parametrize("updates", [True, False])
def test_learning_curves_are_drawn_against_updates_a_colour_per_model_and_a_style_per_seed(updates):
    from imgpix.experiments.noisy_labels.plots import plot_learning_curves

    def history(seed):
        frame = pd.DataFrame({"epoch": [1, 2, 3], "updates": [8, 16, 24], "MIOU": [4.0 + seed, 6.0, 7.5]})
        return frame if updates else frame.drop(columns="updates")

    results = [{"seed": s, "models": {m: {"history": history(s)} for m in MODELS}} for s in (0, 1)]
    figures = Figures()
    plot_learning_curves(results, "select", figures)
    ax = figures.axes["learning_curves.png"]
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len(drawn) == 6 and list(drawn[0].get_xdata()) == ([8, 16, 24] if updates else [1, 2, 3])
    assert ax.get_xlabel() == "segmenter updates" if updates else "no update counts" in ax.get_xlabel()
    assert len({line.get_color() for line in drawn}) == 3
    assert len({(str(line.get_linestyle()), line.get_marker()) for line in drawn}) == 2
    assert {"seed 0", "seed 1"} <= set(legend_texts(ax)) and figures.legend_below["learning_curves.png"]


# ------------------------------------------------------------------ reruns
def test_rerunning_a_finished_run_rewrites_the_same_outputs_without_training(main_run, cache, cli, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(main_run[0], out)
    seeds = {p.name: p.stat().st_mtime_ns for p in (out / "seeds").iterdir()}
    outcome = call(cli, args(out, cache))
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert "to compute" not in outcome.stderr and "training" not in outcome.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "seeds").iterdir()} == seeds
    assert (out / "table.csv").read_bytes() == (main_run[0] / "table.csv").read_bytes()


def test_interrupted_run_resumes_from_its_seeds_without_training(main_run, cache, cli, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(main_run[0], out)
    (out / "summary.json").unlink()
    (out / "seeds" / "seed1.json.gz").unlink()
    seed0 = (out / "seeds" / "seed0.json.gz").stat().st_mtime_ns
    outcome = call(cli, args(out, cache))
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert "resuming" in outcome.stderr and "1 seed(s) to compute" in outcome.stderr
    assert "training" not in outcome.stderr  # every model came from the cache
    assert (out / "seeds" / "seed0.json.gz").stat().st_mtime_ns == seed0
    assert (out / "table.csv").read_bytes() == (main_run[0] / "table.csv").read_bytes()


def test_force_replaces_the_runs_own_files_only(forced):
    out, outcome = forced
    assert not any((out / name).exists() for name in STALE)  # written by the earlier run: stale, removed
    assert (out / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed0.json.gz"]
    assert (pd.read_csv(out / "table.csv")["seeds"] == 1).all()
    assert "training" not in outcome.stderr


def test_require_exits_1_exactly_when_the_claim_is_not_supported(forced):
    out, outcome = forced
    supported = bool(pd.read_csv(out / "claims.csv").set_index("claim").loc["oracle_beats_baseline", "supported"])
    assert outcome.code == (0 if supported else 1)
    assert ("required claims not supported: oracle_beats_baseline" in outcome.stderr) is not supported


def test_a_non_empty_other_out_is_refused(tmp_path, cache, cli):
    out = tmp_path / "other"
    out.mkdir()
    (out / "data.txt").write_text("keep me\n")
    one_error_line(call(cli, args(out, cache)), str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["data.txt"]


# ------------------------------------------------------------------ shards
def test_shards_then_merge_give_the_unsharded_table(main_run, cache, cli, tmp_path):
    """Byte-identical: every seed's models come from the same cache and are evaluated on the same images
    in the same order, and the bootstrap draws are seeded, so the same seed files give the same table."""
    out = tmp_path / "sharded"
    other = popen(args(out, cache, "--shard", "0/2"))  # a second process, at the same time as this one
    outcomes = [call(cli, args(out, cache, "--shard", "1/2")), finish(other)]
    for outcome in outcomes:
        assert outcome.code == 0 and outcome.stdout == "", outcome.stderr[-3000:]
        assert "training" not in outcome.stderr
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed0.json.gz", "seed1.json.gz"]
    assert not (out / "summary.json").exists() and not (out / "table.csv").exists()
    merged = call(cli, args(out, cache, "--merge"))
    assert merged.code == 0, merged.stderr[-3000:]
    assert (out / "table.csv").read_bytes() == (main_run[0] / "table.csv").read_bytes()
    assert (out / "claims.csv").read_bytes() == (main_run[0] / "claims.csv").read_bytes()


def test_merge_names_the_missing_seed(main_run, cache, cli, tmp_path):
    out = tmp_path / "partial"
    (out / "seeds").mkdir(parents=True)
    shutil.copy(main_run[0] / "seeds" / "seed0.json.gz", out / "seeds")
    one_error_line(call(cli, args(out, cache, "--merge")), "seeds [1]")
    assert not (out / "table.csv").exists()


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("bad, words", [
    (["--m", "-1"], ["--m"]),
    (["--m", "20"], ["m must"]),
    (["--k", "0"], ["--k"]),
    (["--tau", "1.5"], ["tau", "1.5"]),
    (["--models", "fused"], ["unfused"]),
    (["--models", "unfused,bogus"], ["bogus"]),
    (["--shard", "2/2"], ["--shard", "2/2"]),
    (["--shard", "one"], ["--shard"]),
    (["--require", "bogus"], ["bogus"]),
    (["--merge", "--shard", "0/2"], ["--merge"]),
    (["--force", "--shard", "0/2"], ["--force"]),
    (["--scene-preset", "bogus"], ["--scene-preset", "bogus"]),
    (["--k", "9"], ["k = 9", "Case 2", "oracle"]),  # every voc scene holds at most 5 objects
    (["--device", "gpu0"], ["--device", "gpu0"]),
    (["--device", "cuda:99"], ["cuda:99"]),
    (["--num-train", "8"], ["num_train", "batch size"]),
    (["--image-size", "8"], ["--image-size"]),
    (["--threads", "0"], ["--threads"]),
])
def test_bad_arguments_exit_2_with_one_error_line(bad, words, cli, tmp_path, cache):
    out = tmp_path / "never"
    one_error_line(call(cli, args(out, cache, *bad)), *words)
    assert not out.exists()


def test_k_at_most_objects_is_accepted(cli):
    """k = 4 < 5 objects: Case 2 drops labels of some voc scenes, so the configuration stands."""
    assert nl.NoiseConfig(k=4, quick=True).k == 4
    with pytest.raises(ValueError, match="Case 2"):
        nl.NoiseConfig(k=3, quick=True, scene_preset="legacy")  # legacy scenes: at most 3 objects


def test_shard_and_merge_need_out(cli, cache):
    one_error_line(call(cli, [*TINY, "--cache-dir", str(cache), "--merge"]), "--out")


# ------------------------------------------------------------------ other settings
def test_m_0_runs_and_case3_is_case2(cli, cache, tmp_path):
    """With no outliers Case 3 is Case 2: the same labels, the same scores."""
    out = tmp_path / "m0"
    outcome = call(cli, args(out, cache, "--m", "0", seeds=1))
    assert outcome.code == 0, outcome.stderr[-3000:]
    rows = pd.read_csv(out / "table.csv").set_index("row")
    columns = ["MIOU", "PA", "size", "kept", "outliers"]
    assert rows.loc["fused + case3 (m=0, k=1)", columns].tolist() == rows.loc["fused + case2 (k=1)", columns].tolist()


def test_ambiguity_sweep_of_the_baseline_alone(cli, cache, tmp_path):
    """The sweep with ``--models unfused`` (half the training of both models): post-hoc gains only."""
    out = tmp_path / "sweep"
    outcome = call(cli, args(out, cache, "--ambiguity-sweep", "--models", "unfused", seeds=1))
    assert outcome.code == 0, outcome.stderr[-3000:]
    sweep = pd.read_csv(out / "ambiguity.csv")
    assert sweep["ambiguity"].tolist() == list(nl.AMBIGUITIES)
    assert {"baseline_MIOU mean", "gain unfused + oracle mean", "gain unfused + labeler@0.25 mean",
            "oracle_removed_nats mean"} <= set(sweep.columns)
    assert pd.read_csv(out / "table.csv")["row"].str.startswith("unfused + ").all()
    assert (sweep["oracle_removed_nats mean"] > 0).all()
    assert (out / "ambiguity.png").read_bytes()[:8] == PNG
    written = json.loads((out / "run.json").read_text())["outputs"]
    assert set(STALE) <= set(written) <= set(nl.OUTPUTS)  # the registry knows every file, the .md included
    again = call(cli, args(out, cache, "--force", "--models", "unfused", seeds=1))  # the same, without the sweep
    assert again.code == 0, again.stderr[-3000:]
    assert not any((out / name).exists() for name in STALE)  # no stale ambiguity.md beside a missing .csv
    assert not set(STALE) & set(json.loads((out / "run.json").read_text())["outputs"])


def test_jobs_2_trains_and_evaluates_in_workers_with_the_same_results(main_run, tmp_path):
    """Two worker processes of one thread each, on an empty cache: the sequential run's table, exactly."""
    outcome = finish(popen(args(tmp_path / "out", tmp_path / "cache", "--jobs", "2")))
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert len(list((tmp_path / "cache" / "models").glob("*/checkpoint.pt"))) == 6  # 2 seeds x 3 models
    ours, reference = (pd.read_csv(path / "table.csv") for path in (tmp_path / "out", main_run[0]))
    pd.testing.assert_frame_equal(ours, reference)


def test_report_names_the_cpu_it_was_measured_on(main_run):
    """Float results differ between CPU kinds: summary.json and report.md name the CPU."""
    from imgpix.experiments.report import cpu_name

    summary = json.loads((main_run[0] / "summary.json").read_text())
    assert summary["versions"]["cpu"] == cpu_name() != "unknown"
    assert f", {cpu_name()}, torch " in (main_run[0] / "report.md").read_text()


# ------------------------------------------------------------------ the real entry point: start-up and locks
def one_line(outcome: Outcome, code: int, *words: str) -> None:
    """Exit ``code`` with one line on stderr (no traceback, no usage block) holding ``words``."""
    assert outcome.code == code, outcome.stderr[-3000:]
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_script_refuses_a_device_it_does_not_have_in_one_line(tmp_path):
    one_line(finish(popen(args(tmp_path / "out", tmp_path / "cache", "--device", "cuda:99"))), 2, "cuda:99")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_script_refuses_an_unwritable_out_or_cache_in_one_line(tmp_path, read_only_dir, cli):
    one_line(call(cli, args(read_only_dir / "out", tmp_path / "cache")), 2, "--out", "cannot write")
    one_line(call(cli, args(tmp_path / "out", read_only_dir / "cache")), 2, "--cache-dir", "cannot write")
    (tmp_path / "file").write_text("x")
    one_line(call(cli, args(tmp_path / "file" / "out", tmp_path / "cache")), 2, "--out", "not a directory")
    assert not (tmp_path / "out").exists()


def test_script_refuses_a_second_run_into_a_live_runs_out(tmp_path, cache):
    from imgpix.lock import LOCK_NAME, OutputLock

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):  # the other run: this test process
        one_line(finish(popen(args(out, cache))), 2, str(out), f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written beside the other's lock


def test_a_killed_runs_lock_is_taken_over_and_removed(tmp_path, cache, main_run, cli):
    """The holder of the lock is SIGKILLed (no clean-up): its lock file stays, stale, and the next run goes on."""
    from imgpix.lock import LOCK_NAME

    out = tmp_path / "out"
    shutil.copytree(main_run[0], out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from imgpix.lock import OutputLock\n"
                               f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (out / LOCK_NAME).exists()
    outcome = call(cli, args(out, cache))
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert not (out / LOCK_NAME).exists()


def test_a_refused_start_leaves_no_lock(tmp_path, cache, cli):
    from imgpix.lock import LOCK_NAME

    out = tmp_path / "other"
    out.mkdir()
    (out / "data.txt").write_text("keep me\n")
    one_error_line(call(cli, args(out, cache)), "not empty")
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("delay", [0.5, 2.0])
def test_ctrl_c_during_start_up_exits_130_in_one_line(tmp_path, delay):
    """SIGINT while the script is still importing (torch and the experiment take seconds to load)."""
    process = popen(args(tmp_path / "out", tmp_path / "cache"))
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    one_line(finish(process), 130, "interrupted")
