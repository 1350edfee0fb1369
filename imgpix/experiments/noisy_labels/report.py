"""The noisy-label experiment's outputs: tables (CSV + Markdown), plots, ``report.md`` and the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import theory_tests
from ..report import markdown_table, pyplot, versions
from ..runner import Outputs
from .analysis import (
    ambiguity_table,
    claims,
    headline,
    labeler_summary,
    learning_plateaus,
    results_table,
    row_name,
    tau_curve,
)
from .design import BASELINE, MODELS, NoiseConfig, condition_names, main_condition

TABLES = ("table", "claims", "verdicts", "count_sufficiency", "case2", "tau_curve", "ambiguity")  # .csv and .md
FIGURES = ("tau_curve.png", "theory.png", "learning_curves.png", "ambiguity.png")
# every name a run may write (what --force removes from a run that recorded none of its own)
OUTPUTS = ("seeds", "report.md", "summary.json", *(f"{t}.{ext}" for t in TABLES for ext in ("csv", "md")), *FIGURES)
TABLE_COLUMNS = ["row", "model", "condition", "MIOU", "MIOU_sd", "MIOU_ci_low", "MIOU_ci_high", "PA", "MPA", "FWAA",
                 "n", "size", "kept", "outliers", "removed", "lost_fraction", "updates", "seeds", "images"]


def theory_roles(cfg: NoiseConfig) -> dict[str, list[str]]:
    """The theory tests' roles: the names of this run's conditions of each role."""
    return {role: condition_names(cfg, role) for role in ("oracle", "case1", "case2", "case3")}


def plot_tau(curve: pd.DataFrame, table: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for model, color in zip(curve["model"].unique(), ("tab:blue", "tab:orange", "tab:purple", "tab:brown")):
        part = curve[curve.model == model]
        ax.plot(part.tau, part["mean"], "o-", ms=3, color=color, label=f"{model} + labeler@tau")
        ax.fill_between(part.tau, part["mean"] - part["std"].fillna(0), part["mean"] + part["std"].fillna(0),
                        color=color, alpha=0.15)
    baseline = row_name(BASELINE, main_condition(cfg, "none").name)
    base = table[table.row == baseline].iloc[0]
    ax.axhline(base.MIOU, color="tab:red", ls="--", label=f"baseline: {baseline}")
    ax.axhspan(base.MIOU_ci_low, base.MIOU_ci_high, color="tab:red", alpha=0.08)
    for _, row in table[table.condition == main_condition(cfg, "oracle").name].iterrows():
        ax.axhline(row.MIOU, ls=":", color="tab:green" if row.model == "fused" else "tab:olive", label=row.row)
    ax.set(xlabel="tau (labeler threshold)", ylabel="MIOU (%)", title="MIOU against tau (cf. the paper's Fig. 4)")
    ax.legend(fontsize=7)
    outputs.save_figure("tau_curve.png", fig)


def plot_theory(records: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    """Measured nats removed per image against the theory's log(N/|L|), untrained vs trained."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shown = records.condition.isin(condition_names(cfg, "oracle") + condition_names(cfg, "case1"))
    num_classes = cfg.num_classes
    for model, color in (("untrained", "tab:gray"), ("fused", "tab:blue"), (BASELINE, "tab:orange")):
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


def plot_learning_curves(results: list[dict], outputs: Outputs) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"unfused": "tab:red", "fused": "tab:blue", "fused-labeler": "tab:purple", "fused-noisy": "tab:brown"}
    for r in results:
        for model, info in r["models"].items():
            h = info["history"]
            labels = "oracle" if MODELS[model]["fusion"] else "no"
            label = f"{model} (val MIOU, {labels} labels)" if r is results[0] else None
            ax.plot(h.epoch, h.MIOU, color=colors[model], alpha=0.7, label=label)
    ax.set(xlabel="epoch", ylabel="validation MIOU (%)", title="Learning curves, every seed")
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


def write_outputs(cfg: NoiseConfig, outputs: Outputs, results: list[dict]) -> dict:
    """Tables, claims, verdicts and plots from every seed's result; returns the summary (not yet written)."""
    table = results_table(results, cfg)
    markdown = {"table": outputs.write_table("table", table[TABLE_COLUMNS])}
    claim_table = claims(results, cfg)
    markdown["claims"] = outputs.write_table("claims", claim_table, floatfmt=".3g")
    records = pd.concat([r["records"] for r in results], ignore_index=True)
    roles, resamples = theory_roles(cfg), {"n_resamples": cfg.resamples}
    verdicts = theory_tests.verdicts(records, cfg.num_classes, roles=roles, **resamples)
    markdown["verdicts"] = outputs.write_table("verdicts", verdicts, floatfmt=".3g")
    confusable, distant = condition_names(cfg, "confusable")[0], condition_names(cfg, "distant")[0]
    trained = records[records.model != "untrained"]
    sufficiency = pd.concat([theory_tests.count_sufficiency(trained, confusable, distant, value=value, **resamples)
                             for value in ("accuracy_fused", "removed")], ignore_index=True)
    markdown["count_sufficiency"] = outputs.write_table("count_sufficiency", sufficiency, floatfmt=".3g")
    case2 = theory_tests.case2_loss(records, roles=roles, **resamples)
    markdown["case2"] = outputs.write_table("case2", case2, floatfmt=".3g")
    curve = tau_curve(results, cfg)
    if len(curve):
        outputs.write_table("tau_curve", curve)
        plot_tau(curve, table, cfg, outputs)
    plot_theory(records, cfg, outputs)
    plot_learning_curves(results, outputs)
    plateaus = learning_plateaus(results)
    markdown["plateau"] = markdown_table(plateaus).rstrip("\n")
    summary = {"config": cfg.identity(), "versions": versions(), "table": table.to_dict("records"),
               "claims": claim_table.to_dict("records"), "verdicts": verdicts.to_dict("records"),
               "count_sufficiency": sufficiency.to_dict("records"), "case2": case2.to_dict("records"),
               "labeler": labeler_summary(results), "headline": headline(claim_table),
               "models": {m: {"segmenter_updates": results[0]["models"][m]["updates"],
                              "train_seconds": [r["models"][m]["train_seconds"] for r in results]}
                          for m in cfg.models},
               "plateau": plateaus.to_dict("records"), "markdown": markdown,
               "images": int(table["images"].iloc[0])}
    if cfg.ambiguity_sweep:
        sweep = ambiguity_table(results, cfg)
        flat = sweep.copy()
        flat.columns = [" ".join(str(p) for p in c if p).strip() for c in flat.columns]
        markdown["ambiguity"] = outputs.write_table("ambiguity", flat)
        plot_ambiguity(sweep, outputs)
        summary["ambiguity"] = flat.to_dict("records")
    if len(curve):
        pivot = curve.pivot(index="tau", columns="model", values="mean").reset_index()
        markdown["tau_curve"] = markdown_table(pivot).rstrip("\n")
    return summary


def _line(claim: dict) -> str:
    return (f"`{claim['b']}` - `{claim['a']}`: **{claim['difference']:+.2f}** MIOU points "
            f"(95% CI {claim['ci_low']:+.2f} to {claim['ci_high']:+.2f}, permutation p = {claim['p_value']:.3g})")


def _timing(timings: dict) -> str:
    if not timings.get("seeds_computed"):
        return f"this command rewrote the outputs from the saved per-seed results in {timings['wall_s']:.0f} s"
    cache = "warm" if timings.get("cache_warm") else "cold or partly cold"
    return (f"wall time {timings['wall_s']:.0f} s for {timings['seeds_computed']} seed(s) in {timings['jobs']} "
            f"process(es) of {timings['threads']} thread(s), model cache {cache}")


def headline_markdown(summary: dict) -> str:
    """The headline alone: predicted labels against the fair baseline (for the top-level README)."""
    lines = ["**Headline: predicted labels against the fair baseline.** Differences in MIOU points, mean over "
             f"{summary['config']['seeds']} seed(s); CI: bootstrap over images (one draw for all seeds); p: the "
             "two conditions swapped at random per image.", ""]
    lines += [f"- {_line(c)}" for c in summary["headline"].values()]
    labeler = summary.get("labeler")
    if labeler:
        lines += ["", f"The image labeler: mAP {100 * labeler['mAP']:.1f} % over object classes, precision "
                      f"{100 * labeler['precision']:.1f} % and recall {100 * labeler['recall']:.1f} % at tau = "
                      f"{labeler['tau']:g}."]
    return "\n".join(lines) + "\n"


def report_markdown(summary: dict) -> str:
    """The run's results as one Markdown document (``report.md``; spliced into validation/README.md)."""
    cfg, md = summary["config"], summary["markdown"]
    lines = [f"Measured by `python validation/noisy_labels.py {summary['command']}` "
             f"({cfg['seeds']} seed(s), {summary['images']} validation images, {summary['versions']['platform']}, "
             f"{summary['versions']['cpu']}, "
             f"torch {summary['versions']['torch']}; {_timing(summary['timings'])}).", "", headline_markdown(summary)]
    lines += ["Models per seed, each trained for the same number of segmenter updates: " + ", ".join(
        f"`{m}` {info['segmenter_updates']}" for m, info in summary["models"].items()) + ".", ""]
    if "plateau" in md:
        lines += ["#### Learning curves (validation MIOU during training: no labels for `unfused`, oracle labels "
                  "for the fused models; `learning_curves.png`)", "", md["plateau"], ""]
    lines += [
        "#### All conditions (scores in percent, mean over seeds; MIOU CI over images)", "", md["table"],
        "#### Claims (paired, B - A)", "", md["claims"], "#### The theory's verdicts", "", md["verdicts"],
        "#### Count sufficiency: confusable against distant outliers (theory: a - b = 0)", "",
        md["count_sufficiency"], "#### Case 2: pixels lost, PA drop and log(n/k)", "", md["case2"]]
    if "tau_curve" in md:
        lines += ["#### MIOU against tau (mean over seeds; `tau_curve.png`)", "", md["tau_curve"], ""]
    if "ambiguity" in md:
        lines += ["#### Gains against scene ambiguity (`ambiguity.png`)", "", md["ambiguity"]]
    return "\n".join(lines) + "\n"
