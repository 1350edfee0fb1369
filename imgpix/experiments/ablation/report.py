"""The ablations' outputs: tables (CSV: every number; Markdown: the printed form), learning curves, plots, the
summary, and the text for validation/README.md."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..report import markdown_table, pyplot, versions
from ..runner import ExperimentError, Outputs
from .analysis import Cells, curves, plateau, table
from .design import PAPER_NOTE, TABLES, VARIANTS, AblationConfig, curve_name

FIGURES = ("learning_curves.png", "tables.png")
# every name a run may write (what --force removes from a run that recorded none of its own)
OUTPUTS = ("cells", "summary.json", *(f"{t}.{ext}" for t in (*TABLES, "curves") for ext in ("csv", "md")), *FIGURES)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {sd:.2f}"


def _interval(value: float, low: float, high: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def _paper(value) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def _p(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The printed form of a table: MIOU mean ± sd, deltas with CIs, p-values, the paper beside us."""
    return pd.DataFrame({
        "row": frame["row"], "updates": frame["updates"],
        "MIOU (mean ± sd)": [_pm(m, s) for m, s in zip(frame["MIOU"], frame["MIOU_sd"])],
        "PA": [_pm(m, s) for m, s in zip(frame["PA"], frame["PA_sd"])],
        "vs": frame["reference"],
        "ΔMIOU [95% CI, images]": [_interval(v, lo, hi) for v, lo, hi in
                                   zip(frame["delta"], frame["delta_ci_low"], frame["delta_ci_high"])],
        "p (images)": [_p(p) for p in frame["p_images"]],
        "ΔMIOU 95% CI (seeds, t)": ["" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in
                                    zip(frame["delta_seeds_ci_low"], frame["delta_seeds_ci_high"])],
        "p (seeds)": [_p(p) for p in frame["p_seeds"]],
        "d_z": ["" if math.isnan(d) else f"{d:.2f}" for d in frame["d_z_seeds"]],
        "agree %": ["" if math.isnan(a) else f"{a:.2f}" for a in frame["agree_%"]],
        "paper MIOU": [_paper(v) for v in frame["paper_MIOU"]],
        "paper Δ": ["" if not r else _paper(d) for r, d in zip(frame["reference"], frame["paper_delta"])],
        "sign agrees": frame["sign_agrees"],
    })


def plot_learning_curves(history: pd.DataFrame, outputs: Outputs) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(zip(VARIANTS, plt.get_cmap("tab10").colors))
    for variant, group in history.groupby("variant", sort=False):
        ax = axes[0 if VARIANTS[variant]["fusion"] is None else 1]
        for seed, run in group.groupby("seed"):
            ax.plot(run["updates"], run["MIOU"], color=colors[variant], alpha=0.3, linewidth=0.8)
        mean = group.groupby("updates")["MIOU"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colors[variant], linewidth=2, label=curve_name(variant))
    for ax, title in zip(axes, ("no image labels (val, unfused)", "fused rows (val, oracle labels)")):
        ax.set(xlabel="segmenter updates", title=title)
        ax.legend(fontsize=8, title="mean over seeds (thin: each seed)", title_fontsize=7)
    axes[0].set_ylabel("validation MIOU (%)")
    outputs.save_figure("learning_curves.png", fig)


def plot_tables(frames: dict[str, pd.DataFrame], outputs: Outputs) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(5.5 * len(frames), 4.8), sharey=True)
    for ax, (key, frame) in zip(np.atleast_1d(axes), frames.items()):
        x = np.arange(len(frame))
        ax.bar(x, frame["MIOU"], yerr=frame["MIOU_sd"], capsize=3, color="tab:blue",
               label=f"ours (mean ± sd, {int(frame['seeds'].iloc[0])} seeds)")
        known = frame["paper_MIOU"].notna()
        ax.scatter(x[known], frame.loc[known, "paper_MIOU"], color="black", marker="D", zorder=3, label="paper")
        ax.set_xticks(x, frame["row"], rotation=30, ha="right", fontsize=7)
        ax.set(title=TABLES[key][0].split(":")[0], ylim=(0, 118))
        ax.legend(fontsize=8, loc="upper center", ncol=2)  # above the bars, which reach 100
    np.atleast_1d(axes)[0].set_ylabel("MIOU (%)")
    outputs.save_figure("tables.png", fig)


def write_outputs(cfg: AblationConfig, outputs: Outputs, cells: dict) -> dict:
    """Tables (CSV + Markdown), learning curves, plots; returns the summary (not yet written)."""
    seeds = cfg.seed_count
    updates = {cell["updates"] for cell in cells.values()}
    if len(updates) != 1:
        raise ExperimentError(f"the cells in {outputs.out / 'cells'} made different numbers of segmenter updates "
                              f"({sorted(updates)}); rerun with --force")
    results = Cells(cells, seeds, cfg.resamples)
    frames = {key: table(results, key) for key in TABLES}
    markdown = {}
    for key, frame in frames.items():  # CSV: every number; Markdown: the printed form
        outputs.write_text(f"{key}.csv", frame.to_csv(index=False))
        markdown[key] = f"### {TABLES[key][0]}\n\n" + markdown_table(markdown_frame(frame), floatfmt="g")
        outputs.write_text(f"{key}.md", markdown[key])
    history = curves(cells, seeds)
    outputs.write_table("curves", history)
    plot_learning_curves(history, outputs)
    plot_tables(frames, outputs)
    plateaus = plateau(history)
    markdown["curves"] = "### Learning curves (validation MIOU during training)\n\n" + markdown_table(plateaus)
    return {"config": cfg.identity(), "versions": versions(),
            "variants": {v: {"settings": VARIANTS[v], "epochs": cells[(v, 0)]["epochs"],
                             "segmenter_updates": cells[(v, 0)]["updates"],
                             "train_seconds": [cells[(v, s)]["train_seconds"] for s in range(seeds)],
                             "cache_hits": [cells[(v, s)]["cache_hit"] for s in range(seeds)]} for v in VARIANTS},
            "tables": {key: frame.to_dict("records") for key, frame in frames.items()},
            "plateau": plateaus.to_dict("records"), "markdown": markdown, "paper_note": PAPER_NOTE}


def _timing(timings: dict) -> str:
    if not timings["cells_computed"]:
        return f"this command rewrote the outputs from the saved cells in {timings['wall_s']:.0f} s"
    return f"this command computed {timings['cells_computed']} cells in {timings['wall_s']:.0f} s wall"


def docs_markdown(summary: dict, command: str) -> str:
    """The tables, with how and where they were measured (by ``validation/ablation.py command``), for
    validation/README.md."""
    versions_ = summary["versions"]
    updates = sorted({v["segmenter_updates"] for v in summary["variants"].values()})
    train = sum(sum(v["train_seconds"]) for v in summary["variants"].values())
    head = (f"Measured by `python validation/ablation.py {command}` ({summary['config']['seeds']} seeds, "
            f"{', '.join(map(str, updates))} segmenter updates for every row, {versions_['platform']}, "
            f"{versions_['cpu']}, torch {versions_['torch']}; training took {train:.0f} s summed over the models; "
            f"{_timing(summary['timings'])}). {summary['paper_note']}")
    return head + "\n\n" + "\n".join(summary["markdown"].values())
