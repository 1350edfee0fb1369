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
    if not missing(base.MIOU_seeds_low):
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
