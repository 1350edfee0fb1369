"""The paper's ablations (Tables 1-3) on synthetic scenes: matched segmenter updates, several seeds, paired tests.

Seven variants are trained per seed (:data:`VARIANTS`), each to the same number of *segmenter updates*:
the 3-step iteration with a generator or a discriminator updates the segmentation net twice, so the
variants without one train twice the epochs (:func:`plan`). Every variant's SGD learning rate decays from
``lr`` to 0 along a cosine over its updates (:data:`LR_SCHEDULE`), so that each run ends on a plateau of its
budget (the learning-curve table measures how flat). Each trained network is evaluated on the
same validation images under the test labels of its table rows (:data:`TABLES`), keeping one
confusion matrix per image. Per row: every metric as mean ± sd over seeds (bootstrap CI over images),
and the MIOU difference to its reference row, tested twice with the shared statistics code: images
resampled / swapped within seeds (:func:`imgpix.experiments.paired.paired_difference`) and a paired
t-test with the seeds as units (:func:`imgpix.experiments.stats.paired_seeds`). The paper's figures
and deltas are printed beside ours, with whether the signs agree.

Table 3 compares the fusion operators of :func:`imgpix.fusion.fused_log_probs` twice: trained with
each operator, and applied at test to the network trained with ``dot``. For binary labels with at
least one class, ``argmax (P + L) / (1 + n)`` equals ``argmax P`` over the labelled classes (``P_c + 1 > 1
>= P_u`` for c in L, u not in L), so the addition applied to the dot-trained net predicts what dot predicts
up to floating-point ties (the ``agree %`` column).

One (variant, seed) result is one file ``cells/<variant>_seed<S>.pkl``: an interrupted run resumes
at the next missing cell (trained models are cached by :mod:`imgpix.experiments.cache`);
``summary.json`` is written last and marks a finished run.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..data import IGNORE_INDEX
from ..evaluate import Evaluator
from ..metrics import per_image_confusion
from ..fusion import LOGIT_ADD_BETA, fused_log_probs
from ..labels import DEFAULT_TAU, LabelSource
from ..metrics import METRIC_NAMES
from ..runtime import cpu_worker
from ..checkpoint import HISTORY
from ..config import TrainConfig
from ..data.loaders import build_loader
from . import paired, stats
from .cache import default_cache_dir, trained_model
from .report import (ExperimentError, is_finished, prepare_out, pyplot, save_figure, versions, write_atomic,
                     write_json, write_table)

VARIANTS = {  # TrainConfig settings beyond the shared ones of train_config()
    "baseline": {"fusion": None, "train_labels": "none"},
    "label": {"fusion": "dot"},
    "generator": {"fusion": None, "train_labels": "none", "generator": True},
    "full": {"fusion": "dot", "generator": True, "labeler": "tiny"},
    "discriminator": {"fusion": None, "train_labels": "none", "discriminator": True},
    "add": {"fusion": "add"},
    "logit_add": {"fusion": "logit_add"},
}
# epochs: of the variants with two segmenter updates per iteration (the others train twice as many);
# default: 4096 updates, where the baseline plateaus (validation/README.md shows the evidence)
PRESETS = {
    "default": {"epochs": 32, "num_train": 512, "batch_size": 8, "image_size": 32, "num_val": 256, "train_val": 64},
    "quick": {"epochs": 2, "num_train": 32, "batch_size": 8, "image_size": 32, "num_val": 32, "train_val": 16},
}
DEFAULT_SEEDS = {"default": 3, "quick": 2}
LR_SCHEDULE = "cosine"  # the segmenter's, in every variant: each run ends on its budget's plateau, not mid-swing
COMPARISON = ("delta", "delta_ci_low", "delta_ci_high", "p_images", "delta_seeds_ci_low", "delta_seeds_ci_high",
              "p_seeds", "d_z_seeds")
OWNED = ("cells", "table1.csv", "table1.md", "table2.csv", "table2.md", "table3.csv", "table3.md", "curves.csv",
         "curves.md", "learning_curves.png", "tables.png", "summary.json")


@dataclass(frozen=True)
class Row:
    """A table row: ``variant`` evaluated with test ``labels`` (none / oracle / labeler), fused with its own
    operator or with ``fusion`` (the same trained net, another operator); tested against ``reference``."""

    name: str
    variant: str
    labels: str
    reference: str | None = None  # the row it is compared with; None: the table's reference row
    paper: float | None = None  # the paper's MIOU (%), when known
    fusion: str | None = None

    @property
    def spec(self) -> str:
        """The evaluation this row reads: test labels, plus the test-time operator when overridden."""
        return self.labels + (f"+{self.fusion}" if self.fusion else "")


DOT = "dot P·L"
PAPER_BASELINE = 59.4  # FCN-32s, PASCAL VOC 2011 val (the paper's Tables 1 and 2)
TABLES = {
    "table1": ("Table 1: components (fused rows: oracle image labels at test, the paper's VOC 2011 val protocol)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ image label", "label", "oracle", "baseline"),
        Row("+ generator", "generator", "none", "baseline"),
        Row("+ image label + generator", "full", "oracle", "baseline"),
        Row("+ image label + generator, labeler labels at test", "full", "labeler", "baseline"),
    )),
    "table2": ("Table 2: no image labels (train or test)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ discriminator", "discriminator", "none", "baseline", 60.6),
        Row("+ generator", "generator", "none", "baseline", 63.8),
    )),
    "table3": ("Table 3: fusion operator, oracle labels (trained with it, or applied at test to the dot-trained net)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row(DOT, "label", "oracle", "baseline"),
        Row("addition (P+L)/(1+n)", "add", "oracle", "baseline", 66.3),
        Row(f"logit addition z+{LOGIT_ADD_BETA:g}·L", "logit_add", "oracle", "baseline"),
        Row("addition at test, dot-trained net", "label", "oracle", DOT, fusion="add"),
        Row("logit addition at test, dot-trained net", "label", "oracle", DOT, fusion="logit_add"),
    )),
}


@dataclass(frozen=True)
class AblationConfig:
    """Everything that determines the results (output paths, progress and --force do not)."""

    seeds: int | None = None
    quick: bool = False
    epochs: int | None = None
    num_train: int | None = None
    num_val: int | None = None
    image_size: int | None = None
    scene_preset: str = "voc"
    tau: float = DEFAULT_TAU
    device: str = "cpu"

    def __post_init__(self):
        if self.seeds is not None and self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (mean ± sd and paired tests over seeds), got {self.seeds}")
        for name in ("epochs", "num_train", "num_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.num_train is not None and self.num_train < self.budget["batch_size"]:
            raise ValueError(f"num_train must be >= the batch size {self.budget['batch_size']}, got {self.num_train}")

    @property
    def budget(self) -> dict:
        budget = dict(PRESETS["quick" if self.quick else "default"])
        for name in ("epochs", "num_train", "num_val", "image_size"):
            if getattr(self, name) is not None:
                budget[name] = getattr(self, name)
        budget["train_val"] = min(budget["train_val"], budget["num_val"])
        return budget

    @property
    def seed_count(self) -> int:
        return self.seeds if self.seeds is not None else DEFAULT_SEEDS["quick" if self.quick else "default"]

    def identity(self) -> dict:
        return {**asdict(self), "seeds": self.seed_count, "budget": self.budget, "logit_add_beta": LOGIT_ADD_BETA,
                "lr_schedule": LR_SCHEDULE}


def train_config(cfg: AblationConfig, variant: str, seed: int, epochs: int = 1, progress: bool = True) -> TrainConfig:
    """The TrainConfig of ``variant`` for ``seed`` (``epochs`` as given: see :func:`plan`)."""
    budget = cfg.budget
    shared = {"model": "tiny", "labeler": None, "generator": False, "discriminator": False, "procedure": "3step",
              "train_labels": "oracle", "tau": cfg.tau, "batch_size": budget["batch_size"],
              "num_train": budget["num_train"], "num_val": budget["train_val"], "image_size": budget["image_size"],
              "scene_preset": cfg.scene_preset, "lr_schedule": LR_SCHEDULE, "seed": seed, "device": cfg.device,
              "progress": progress}
    return TrainConfig(**{**shared, **VARIANTS[variant]}, epochs=epochs)


def plan(cfg: AblationConfig, variant: str, seed: int, progress: bool = True) -> TrainConfig:
    """``variant``'s TrainConfig with the epochs that give every variant the same segmenter updates,
    ``2 x cfg.budget["epochs"] x iterations per epoch``: the budget epochs of a variant with two updates
    per iteration, twice as many epochs of one with one update."""
    one_epoch = train_config(cfg, variant, seed, 1, progress)
    per_iteration = one_epoch.updates_per_iteration
    if 2 % per_iteration:
        raise ValueError(f"{variant}: {per_iteration} segmenter updates per iteration do not divide the budget")
    return replace(one_epoch, epochs=2 * cfg.budget["epochs"] // per_iteration)


def row_specs(variant: str) -> list[Row]:
    """The distinct evaluations (one Row each, by ``spec``) that the tables read from ``variant``."""
    found = {}
    for _, rows in TABLES.values():
        for row in rows:
            if row.variant == variant:
                found.setdefault(row.spec, row)
    return list(found.values())


def label_source(kind: str, tcfg: TrainConfig) -> LabelSource:
    """Test labels of ``kind``; the labeler's keep the dataset's background (not an image-level class)."""
    return LabelSource(kind, tau=tcfg.tau, protected=tcfg.protected if kind == "labeler" else ())


@torch.no_grad()
def evaluate_rows(model, loader, tcfg: TrainConfig, rows: list[Row], progress: bool = False) -> dict:
    """Per-image confusion matrices [images, N, N] of each row's spec, and for a row with a test-time
    ``fusion`` the share (%) of labelled pixels whose prediction equals that of the model's own operator."""
    num_classes = model.num_classes
    sources = {row.labels: label_source(row.labels, tcfg) for row in rows}
    matrices = {row.spec: [] for row in rows}
    agree = {row.spec: [0, 0] for row in rows if row.fusion}
    for logits, scores, mask, *_ in Evaluator(model, loader, tcfg.device, progress).batches(f"evaluate {tcfg.seed}"):
        valid = mask != IGNORE_INDEX
        own = {}
        for row in sorted(rows, key=lambda r: r.fusion is not None):  # own operator first: the agreement's reference
            labels = sources[row.labels].resolve(num_classes, mask, scores)
            log_probs = fused_log_probs(logits, labels, row.fusion) if row.fusion else model.fuse_logits(logits, labels)
            pred = log_probs.argmax(1)
            if row.fusion:
                agree[row.spec][0] += int((pred == own[row.labels])[valid].sum())
                agree[row.spec][1] += int(valid.sum())
            else:
                own[row.labels] = pred
            matrices[row.spec].append(per_image_confusion(pred, mask, num_classes).cpu())
    return {"matrices": {k: torch.cat(v).numpy().astype(np.int32) for k, v in matrices.items()},
            "agreement": {k: 100.0 * hits / max(total, 1) for k, (hits, total) in agree.items()}}


def run_cell(cfg: AblationConfig, variant: str, seed: int, cache_dir: Path, log: Callable[[str], None],
             progress: bool = True) -> dict:
    """Train (or load) ``variant`` for ``seed`` and evaluate every row that reads it."""
    tcfg = plan(cfg, variant, seed, progress)
    cached = trained_model(tcfg, cache_dir, log)
    loader = build_loader(replace(tcfg, num_val=cfg.budget["num_val"]), "val", shuffle=False)
    result = evaluate_rows(cached.model, loader, tcfg, row_specs(variant), progress)
    history = pd.read_csv(Path(cached.path).parent / HISTORY)
    if "updates" not in history:  # a model cached before the trainer counted its updates
        history["updates"] = history["epoch"] * (tcfg.num_train // tcfg.batch_size) * tcfg.updates_per_iteration
    return {"variant": variant, "seed": seed, "epochs": tcfg.epochs, "updates": int(history["updates"].iloc[-1]),
            "train_seconds": cached.train_seconds, "cache_hit": cached.hit, "history": history, **result}


def cell_path(out: Path, variant: str, seed: int) -> Path:
    return out / "cells" / f"{variant}_seed{seed}.pkl"


def _save_cell(out: Path, result: dict) -> None:
    path = cell_path(out, result["variant"], result["seed"])
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)


def _load_cells(out: Path, seeds: int) -> dict[tuple[str, int], dict]:
    return {(v, s): pickle.loads(cell_path(out, v, s).read_bytes()) for v in VARIANTS for s in range(seeds)}


# -- tables -------------------------------------------------------------------------------------


class Cells:
    """Every (variant, seed) result; per-row statistics computed once however many tables show the row."""

    def __init__(self, cells: dict[tuple[str, int], dict], seeds: int):
        self.cells, self.seeds = cells, seeds

    def matrices(self, row: Row) -> tuple[np.ndarray, np.ndarray]:
        """Per-image confusion matrices of ``row`` over all seeds, and each image's seed."""
        stacks = [self.cells[(row.variant, s)]["matrices"][row.spec] for s in range(self.seeds)]
        return np.concatenate(stacks), np.concatenate([np.full(len(m), s) for s, m in enumerate(stacks)])

    def per_seed(self, row: Row, metric: str) -> np.ndarray:
        """``metric`` (%) of ``row`` per seed, from the seed's summed confusion matrix."""
        return np.array([paired.score(self.cells[(row.variant, s)]["matrices"][row.spec].sum(0), metric)
                         for s in range(self.seeds)])

    @functools.cache
    def scores(self, row: Row) -> dict:
        """Every metric as mean and sd over seeds; MIOU's bootstrap CI over images (within seeds)."""
        record = {}
        for metric in METRIC_NAMES:
            values = self.per_seed(row, metric)
            record[metric], record[f"{metric}_sd"] = float(values.mean()), float(values.std(ddof=1))
        ci = paired.score_interval(*self.matrices(row), "MIOU")
        record["MIOU_ci_low"], record["MIOU_ci_high"] = ci["ci_low"], ci["ci_high"]
        return record

    @functools.cache
    def compare(self, row: Row, reference: Row) -> dict:
        """MIOU of ``row`` minus ``reference``: images swapped / resampled within seeds, and a paired
        t-test over seeds (both from the shared statistics code)."""
        matrices, image_seeds = self.matrices(row)
        images = paired.paired_difference(self.matrices(reference)[0], matrices, image_seeds, "MIOU")  # row - ref
        by_seed = stats.paired_seeds(self.per_seed(row, "MIOU"), self.per_seed(reference, "MIOU"))
        return {"delta": images["difference"], "delta_ci_low": images["ci_low"], "delta_ci_high": images["ci_high"],
                "p_images": images["p_value"], "delta_seeds_ci_low": by_seed.low,
                "delta_seeds_ci_high": by_seed.high, "p_seeds": by_seed.p_value, "d_z_seeds": by_seed.effect_size}

    def agreement(self, row: Row) -> float:
        if not row.fusion:
            return np.nan
        return float(np.mean([self.cells[(row.variant, s)]["agreement"][row.spec] for s in range(self.seeds)]))


def _sign_agrees(ours: float, theirs: float | None) -> str:
    if theirs is None or math.isnan(ours):
        return "n/a"
    return "yes" if np.sign(ours) == np.sign(theirs) else "no"


def table(results: Cells, key: str) -> pd.DataFrame:
    """One table of :data:`TABLES`: scores (mean ± sd over seeds, MIOU CI over images), the MIOU
    difference to the reference row with both paired tests, and the paper's figures beside ours."""
    _, rows = TABLES[key]
    by_name = {row.name: row for row in rows}
    out = []
    for row in rows:
        reference = by_name[row.reference] if row.reference else None
        first = results.cells[(row.variant, 0)]
        record = {"row": row.name, "variant": row.variant, "test_labels": row.labels,
                  "test_fusion": row.fusion or "as trained", "updates": first["updates"], "seeds": results.seeds,
                  "images": len(first["matrices"][row.spec]), **results.scores(row),
                  "agree_%": results.agreement(row), "reference": reference.name if reference else "",
                  "paper_MIOU": row.paper, "paper_delta": None}
        if reference is None:
            record.update(dict.fromkeys(COMPARISON, np.nan), sign_agrees="n/a")
        else:
            record.update(results.compare(row, reference))
            if row.paper is not None and reference.paper is not None:
                record["paper_delta"] = round(row.paper - reference.paper, 2)
            record["sign_agrees"] = _sign_agrees(record["delta"], record["paper_delta"])
        out.append(record)
    return pd.DataFrame(out)


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {sd:.2f}"


def _interval(value: float, low: float, high: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def _paper(value) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The printed form of :func:`table`: MIOU mean ± sd, deltas with CIs, p-values, the paper beside us."""
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


def _p(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


# -- learning curves and plots ----------------------------------------------------------------------


def curve_name(variant: str) -> str:
    """The name of ``variant`` in the plots: its first row in the tables."""
    return next(row.name for _, rows in TABLES.values() for row in rows if row.variant == variant)


def curves(cells: dict, seeds: int) -> pd.DataFrame:
    """Per-epoch validation MIOU of every variant and seed (oracle labels for fused variants, none otherwise)."""
    frames = [cells[(v, s)]["history"][["epoch", "updates", "MIOU"]].assign(variant=v, seed=s)
              for v in VARIANTS for s in range(seeds)]
    return pd.concat(frames, ignore_index=True)


def plateau(history: pd.DataFrame) -> pd.DataFrame:
    """Per variant, its row name beside :func:`imgpix.experiments.stats.plateau`."""
    table = stats.plateau(history, "variant")
    table.insert(1, "row", table["variant"].map(curve_name))
    return table


def plot_learning_curves(history: pd.DataFrame, path: Path) -> None:
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
    save_figure(fig, path)


def plot_tables(frames: dict[str, pd.DataFrame], path: Path) -> None:
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
    save_figure(fig, path)


# -- the whole run ----------------------------------------------------------------------------------


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cell_job(cfg: AblationConfig, variant: str, seed: int, cache_dir: Path, out: Path, progress: bool) -> None:
    """Compute and save one cell (in a worker process of :func:`run`: one torch thread)."""
    cpu_worker(1)
    _save_cell(out, run_cell(cfg, variant, seed, cache_dir, _log, progress))


def run(cfg: AblationConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        progress: bool = True, log: Callable[[str], None] = _log, jobs: int = 1,
        results_root: Path = Path("results/ablation")) -> dict:
    """Compute the missing (variant, seed) cells, ``jobs`` processes at a time, then write the tables,
    curves and plots; returns the summary. With ``jobs > 1`` the per-model bars are off."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    out, resumed = prepare_out(out, cfg.identity(), force, results_root, OWNED)
    if resumed:
        state = "rewriting the outputs of the finished" if is_finished(out) else "resuming the unfinished"
        log(f"{state} run in {out}")
    cache_dir = Path(cache_dir or default_cache_dir())
    todo = [(v, s) for s in range(cfg.seed_count) for v in VARIANTS if not cell_path(out, v, s).is_file()]
    todo.sort(key=lambda cell: -train_config(cfg, cell[0], 0).updates_per_iteration)  # slow 3-step ones first
    if todo:
        log(f"{len(todo)} (variant, seed) cells to compute in {out} with {jobs} process(es) (cached models load "
            f"at once); budget {cfg.budget}")
    args = [(cfg, v, s, cache_dir, out, progress and jobs == 1) for v, s in todo]
    if jobs == 1:
        for job in tqdm(args, desc="cells", disable=not progress):
            _cell_job(*job)
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_cell_job, *job) for job in args]
            try:
                for done in tqdm(as_completed(futures), total=len(args), desc="cells", disable=not progress):
                    done.result()
            except BaseException:
                for future in futures:  # a failed cell stops the run: queued cells do not start
                    future.cancel()
                raise
    summary = write_outputs(cfg, out, _load_cells(out, cfg.seed_count))
    summary["timings"] = {"wall_s": round(time.perf_counter() - start, 1), "jobs": jobs, "resumed": resumed,
                          "cells_computed": len(todo)}
    summary["out"] = str(out)
    write_json(out / "summary.json", summary)  # last: its presence marks a finished run
    return summary


def write_outputs(cfg: AblationConfig, out: Path, cells: dict) -> dict:
    """Tables (CSV + Markdown), learning curves, plots; returns the summary (not yet written)."""
    seeds = cfg.seed_count
    updates = {cell["updates"] for cell in cells.values()}
    if len(updates) != 1:
        raise ExperimentError(f"the cells in {out / 'cells'} made different numbers of segmenter updates "
                              f"({sorted(updates)}); rerun with --force")
    results = Cells(cells, seeds)
    frames = {key: table(results, key) for key in TABLES}
    markdown = {}
    for key, frame in frames.items():  # CSV: every number; Markdown: the printed form
        write_atomic(out / f"{key}.csv", frame.to_csv(index=False))
        markdown[key] = f"### {TABLES[key][0]}\n\n" + markdown_frame(frame).to_markdown(index=False) + "\n"
        write_atomic(out / f"{key}.md", markdown[key])
    history = curves(cells, seeds)
    write_table(history, out, "curves")
    plot_learning_curves(history, out / "learning_curves.png")
    plot_tables(frames, out / "tables.png")
    plateaus = plateau(history)
    markdown["curves"] = "### Learning curves (validation MIOU during training)\n\n" + plateaus.to_markdown(
        index=False, floatfmt=".2f") + "\n"
    return {"config": cfg.identity(), "versions": versions(),
            "variants": {v: {"settings": VARIANTS[v], "epochs": cells[(v, 0)]["epochs"],
                             "segmenter_updates": cells[(v, 0)]["updates"],
                             "train_seconds": [cells[(v, s)]["train_seconds"] for s in range(seeds)],
                             "cache_hits": [cells[(v, s)]["cache_hit"] for s in range(seeds)]} for v in VARIANTS},
            "tables": {key: frame.to_dict("records") for key, frame in frames.items()},
            "plateau": plateaus.to_dict("records"), "markdown": markdown,
            "paper_note": "Paper figures: FCN-32s baseline 59.4, + discriminator 60.6, + generator 63.8 (Table 2), "
                          "addition 66.3 (Table 3); the paper's Table 1 rows beyond the baseline are not given here."}
