"""The noisy-label experiment's outputs: every table as CSV (every number) and Markdown (:mod:`.markdown`),
the figures (:mod:`.plots`), the summary and ``report.md``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import theory_checks, theory_tests
from ..report import versions
from ..runner import Outputs
from ..stats import p_text
from ..verdicts import INTERCEPT_TOL, RATIO_TOL
from .analysis import (
    UNTESTED,
    ambiguity_table,
    budget_check,
    claims,
    headline,
    labeler_summary,
    learning_plateaus,
    results_table,
    tau_anchor,
    tau_curve,
)
from .design import BASELINE, BUDGET_FACTOR, MODELS, NoiseConfig, condition_names
from .markdown import (
    LEVEL,
    ambiguity_markdown,
    budget_markdown,
    case2_markdown,
    claims_markdown,
    decision_text,
    equation_markdown,
    labels_markdown,
    plateau_markdown,
    power_text,
    scores_markdown,
    sufficiency_markdown,
    tau_markdown,
    verdicts_markdown,
)
from .plots import plot_ambiguity, plot_learning_curves, plot_tau, plot_theory

TABLES = ("table", "claims", "verdicts", "equation_tests", "count_sufficiency", "case2", "tau_curve",
          "tau_anchor", "ambiguity", "budget_check")  # .csv and .md
FIGURES = ("tau_curve.png", "theory.png", "learning_curves.png", "ambiguity.png")
# every name a run may write (what --force removes from a run that recorded none of its own)
OUTPUTS = ("seeds", "budget", "report.md", "summary.json", *(f"{t}.{ext}" for t in TABLES for ext in ("csv", "md")),
           *FIGURES)
TABLE_COLUMNS = ["row", "model", "condition", "MIOU", "MIOU_sd", "MIOU_seeds_low", "MIOU_seeds_high", "MIOU_ci_low",
                 "MIOU_ci_high", "PA", "MPA", "FWAA", "n", "size", "kept", "outliers", "removed", "lost_fraction",
                 "updates", "seeds", "images"]
CLAIMS_METHOD = (
    "A claim is decided over seeds: `supported` only when the paired t interval over seeds excludes 0 on the claimed "
    "side. The t-test treats the seeds as the units because retraining is what a claim about the method varies; "
    "with 3 seeds a sign-flip test cannot go below p = 0.25, and a bootstrap of 3 values has 10 distinct resamples. "
    "It holds the evaluated images fixed (every seed sees the same), so the image-level interval and permutation p "
    "stand beside it, conditional on the trained networks. Needed: the seeds a decision would need, the smallest n "
    "with t(0.975, n-1) sd / sqrt(n) < |mean| (printed when the run does not decide). CIs are "
    f"{LEVEL}: a t interval over seeds and a bootstrap over images; p (images) swaps A and B per image at random. "
    "No effect size is given over fewer than 10 units.")
THEORY_METHOD = (
    f"Per test and model, by equivalence: holds when the CI lies inside the band (ratio and slope 1 ± "
    f"{RATIO_TOL:g}, intercept 0 ± {INTERCEPT_TOL:g}, in nats or, for the assumption, in "
    "probability), refuted when it lies outside, inconclusive otherwise; \"6 vs n\" is a direction (holds when the "
    "slope's CI lies below 0). CIs resample images (all seeds of an image together): they describe the trained "
    "networks. The uniform (untrained) network is an identity check of the measurement, never evidence.")


# -- the outputs ----------------------------------------------------------------------------------------------


def _write(outputs: Outputs, name: str, frame: pd.DataFrame, markdown: str) -> str:
    """``name.csv`` (every number of ``frame``) and ``name.md`` (the page-wide ``markdown``)."""
    outputs.write_text(f"{name}.csv", frame.to_csv(index=False))
    outputs.write_text(f"{name}.md", markdown + "\n")
    return markdown


def _records(frame: pd.DataFrame) -> list[dict]:
    """``frame`` as JSON-safe records: NaN and infinity become None."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def theory_roles(cfg: NoiseConfig) -> dict[str, list[str]]:
    """The theory tests' roles: the names of this run's conditions of each role."""
    return {role: condition_names(cfg, role) for role in ("oracle", "case1", "case2", "case3")}


def write_outputs(cfg: NoiseConfig, outputs: Outputs, results: list[dict], doubled: dict | None = None) -> dict:
    """Tables, claims, verdicts and plots from every seed's result (and the convergence check's ``doubled``
    seed 0, when run); returns the summary (not yet written)."""
    resamples = {"n_resamples": cfg.resamples}
    table = results_table(results, cfg)
    markdown = {"table": _write(outputs, "table", table[TABLE_COLUMNS], scores_markdown(table))}
    markdown["labels"] = labels_markdown(table)
    claim_table = claims(results, cfg)
    markdown["claims"] = _write(outputs, "claims", claim_table, claims_markdown(claim_table, cfg.resamples))
    records = pd.concat([r["records"] for r in results], ignore_index=True)
    roles = theory_roles(cfg)
    tests = theory_tests.equation_tests(records, cfg.num_classes, roles=roles, **resamples)
    verdicts = theory_tests.verdicts(records, cfg.num_classes, roles=roles, tests=tests)
    markdown["verdicts"] = _write(outputs, "verdicts", verdicts, verdicts_markdown(verdicts))
    markdown["equation_tests"] = _write(outputs, "equation_tests", tests, equation_markdown(tests))
    confusable, distant = condition_names(cfg, "confusable")[0], condition_names(cfg, "distant")[0]
    trained = records[records.model != "untrained"]
    sufficiency = pd.concat([theory_checks.count_sufficiency(trained, confusable, distant, value=value, **resamples)
                             for value in ("accuracy_fused", "removed")], ignore_index=True)
    markdown["count_sufficiency"] = _write(outputs, "count_sufficiency", sufficiency,
                                           sufficiency_markdown(sufficiency, cfg.resamples))
    case2 = theory_checks.case2_loss(records, roles=roles, **resamples)
    markdown["case2"] = _write(outputs, "case2", case2, case2_markdown(case2))
    curve, anchor = tau_curve(results, cfg), tau_anchor(results, cfg)
    if len(curve):
        markdown["tau_curve"] = _write(outputs, "tau_curve", curve, tau_markdown(curve, anchor))
        _write(outputs, "tau_anchor", anchor, tau_markdown(curve.iloc[:0], anchor))
        plot_tau(curve, table, cfg, outputs)
    plot_theory(records, cfg, outputs)
    plot_learning_curves(results, cfg.select_split, outputs)
    plateaus = learning_plateaus(results)
    markdown["plateau"] = plateau_markdown(plateaus)
    summary = {"config": cfg.identity(), "versions": versions(), "table": _records(table),
               "splits": {"evaluated": cfg.evaluated_split, "selection": cfg.select_split},
               "claims": _records(claim_table), "verdicts": _records(verdicts), "equation_tests": _records(tests),
               "count_sufficiency": _records(sufficiency), "case2": _records(case2),
               "tau_curve": _records(curve), "tau_anchor": _records(anchor),
               "labeler": labeler_summary(results), "headline": headline(claim_table), "resamples": cfg.resamples,
               "labelers": {m: labeler_summary(results, m) for m in cfg.models if MODELS[m]["labeler"]},
               "models": {m: {"segmenter_updates": results[0]["models"][m]["updates"],
                              "train_seconds": [r["models"][m]["train_seconds"] for r in results]}
                          for m in cfg.models},
               "plateau": _records(plateaus), "markdown": markdown, "images": int(table["images"].iloc[0])}
    if doubled is not None:
        check = budget_check(results[0], doubled, cfg, BUDGET_FACTOR)
        markdown["budget_check"] = _write(outputs, "budget_check", check, budget_markdown(check, BUDGET_FACTOR, 0))
        summary["budget_check"] = _records(check)
    if cfg.ambiguity_sweep:
        sweep = ambiguity_table(results, cfg)
        flat = sweep.copy()
        flat.columns = [" ".join(str(p) for p in c if p).strip() for c in flat.columns]
        markdown["ambiguity"] = _write(outputs, "ambiguity", flat, ambiguity_markdown(sweep))
        plot_ambiguity(sweep, outputs)
        summary["ambiguity"] = _records(flat)
    return summary


# -- report.md ------------------------------------------------------------------------------------------------


def _line(claim: dict, resamples: int, images: int) -> str:
    """One headline claim: the difference, per-seed values, the decision over seeds, its power line, and the
    image-level interval conditional on the trained networks."""
    text = f"`{claim['b']}` - `{claim['a']}`: "
    if claim["decision"] == UNTESTED:
        return text + claim["note"] + "."
    seeds = ", ".join(f"{v:+.2f}" for v in claim["per_seed"])
    text += f"**{claim['difference']:+.2f}** MIOU points (per seed {seeds}"
    if claim["seeds"] > 1:
        text += (f"; sd {claim['seed_sd']:.2f}). Over seeds: {LEVEL} CI {claim['seeds_ci_low']:+.2f} to "
                 f"{claim['seeds_ci_high']:+.2f}, {p_text(claim['seeds_p'])} (paired t, {claim['seeds'] - 1} df): "
                 f"{decision_text(claim)}")
    else:
        text += f"): {decision_text(claim)}"
    power = power_text(claim)
    text += f"; {power}." if power else "."
    return (text + f" Given these trained networks ({images} images resampled): {claim['images_ci_low']:+.2f} to "
            f"{claim['images_ci_high']:+.2f}, {p_text(claim['images_p'], resamples)}.")


def headline_markdown(summary: dict) -> str:
    """The headline alone: predicted labels against the fair baseline, decided over seeds (for the README)."""
    seeds, images = summary["config"]["seeds"], summary["images"]
    resamples = summary.get("resamples")
    lines = [f"**Headline: predicted labels against the fair baseline, decided over seeds.** B - A in MIOU points, "
             f"mean over {seeds} seed(s), each retraining every model. The decision is a paired t-test over the seeds "
             f"(a claim about the method varies the training, and seeds are its units); the interval over the "
             f"{images} evaluated images beside it holds the trained networks fixed.", ""]
    lines += [f"- {_line(c, resamples, images)}" for c in summary["headline"].values()]
    labelers = summary.get("labelers") or {BASELINE: summary.get("labeler")}
    found = [f"`{model}`'s{' (lent to the models that train none)' if model == BASELINE else ''}: mAP "
             f"{100 * s['mAP']:.1f} % over object classes, precision {100 * s['precision']:.1f} % and recall "
             f"{100 * s['recall']:.1f} % at tau = {s['tau']:g}" for model, s in labelers.items() if s]
    if found:
        lines += ["", "The image labelers, mean over seeds: " + "; ".join(found) + "."]
    return "\n".join(lines) + "\n"


def _timing(timings: dict) -> str:
    if not timings.get("seeds_computed"):
        return f"this command rewrote the outputs from the saved per-seed results in {timings['wall_s']:.0f} s"
    cache = "warm" if timings.get("cache_warm") else "cold or partly cold"
    return (f"wall time {timings['wall_s']:.0f} s for {timings['seeds_computed']} seed(s) in {timings['jobs']} "
            f"process(es) of {timings['threads']} thread(s), model cache {cache}")


def report_markdown(summary: dict) -> str:
    """The run's results as one Markdown document (``report.md``; spliced into validation/README.md)."""
    cfg, md, splits = summary["config"], summary["markdown"], summary["splits"]
    lines = [f"Measured by `python validation/noisy_labels.py {summary['command']}` "
             f"({cfg['seeds']} seed(s), {summary['images']} images of the `{splits['evaluated']}` split, "
             f"{summary['versions']['platform']}, {summary['versions']['cpu']}, torch {summary['versions']['torch']}; "
             f"{_timing(summary['timings'])}).", "", headline_markdown(summary)]
    lines += ["Models per seed, each trained for the same number of segmenter updates: " + ", ".join(
        f"`{m}` {info['segmenter_updates']}" for m, info in summary["models"].items()) + ". Budgets and every "
        f"other choice are made on the selection split `{splits['selection']}`, disjoint from the "
        f"`{splits['evaluated']}` images every reported number comes from; tau = {cfg['tau']:g} is fixed in "
        "advance, and the tau curves below describe, they choose nothing.", ""]
    if "plateau" in md:
        lines += [f"#### Learning curves (MIOU on the selection split `{splits['selection']}` during training: no "
                  "labels for `unfused`, oracle labels for the fused models; `learning_curves.png`)", "",
                  md["plateau"], "", "A cosine schedule flattens the end of every curve by construction: a small "
                  "last-quarter change is no evidence of a plateau on its own.", ""]
    if "budget_check" in md:
        lines += [md["budget_check"], "", "A model still learning at the budget would gain at twice the epochs; a "
                  "change within the seed-to-seed sd of the table below says the budget is on its plateau.", ""]
    lines += [f"#### All conditions (mean ± sd over seeds; MIOU's {LEVEL} CI over seeds, t, and over images, "
              "bootstrap, the latter conditional on the trained networks)", "", md["table"], "",
              "#### Labels per condition (means over images and seeds)", "", md["labels"], "",
              "#### Claims (B - A in MIOU points)", "",
              CLAIMS_METHOD, "", md["claims"], "",
              "#### The theory's verdicts", "",
              THEORY_METHOD, "", md["verdicts"], "", md["equation_tests"], "",
              "#### Count sufficiency: confusable against distant outliers (theory: a - b = 0)", "",
              f"Per image, averaged over seeds: {LEVEL} bootstrap CI and sign-flip p over images, conditional on the "
              "trained networks; d_z over the images.", "", md["count_sufficiency"], "",
              "#### Case 2: pixels lost, PA drop and log(n/k')", "",
              "Per model: the images where Case 2 keeps every true label (k >= n), the fraction of pixels whose class "
              f"Case 2 drops and the PA it costs ({LEVEL} CIs over images), Eq. 12's log(n/k'), r: the correlations "
              "of the PA drop with the lost fraction and with log(n/k'), and the R² of the PA drop linear in n, k', "
              "m' (the theory-free control).", "",
              md["case2"], ""]
    if "tau_curve" in md:
        lines += [f"#### MIOU against tau (mean [{LEVEL} CI over seeds]; `tau_curve.png`)", "",
                  "At tau = 0 the labeler keeps every class, so each curve starts at its own model's unfused score; "
                  "the paper reads that anchor as the baseline's. The second table sets it against the baseline.", "",
                  md["tau_curve"], ""]
    if "ambiguity" in md:
        lines += ["#### Gains against scene ambiguity (mean ± sd over seeds; `ambiguity.png`)", "", md["ambiguity"],
                  ""]
    return "\n".join(lines).rstrip("\n") + "\n"
