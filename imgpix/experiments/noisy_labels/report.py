"""The noisy-label experiment's outputs: tables (CSV with every number, Markdown that fits a page), plots,
``report.md`` and the summary.

Markdown never shows ``nan`` or ``inf``: a number that does not exist is a dash, and a sentence beside the
table says why (e.g. "one seed: no interval over seeds").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import theory_tests
from ..report import markdown_table, pyplot, versions
from ..runner import Outputs
from ..stats import CONFIDENCE, p_text
from .analysis import (
    CONTRADICTED,
    SUPPORTED,
    UNTESTED,
    ambiguity_table,
    claims,
    headline,
    labeler_summary,
    learning_plateaus,
    results_table,
    row_name,
    tau_anchor,
    tau_curve,
)
from .design import BASELINE, MODELS, NoiseConfig, condition_names, main_condition

TABLES = ("table", "claims", "verdicts", "equation_tests", "count_sufficiency", "case2", "tau_curve",
          "tau_anchor", "ambiguity")  # .csv and .md
FIGURES = ("tau_curve.png", "theory.png", "learning_curves.png", "ambiguity.png")
# every name a run may write (what --force removes from a run that recorded none of its own)
OUTPUTS = ("seeds", "report.md", "summary.json", *(f"{t}.{ext}" for t in TABLES for ext in ("csv", "md")), *FIGURES)
TABLE_COLUMNS = ["row", "model", "condition", "MIOU", "MIOU_sd", "MIOU_seeds_low", "MIOU_seeds_high", "MIOU_ci_low",
                 "MIOU_ci_high", "PA", "MPA", "FWAA", "n", "size", "kept", "outliers", "removed", "lost_fraction",
                 "updates", "seeds", "images"]
DASH = "—"
LEVEL = f"{100 * CONFIDENCE:g}%"
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
    f"{theory_tests.RATIO_TOL:g}, intercept 0 ± {theory_tests.INTERCEPT_TOL:g}, in nats or, for the assumption, in "
    "probability), refuted when it lies outside, inconclusive otherwise; \"6 vs n\" is a direction (holds when the "
    "slope's CI lies below 0). CIs resample images (all seeds of an image together): they describe the trained "
    "networks. The uniform (untrained) network is an identity check of the measurement, never evidence.")


# -- cells ----------------------------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value))


def num(value, fmt: str = ".3g") -> str:
    """A number as text (below 1e-6 in size: 0, rounding noise); a dash where it does not exist (None, NaN,
    infinite)."""
    if _missing(value):
        return DASH
    return format(0.0 if abs(value) < 1e-6 else value, fmt)


def interval(value, low, high, fmt: str = ".3g") -> str:
    """``"9.71 [7.85, 12.2]"``; the value alone where the interval does not exist."""
    if _missing(low) or _missing(high):
        return num(value, fmt)
    return f"{num(value, fmt)} [{num(low, fmt)}, {num(high, fmt)}]"


def bounds(low, high, fmt: str = ".1f") -> str:
    """``"[7.9, 12.2]"``, or a dash where the interval does not exist."""
    return DASH if _missing(low) or _missing(high) else f"[{num(low, fmt)}, {num(high, fmt)}]"


def _md(header: list[str], rows: list[list]) -> str:
    return markdown_table(pd.DataFrame(rows, columns=header)).rstrip("\n")


def _write(outputs: Outputs, name: str, frame: pd.DataFrame, markdown: str) -> str:
    """``name.csv`` (every number of ``frame``) and ``name.md`` (the page-wide ``markdown``)."""
    outputs.write_text(f"{name}.csv", frame.to_csv(index=False))
    outputs.write_text(f"{name}.md", markdown + "\n")
    return markdown


def _records(frame: pd.DataFrame) -> list[dict]:
    """``frame`` as JSON-safe records: NaN and infinity become None."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


# -- the tables -----------------------------------------------------------------------------------------------


def scores_markdown(table: pd.DataFrame) -> str:
    """Scores per row: MIOU with its intervals over seeds and over images, the other metrics."""
    rows = [[r.row, f"{r.MIOU:.2f} ± {r.MIOU_sd:.2f}", bounds(r.MIOU_seeds_low, r.MIOU_seeds_high),
             bounds(r.MIOU_ci_low, r.MIOU_ci_high), f"{r.PA:.2f}", f"{r.MPA:.2f}", f"{r.FWAA:.2f}"]
            for r in table.itertuples()]
    text = _md(["row", "MIOU ± sd", "CI (seeds)", "CI (images)", "PA", "MPA", "FWAA"], rows)
    if (table.seeds < 2).any():
        text += "\n\nOne seed: no sd and no interval over seeds (a dash)."
    return text


def labels_markdown(table: pd.DataFrame) -> str:
    """Label counts per condition (means over images and seeds) and the nats the labels remove, per model."""
    models = list(table.model.unique())
    removed = table.pivot(index="condition", columns="model", values="removed")
    rows = [[r.condition, f"{r.n:.2f}", f"{r.size:.2f}", f"{r.kept:.2f}", f"{r.outliers:.2f}", f"{r.lost_fraction:.3f}",
             " / ".join(num(removed.loc[r.condition, m], ".3f") for m in models)]
            for r in table.drop_duplicates("condition").itertuples()]
    return _md(["labels", "n", "|L|", "k'", "m'", "lost fraction", f"nats removed ({' / '.join(models)})"], rows)


def _power(claim: dict) -> str:
    needed = claim.get("seeds_needed")
    if claim["decision"] in (SUPPORTED, CONTRADICTED, UNTESTED) or claim["seeds"] < 2:
        return ""
    if needed is None:
        return "no number of seeds would decide a mean difference of 0" if claim["difference"] == 0 else \
            "more seeds than can be trained"
    return f"{needed} seeds would decide it at this mean and sd"


def _decision_text(claim: dict) -> str:
    if claim["decision"] == UNTESTED:
        return claim["note"]
    if claim["seeds"] < 2:
        return "not decided: one seed, no interval over seeds"
    words = {SUPPORTED: "**supported**", CONTRADICTED: "**contradicted** (the other direction)"}
    return words.get(claim["decision"], "**not decided**")


def _needed(claim: dict) -> str:
    """The seeds-needed cell: only where the run does not decide the claim."""
    if not _power(claim):
        return DASH
    return str(claim["seeds_needed"]) if claim.get("seeds_needed") else "none"


def claims_markdown(table: pd.DataFrame, resamples: int) -> str:
    """Three page-wide tables: what is compared, the decision over seeds, the image-level interval."""
    claims = table.to_dict("records")
    what = _md(["claim", "B", "A", "expected"], [[c["claim"], c["b"], c["a"], c["expected"]] for c in claims])
    seeds = _md(["claim", "B - A", "per seed", "sd", "CI (seeds)", "p (seeds)", "decision", "needed"],
                [[c["claim"], f"{c['difference']:+.2f}", ", ".join(f"{v:+.1f}" for v in c["per_seed"]),
                  num(c["seed_sd"], ".2f"), bounds(c["seeds_ci_low"], c["seeds_ci_high"], "+.1f"),
                  DASH if _missing(c["seeds_p"]) else p_text(c["seeds_p"]), c["decision"], _needed(c)]
                 for c in claims])
    given = _md(["claim", "CI (images)", "p (images)"],
                [[c["claim"], bounds(c["images_ci_low"], c["images_ci_high"], "+.2f"),
                  p_text(c["images_p"], resamples)] for c in claims])
    notes = [f"- `{c['claim']}`: {c['note']}" for c in claims if c["note"]]
    return "\n\n".join([what, seeds, given] + (["\n".join(notes)] if notes else []))


def _grouped(notes: list[tuple[str, str]]) -> str:
    """``(text, who)`` pairs as bullets, each text once with everyone it applies to."""
    found: dict[str, list[str]] = {}
    for text, who in notes:
        found.setdefault(text, []).append(who)
    return "\n".join(f"- {text} ({', '.join(dict.fromkeys(who))})" for text, who in found.items())


def equation_markdown(tests: pd.DataFrame) -> str:
    """Per test and model, two page-wide tables: the measured mean, the predicted, the ratio and the verdict;
    then, where x varies, the fit (slope, intercept, r) beside the theory-free control; then the notes (the
    uniform network's only when its identity check fails)."""
    shown = tests[tests.rows > 0]
    main = [[t.equation, t.model, interval(t.measured, t.measured_low, t.measured_high), num(t.theory),
             interval(t.ratio, t.ratio_low, t.ratio_high), t.verdict] for t in shown.itertuples()]
    fits = [[t.equation, t.model, interval(t.slope, t.slope_low, t.slope_high), num(t.theory_slope),
             interval(t.intercept, t.intercept_low, t.intercept_high), num(t.r, ".2f"), num(t.r2_control, ".2f")]
            for t in shown.itertuples() if t.x_varies]
    notes = [(f"{t.equation}: {part}", t.model or "every model") for t in tests.itertuples()
             if t.model != theory_tests.UNTRAINED or t.verdict == theory_tests.IDENTITY_FAILS
             for part in (t.note or "").split("; ") if part]
    lines = [_md(["test", "model", f"measured [{LEVEL} CI]", "predicted", "ratio [CI]", "verdict"], main)]
    if fits:
        lines.append(_md(["test", "model", "slope [CI]", "theory", "intercept [CI]", "r",
                          "control R²"], fits))
    if notes:
        lines.append(_grouped(notes))
    return "\n\n".join(lines)


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    legend = _md(["test", "measured per image", "predicted"],
                 [[v.equation, v.tested, v.theory_form] for v in verdicts.itertuples()])
    words = _md(["test", "verdict (trained networks)", "uniform network"],
                [[v.equation, v.verdict, v.identity_check] for v in verdicts.itertuples()])
    notes = [f"- {v.equation}: {v.note}" for v in verdicts.itertuples() if v.note]
    return "\n\n".join([legend, words] + (["\n".join(notes)] if notes else []))


def sufficiency_markdown(frame: pd.DataFrame, resamples: int) -> str:
    rows = [[r.model, r.value, f"{r.mean_a:.3g}", f"{r.mean_b:.3g}", interval(r.effect, r.effect_low, r.effect_high),
             p_text(r.p_value, resamples), num(r.effect_size, ".2f")] for r in frame.itertuples()]
    return _md(["model", "value", "confusable", "distant", "a - b [CI]", "p", "d_z"], rows)


def case2_markdown(frame: pd.DataFrame) -> str:
    rows = [[r.model, f"{r.oracle_images} of {r.images}", interval(r.lost_fraction, r.lost_fraction_low,
                                                                    r.lost_fraction_high),
             interval(r.pa_drop, r.pa_drop_low, r.pa_drop_high), num(r.lost_nats),
             f"{num(r.r_fraction, '.2f')}, {num(r.r_nats, '.2f')}", num(r.r2_control, ".2f")]
            for r in frame.itertuples()]
    table = _md(["model", "k >= n", "lost fraction", "PA drop", "log(n/k')", "r", "control R²"], rows)
    notes = [(part, r.model) for r in frame.itertuples() for part in (r.note or "").split("; ") if part]
    return "\n\n".join([table] + ([_grouped(notes)] if notes else []))


def tau_markdown(curve: pd.DataFrame, anchor: pd.DataFrame) -> str:
    models = list(curve.model.unique())
    rows = []
    for tau, group in curve.groupby("tau", sort=True):
        cells = {r.model: interval(r.mean, r.low, r.high, ".1f") for r in group.itertuples()}
        rows.append([f"{tau:.2f}"] + [cells.get(m, DASH) for m in models])
    lines = [_md(["tau"] + [f"{m} + labeler@tau" for m in models], rows)]
    if len(anchor):
        lines.append(_md(["model", "MIOU at tau = 0", "baseline MIOU", f"difference [{LEVEL} CI, seeds]",
                          "p (t, seeds)"],
                         [[a.model, interval(a.MIOU_tau0, a.MIOU_tau0_low, a.MIOU_tau0_high, ".2f"),
                           f"{a.baseline_MIOU:.2f}",
                           interval(a.difference, a.difference_low, a.difference_high, "+.2f"),
                           p_text(a.seeds_p) if not _missing(a.seeds_p) else DASH] for a in anchor.itertuples()]))
    return "\n\n".join(lines)


def plateau_markdown(plateaus: pd.DataFrame) -> str:
    rows = [[p.model, p.updates, p.epochs, f"{p.final_val_MIOU:.2f}", num(p.last_quarter_change, "+.2f")]
            for p in plateaus.itertuples()]
    text = _md(["model", "updates", "epochs", "final MIOU", "last-quarter change"], rows)
    if plateaus.last_quarter_change.isna().any():
        text += "\n\nA dash: too few epochs for a last-quarter change."
    return text


def ambiguity_markdown(frame: pd.DataFrame) -> str:
    """Rows: the baseline's MIOU, each gain and the nats oracle labels remove; columns: the ambiguities."""
    names = [c for c in frame.columns.levels[0] if c != "ambiguity"]
    rows = [[name.replace("gain ", "gain: ")] + [f"{r[(name, 'mean')]:.2f} ± {num(r[(name, 'std')], '.2f')}"
                                                 for _, r in frame.iterrows()] for name in names]
    return _md(["ambiguity"] + [f"{a:g}" for a in frame["ambiguity"]], rows)


# -- plots ----------------------------------------------------------------------------------------------------


def plot_tau(curve: pd.DataFrame, table: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for model, color in zip(curve["model"].unique(), ("tab:blue", "tab:orange", "tab:purple", "tab:brown")):
        part = curve[curve.model == model]
        ax.plot(part.tau, part["mean"], "o-", ms=3, color=color, label=f"{model} + labeler@tau")
        if part["low"].notna().all():
            ax.fill_between(part.tau, part["low"].astype(float), part["high"].astype(float), color=color, alpha=0.15)
    baseline = row_name(BASELINE, main_condition(cfg, "none").name)
    base = table[table.row == baseline].iloc[0]
    ax.axhline(base.MIOU, color="tab:red", ls="--", label=f"baseline: {baseline}")
    if not _missing(base.MIOU_seeds_low):
        ax.axhspan(base.MIOU_seeds_low, base.MIOU_seeds_high, color="tab:red", alpha=0.08)
    for _, row in table[table.condition == main_condition(cfg, "oracle").name].iterrows():
        ax.axhline(row.MIOU, ls=":", color="tab:green" if row.model == "fused" else "tab:olive", label=row.row)
    ax.set(xlabel="tau (labeler threshold)", ylabel="MIOU (%)",
           title=f"MIOU against tau, {LEVEL} CI over seeds (cf. the paper's Fig. 4)")
    ax.legend(fontsize=7)
    outputs.save_figure("tau_curve.png", fig)


def plot_theory(records: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    """Measured nats removed per image against the theory's log(N/|L|), untrained vs trained."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shown = records.condition.isin(condition_names(cfg, "oracle") + condition_names(cfg, "case1"))
    num_classes = cfg.num_classes
    colors = ("tab:gray", "tab:orange", "tab:blue", "tab:purple", "tab:brown")
    for model, color in zip(("untrained", *cfg.models), colors):
        part = records[shown & (records.model == model)]
        if len(part):
            ax.scatter(np.log(num_classes / part["size"]), part["removed"], s=4, alpha=0.3, color=color,
                       label=f"{model} model")
    top = np.log(num_classes)
    ax.plot([0, top], [0, top], "k--", lw=1, label="theory: removed = log(N/|L|) (Eqs. 6, 10)")
    ax.set(xlabel="log(N / |L|) (nats)", ylabel="measured nats removed per image",
           title="Oracle and Case 1 labels, per image")
    ax.legend(fontsize=7, markerscale=3)
    outputs.save_figure("theory.png", fig)


def plot_learning_curves(results: list[dict], split: str, outputs: Outputs) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"unfused": "tab:red", "fused": "tab:blue", "fused-labeler": "tab:purple", "fused-noisy": "tab:brown"}
    for r in results:
        for model, info in r["models"].items():
            h = info["history"]
            labels = "oracle" if MODELS[model]["fusion"] else "no"
            label = f"{model} ({labels} labels)" if r is results[0] else None
            ax.plot(h.epoch, h.MIOU, color=colors[model], alpha=0.7, label=label)
    ax.set(xlabel="epoch", ylabel=f"MIOU on the selection split '{split}' (%)", title="Learning curves, every seed")
    ax.legend(fontsize=7)
    outputs.save_figure("learning_curves.png", fig)


def plot_ambiguity(frame: pd.DataFrame, outputs: Outputs) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = frame["ambiguity"]
    for column in [c for c in frame.columns.levels[0] if str(c).startswith("gain")]:
        ax.errorbar(x, frame[(column, "mean")], yerr=frame[(column, "std")].fillna(0), marker="o", capsize=3,
                    label=column.replace("gain ", "") + " - baseline")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="scene ambiguity", ylabel="MIOU gain over the baseline (points)")
    twin = ax.twinx()
    twin.plot(x, frame[("oracle_removed_nats", "mean")], "k:", marker="s", label="nats oracle labels remove")
    twin.set_ylabel("nats removed (unfused model, oracle labels)")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize=7)
    outputs.save_figure("ambiguity.png", fig)


# -- the outputs ----------------------------------------------------------------------------------------------


def theory_roles(cfg: NoiseConfig) -> dict[str, list[str]]:
    """The theory tests' roles: the names of this run's conditions of each role."""
    return {role: condition_names(cfg, role) for role in ("oracle", "case1", "case2", "case3")}


def write_outputs(cfg: NoiseConfig, outputs: Outputs, results: list[dict]) -> dict:
    """Tables, claims, verdicts and plots from every seed's result; returns the summary (not yet written)."""
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
    sufficiency = pd.concat([theory_tests.count_sufficiency(trained, confusable, distant, value=value, **resamples)
                             for value in ("accuracy_fused", "removed")], ignore_index=True)
    markdown["count_sufficiency"] = _write(outputs, "count_sufficiency", sufficiency,
                                           sufficiency_markdown(sufficiency, cfg.resamples))
    case2 = theory_tests.case2_loss(records, roles=roles, **resamples)
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
                 f"{_decision_text(claim)}")
    else:
        text += f"): {_decision_text(claim)}"
    power = _power(claim)
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
