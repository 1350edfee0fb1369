"""The ablations' outputs: tables (CSV: every number; Markdown: the printed form), learning curves, plots, the
summary, and the text for validation/README.md."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..report import markdown_table, pyplot, versions
from ..runner import ExperimentError, Outputs
from .analysis import COLLAPSE_MARGIN, Cells, curves, plateau, table, tuning_table
from .design import EPOCH_MATCHED, PAPER_NOTE, PAPER_SETTINGS, TABLES, VARIANTS, AblationConfig, curve_name

FIGURES = ("learning_curves.png", "tables.png")
# every name a run may write (what --force removes from a run that recorded none of its own)
OUTPUTS = ("cells", "tuning", "summary.json", "tuning.csv",
           *(f"{t}.{ext}" for t in (*TABLES, "curves") for ext in ("csv", "md")), *FIGURES)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {sd:.2f}"


def _interval(value: float, low: float, high: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def _paper(value) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def _p(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


def markdown_frames(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The printed form of a table, in two parts that fit a page: the scores (MIOU mean ± sd, the per-seed
    differences to the reference, the paper beside us, collapsed seeds), then the comparison decided over seeds
    (t interval, p, verdict) beside the interval over images given the trained networks."""
    per_seed = ["" if not isinstance(d, list) else ", ".join(f"{v:+.1f}" for v in d) for d in frame["per_seed_delta"]]
    scores = pd.DataFrame({
        "row": frame["row"], "updates": frame["updates"],
        "MIOU (mean ± sd)": [_pm(m, s) for m, s in zip(frame["MIOU"], frame["MIOU_sd"])],
        "Δ per seed": per_seed,
        "paper MIOU": [_paper(v) for v in frame["paper_MIOU"]],
        "collapsed": [", ".join(map(str, c)) if c else "" for c in frame["collapsed_seeds"]],
    })
    compared = frame["reference"].astype(str) != ""
    comparison = pd.DataFrame({
        "row": frame["row"], "vs": frame["reference"],
        "Δ [95% CI over seeds]": [_interval(v, lo, hi) for v, lo, hi in
                                  zip(frame["delta"], frame["delta_seeds_ci_low"], frame["delta_seeds_ci_high"])],
        "p (seeds)": [_p(p) for p in frame["p_seeds"]],
        "Δ CI (images)": ["" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in
                          zip(frame["delta_ci_low"], frame["delta_ci_high"])],
        "verdict": frame["verdict"], "vs paper": frame["vs_paper"],
    })[compared.to_numpy()]
    return scores, comparison


def agreement_markdown(frame: pd.DataFrame) -> str:
    """Table 3's test-time rows: the share of pixels where the operator predicts what dot predicts."""
    known = frame[frame["agree_%"].notna()]
    return "".join(f"- {row}: agrees with dot on {a:.2f} % of the labelled pixels\n"
                   for row, a in zip(known["row"], known["agree_%"]))


def tuning_markdown(table: pd.DataFrame, split: str) -> str:
    if table.empty:
        return "### Tuning\n\nNot tuned (--no-tune): every swept setting at imgpix's default.\n"
    shown = pd.DataFrame({
        "variant": table["variant"], "setting": table["setting"], "value": table["value"].map("{:g}".format),
        f"MIOU on `{split}` (seed 0)": ["" if math.isnan(v) else f"{v:.2f}" for v in table["selection_MIOU"]],
        "failed": table["failed"], "chosen": ["yes" if c else "" for c in table["chosen"]]})
    return (f"### Tuning (seed 0, on the selection split `{split}`; the first value of each setting is imgpix's "
            f"default; failed runs are never chosen)\n\n" + markdown_table(shown))


def plot_learning_curves(history: pd.DataFrame, split: str, outputs: Outputs) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(zip(VARIANTS, plt.get_cmap("tab10").colors))
    styles = ("-", "--", ":", "-.")
    for variant, group in history.groupby("variant", sort=False):
        ax = axes[0 if VARIANTS[variant]["fusion"] is None else 1]
        for seed, run in group.groupby("seed"):
            ax.plot(run["updates"], run["MIOU"], color=colors[variant], linestyle=styles[seed % len(styles)],
                    linewidth=1, label=curve_name(variant) if seed == 0 else None)
    for seed in sorted(history["seed"].unique()):
        axes[1].plot([], [], color="gray", linestyle=styles[seed % len(styles)], label=f"seed {seed}")
    for ax, title in zip(axes, ("no image labels (unfused)", "fused rows (oracle labels)")):
        ax.set(xlabel="segmenter updates", title=title)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(f"MIOU on the selection split `{split}` (%)")
    outputs.save_figure("learning_curves.png", fig)


def plot_tables(frames: dict[str, pd.DataFrame], outputs: Outputs) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(4.8 * len(frames), 4.8), sharey=True)
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


def _model_seconds(cells: dict, sweep: list[dict]) -> dict[str, float]:
    """Each trained model's training time (its epochs' seconds in the cache), once per model."""
    units = [*cells.values(), *sweep]
    return {u["model"]: u["train_seconds"] for u in units if u.get("model")}


def write_outputs(cfg: AblationConfig, outputs: Outputs, cells: dict, sweep: list[dict], choices: dict) -> dict:
    """Tables (CSV + Markdown), tuning, learning curves, plots; returns the summary (not yet written)."""
    seeds = cfg.seed_count
    updates = {cell["variant"]: cell["updates"] for cell in cells.values() if cell["variant"] not in EPOCH_MATCHED}
    if len(set(updates.values())) != 1:
        raise ExperimentError(f"the cells in {outputs.out / 'cells'} made different numbers of segmenter updates "
                              f"({sorted(set(updates.values()))}); rerun with --force")
    results = Cells(cells, seeds, cfg.resamples)
    frames = {key: table(results, key) for key in TABLES}
    markdown = {}
    for key, frame in frames.items():  # CSV: every number; Markdown: the printed form
        outputs.write_text(f"{key}.csv", frame.to_csv(index=False))
        scores, comparison = markdown_frames(frame)
        agreement = agreement_markdown(frame)
        markdown[key] = (f"### {TABLES[key][0]}\n\n" + markdown_table(scores, floatfmt="g") + "\n"
                         + markdown_table(comparison, floatfmt="g") + ("\n" + agreement if agreement else ""))
        outputs.write_text(f"{key}.md", markdown[key])
    tuning = tuning_table(sweep, choices) if sweep else pd.DataFrame()
    outputs.write_text("tuning.csv", tuning.to_csv(index=False))
    markdown["tuning"] = tuning_markdown(tuning, cfg.select_split)
    history = curves(cells, seeds)
    outputs.write_table("curves", history)
    plot_learning_curves(history, cfg.select_split, outputs)
    plot_tables(frames, outputs)
    plateaus = plateau(history)
    shown = plateaus.astype(object).where(plateaus.notna(), "")  # a one-epoch curve has no last-quarter change
    markdown["curves"] = (f"### Learning curves (MIOU on the selection split `{cfg.select_split}` during "
                          "training)\n\n" + markdown_table(shown))
    collapsed = [{"row": r["row"], "table": key, "seeds": r["collapsed_seeds"]}
                 for key, frame in frames.items() for r in frame.to_dict("records") if r["collapsed_seeds"]]
    return {"config": cfg.identity(), "versions": versions(), "choices": choices, "collapsed": collapsed,
            "variants": {v: {"settings": {**VARIANTS[v], **cells[(v, 0)].get("settings", {})},
                             "epochs": cells[(v, 0)]["epochs"], "segmenter_updates": cells[(v, 0)]["updates"],
                             "train_seconds": [cells[(v, s)]["train_seconds"] for s in range(seeds)],
                             "cache_hits": [cells[(v, s)]["cache_hit"] for s in range(seeds)]} for v in VARIANTS},
            "tuning": tuning.to_dict("records"), "model_seconds": _model_seconds(cells, sweep),
            "tables": {key: frame.to_dict("records") for key, frame in frames.items()},
            "plateau": plateaus.to_dict("records"), "markdown": markdown, "paper_note": PAPER_NOTE,
            "paper_settings": PAPER_SETTINGS}


def _timing(timings: dict) -> str:
    if not timings["cells_computed"]:
        return f"this command rewrote the outputs from the saved cells in {timings['wall_s']:.0f} s"
    return (f"this command computed {timings['cells_computed']} cells and tuning points in {timings['wall_s']:.0f} s "
            f"wall, training {timings.get('models_trained', '?')} models (the others loaded from the model cache)")


def _data(config: dict) -> str:
    budget = config["budget"]
    if config["data"] == "synthetic":
        kind = "one fixed set of" if config["fixed_train"] else "fresh scenes every epoch,"
        return (f"synthetic `{config['scene_preset']}` scenes ({kind} {budget['num_train']} training images of "
                f"{budget['image_size']} px)")
    train = "every training image" if budget["num_train"] is None else f"{budget['num_train']} training images"
    return (f"`{config['root']}` ({train}, the longer side scaled to {budget['resize']} px, "
            f"{budget['crop_size']} px crops in training)")


def docs_markdown(summary: dict, command: str) -> str:
    """The tables, with how and where they were measured (by ``validation/ablation.py command``), for
    validation/README.md."""
    versions_, config = summary["versions"], summary["config"]
    variants = summary["variants"]
    updates = sorted({v["segmenter_updates"] for name, v in variants.items() if name not in EPOCH_MATCHED})
    train = sum(summary["model_seconds"].values())
    images = summary["tables"]["table1"][0]["images"]
    head = (f"Measured by `python validation/ablation.py {command}`: {_data(config)}; every number from the "
            f"{images} images of the `{config['splits']['evaluated']}` split, every choice (tuned settings, "
            f"learning curves) on `{config['splits']['selection']}`; {config['seeds']} seeds; "
            f"{', '.join(map(str, updates))} segmenter updates for every row but the epochs-matched generator's; "
            f"{versions_['platform']}, {versions_['cpu']}, torch {versions_['torch']}; training took {train:.0f} s "
            f"summed over the {len(summary['model_seconds'])} models (one process each); "
            f"{_timing(summary['timings'])}. "
            "A difference is decided by the paired t interval over seeds (`verdict`); the interval over images holds "
            f"these trained networks fixed. A run whose MIOU is within {COLLAPSE_MARGIN:g} point of predicting the "
            "most frequent class everywhere is flagged `collapsed` and its comparisons read `failed training`."
            f"\n\n{summary['paper_note']}\n\n{summary['paper_settings']}")
    return head + "\n\n" + "\n".join(summary["markdown"].values())
