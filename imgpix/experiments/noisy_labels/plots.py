"""The noisy-label experiment's figures: MIOU against tau, nats removed against the theory, learning curves
and gains against scene ambiguity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..report import pyplot
from ..runner import Outputs
from .analysis import row_name
from .design import BASELINE, MODELS, NoiseConfig, condition_names, main_condition
from .markdown import LEVEL, missing

COLORS = {"untrained": "tab:gray", "unfused": "tab:red", "fused": "tab:blue", "fused-labeler": "tab:purple",
          "fused-noisy": "tab:brown"}  # one colour per model in every figure
STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))  # told-apart lines: seeds, overlapping levels
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(i: int) -> dict:
    return {"ls": STYLES[i % len(STYLES)], "marker": MARKERS[i % len(MARKERS)]}


def _legend_below(ax, entries: list[tuple]) -> None:
    """A legend of ``(handle, label)`` entries under the axes, off the data (``tight_layout`` makes room for it);
    a handle may be a tuple of artists drawn on top of each other (a line over its band)."""
    handles, labels = zip(*entries)
    ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def _tau_levels(ax, table: pd.DataFrame, cfg: NoiseConfig) -> list[tuple]:
    """The baseline's MIOU with its interval over seeds, and every model's with oracle labels: horizontal lines
    in their model's colour, each in its own style and width (the widest first, so equal levels stay visible).
    Returns their legend entries."""
    baseline = row_name(BASELINE, main_condition(cfg, "none").name)
    base = table[table.row == baseline].iloc[0]
    handle = ax.axhline(base.MIOU, color="black", ls="--", lw=1.2)
    label = f"{baseline} (the baseline): {base.MIOU:.1f}"
    if not missing(base.MIOU_seeds_low):
        handle = (ax.axhspan(base.MIOU_seeds_low, base.MIOU_seeds_high, color="black", alpha=0.07), handle)
        label += f", band: its {LEVEL} t interval over seeds"
    entries = [(handle, label)]
    oracle = table[table.condition == main_condition(cfg, "oracle").name].reset_index(drop=True)
    for i, row in oracle.iterrows():
        line = ax.axhline(row.MIOU, color=COLORS.get(row.model, "tab:green"), ls=STYLES[1 + i % (len(STYLES) - 1)],
                          lw=max(0.8, 3.5 - 0.9 * i), alpha=0.8, zorder=1.5 + 0.1 * i)
        entries.append((line, f"{row.row}: {row.MIOU:.1f}"))
    return entries


def plot_tau(curve: pd.DataFrame, table: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    """MIOU against the labeler's threshold tau per model (mean over seeds, its t interval over seeds as a band),
    against the baseline and the oracle labels' levels; the default tau marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.4))
    seeds, entries = int(curve["seeds"].max()), []
    for i, model in enumerate(curve["model"].unique()):
        part, color = curve[curve.model == model], COLORS.get(model, "tab:green")
        handle, label = ax.plot(part.tau, part["mean"], color=color, ms=4, lw=1.5, zorder=3, **_style(i))[0], ""
        if part["low"].notna().all():
            handle = (ax.fill_between(part.tau, part["low"].astype(float), part["high"].astype(float), color=color,
                                      alpha=0.15, lw=0), handle)
            label = f", band: {LEVEL} t interval over seeds"
        entries.append((handle, f"{model} + labeler@tau ({'mean over seeds' if seeds > 1 else 'one seed'}{label})"))
    entries += _tau_levels(ax, table, cfg)
    entries.append((ax.axvline(cfg.tau, color="tab:green", lw=1), f"default tau = {cfg.tau:g} (the labeler@{cfg.tau:g} "
                    "rows)"))
    bands = f"bands: {LEVEL} t intervals over {seeds} seeds" if seeds > 1 else "one seed: no intervals"
    ax.set(xlabel="tau (labeler threshold: a class is labelled when its score exceeds tau)", ylabel="MIOU (%)",
           title=f"MIOU against tau (cf. the paper's Fig. 4); {bands}")
    _legend_below(ax, entries)
    outputs.save_figure("tau_curve.png", fig)


def _theory_boxes(ax, parts: dict, sizes: list) -> list:
    """One box per (model, |L|) of the measured nats removed per image, the models side by side at each |L|; the
    median in the model's colour, so a box without spread (the untrained model's) still shows. Returns the
    legend's patches."""
    plt = pyplot()
    width = 0.8 / len(parts)
    handles = []
    for i, (model, part) in enumerate(parts.items()):
        values = [part.loc[part["size"] == size, "removed"].to_numpy() for size in sizes]
        shown = [x for x, v in enumerate(values) if len(v)]
        color = COLORS.get(model, "tab:green")
        ax.boxplot([values[x] for x in shown], positions=[x - 0.4 + width * (i + 0.5) for x in shown],
                   widths=width * 0.85, whis=(5, 95), showfliers=False, patch_artist=True, manage_ticks=False,
                   boxprops={"facecolor": color, "alpha": 0.45, "edgecolor": color}, whiskerprops={"color": color},
                   capprops={"color": color}, medianprops={"color": color, "lw": 2.5}, zorder=3)
        handles.append(plt.matplotlib.patches.Patch(facecolor=color, alpha=0.6, label=f"{model} model"))
    return handles


def plot_theory(records: pd.DataFrame, cfg: NoiseConfig, outputs: Outputs) -> None:
    """Measured nats removed per image at each |L| (oracle and Case 1 labels), one box per model, against the
    theory's log(N/|L|)."""
    plt = pyplot()
    shown = records[records.condition.isin(condition_names(cfg, "oracle") + condition_names(cfg, "case1"))]
    parts = {m: shown[shown.model == m] for m in ("untrained", *cfg.models) if (shown.model == m).any()}
    sizes = sorted(int(s) for s in shown["size"].unique())
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.5, 0.25 * len(parts) * len(sizes) + 2)), 5.2))
    handles = _theory_boxes(ax, parts, sizes)
    theory = np.log(cfg.num_classes / np.array(sizes, dtype=float))
    x = np.arange(len(sizes))
    handles.append(ax.hlines(theory, x - 0.45, x + 0.45, colors="black", linestyles="--", lw=1, zorder=2,
                             label="theory: removed = log(N/|L|) (Eqs. 6, 10)"))
    images = next(iter(parts.values()))["size"].value_counts()
    ax.set_xticks(x, [f"{size}\n{t:.2f}\n{images.get(size, 0)}" for size, t in zip(sizes, theory)], fontsize=8)
    ax.set(xlim=(-0.6, len(sizes) - 0.4), xlabel=f"|L|, the classes labelled; below it log(N/|L|) in nats (N = "
           f"{cfg.num_classes}) and the images of each box", ylabel="measured nats removed per image",
           title="Oracle and Case 1 labels, every image and seed: boxes quartiles, whiskers 5-95%")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=3, frameon=False)
    outputs.save_figure("theory.png", fig)


def _curve_axis(results: list[dict]) -> tuple[str, str]:
    """The learning curves' x column and its label: segmenter updates, or epochs when a cached history
    predates the update counts."""
    if all("updates" in info["history"] for r in results for info in r["models"].values()):
        return "updates", "segmenter updates"
    return "epoch", "epoch (a cached history has no update counts)"


def plot_learning_curves(results: list[dict], split: str, outputs: Outputs) -> None:
    """Every model's validation MIOU against its training, every seed: one colour per model, one line style and
    marker per seed."""
    plt = pyplot()
    Line2D = plt.matplotlib.lines.Line2D
    fig, ax = plt.subplots(figsize=(7, 5))
    column, xlabel = _curve_axis(results)
    for i, r in enumerate(results):
        for j, (model, info) in enumerate(r["models"].items()):  # the first models wider: equal curves stay visible
            h = info["history"]
            ax.plot(h[column], h.MIOU, color=COLORS.get(model, "tab:green"), alpha=0.8, lw=max(0.8, 2.4 - 0.6 * j),
                    zorder=2 + 0.1 * j, ms=4, markevery=max(1, len(h) // 8), **_style(i))
    models = [Line2D([], [], color=COLORS.get(m, "tab:green"), lw=2,
                     label=f"{m} (validated {'with oracle labels' if MODELS[m]['fusion'] else 'without labels'})")
              for m in results[0]["models"]]
    seeds = [Line2D([], [], color="gray", ms=4, **_style(i), label=f"seed {r['seed']}") for i, r in enumerate(results)]
    ax.set(xlabel=xlabel, ylabel=f"MIOU on the selection split '{split}' (%)", title="Learning curves, every seed")
    ax.grid(alpha=0.3)
    rows = max(len(models), len(seeds))  # two columns: the models' colours, the seeds' styles
    blank = [Line2D([], [], alpha=0, label=" ")]
    ax.legend(handles=models + blank * (rows - len(models)) + seeds + blank * (rows - len(seeds)), fontsize=7,
              loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
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
