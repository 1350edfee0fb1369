"""Running the ablations: sweep the tuned settings on seed 0 and the selection split, then train (or load) each
(variant, seed) cell's model with the chosen settings, evaluate every row that reads it on the evaluated
split, save the cell; then write the outputs.

One tuning point (``tuning/<variant>_<value>``) and one cell (``cells/<variant>_seed<S>``) are each one unit
(:class:`imgpix.experiments.runner.Units`): an interrupted run resumes at the next missing one (trained models
are cached by :mod:`imgpix.experiments.cache`); ``summary.json`` is written last and marks a finished run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ...checkpoint import HISTORY
from ...config import TrainConfig
from ...data import IGNORE_INDEX
from ...data.loaders import build_loader
from ...evaluate import Evaluator
from ...fusion import fused_log_probs
from ...metrics import per_image_confusion
from ...runtime import cpu_worker
from ...train import DivergedError
from ..cache import default_cache_dir, epochs_done, trained_model
from ..runner import Units, in_parallel, is_finished, open_run
from ..splits import check_data
from .analysis import choose
from .design import TUNING, VARIANTS, AblationConfig, Row, label_source, plan, row_specs, train_config, tuned_settings
from .report import OUTPUTS, write_outputs


def cell_units(out: Path) -> Units:
    return Units(out, "cells", "{variant}_seed{seed}.json.gz")


def tuning_units(out: Path) -> Units:
    return Units(out, "tuning", "{variant}_{value}.json.gz")


def cell_path(out: Path, variant: str, seed: int) -> Path:
    return cell_units(out).path(variant=variant, seed=seed)


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


def _history(cached, tcfg: TrainConfig) -> pd.DataFrame:
    history = pd.read_csv(Path(cached.path).parent / HISTORY)
    if "updates" not in history:  # a model cached before the trainer counted its updates
        history["updates"] = history["epoch"] * (tcfg.num_train // tcfg.batch_size) * tcfg.updates_per_iteration
    return history


def run_cell(cfg: AblationConfig, variant: str, seed: int, cache_dir: Path, log: Callable[[str], None],
             progress: bool = True, choices: dict | None = None) -> dict:
    """Train (or load) ``variant`` for ``seed`` with the tuned ``choices`` and evaluate every row that reads it
    on the evaluated split."""
    settings = tuned_settings(choices or {}, variant)
    tcfg = plan(cfg, variant, seed, progress, settings)
    cached = trained_model(tcfg, cache_dir, log)
    split = cfg.evaluated_split
    loader = build_loader(replace(tcfg, num_val=cfg.budget["num_val"], eval_split=split), split, shuffle=False)
    result = evaluate_rows(cached.model, loader, tcfg, row_specs(variant), progress)
    history = _history(cached, tcfg)
    return {"variant": variant, "seed": seed, "epochs": tcfg.epochs, "updates": int(history["updates"].iloc[-1]),
            "settings": settings, "model": str(cached.path), "train_seconds": float(history["seconds"].sum()),
            "cache_hit": cached.hit, "history": history, **result}


def run_tuning(cfg: AblationConfig, variant: str, value: float, cache_dir: Path, log: Callable[[str], None],
               progress: bool = True) -> dict:
    """Train (or load) swept ``variant`` at ``value`` on seed 0; its MIOU on the selection split (its own test
    labels: oracle when fused, none otherwise), or the divergence that stopped it."""
    field = TUNING[variant][0]
    tcfg = plan(cfg, variant, 0, progress, {field: value})
    record = {"variant": variant, "field": field, "value": value, "diverged": ""}
    try:
        cached = trained_model(tcfg, cache_dir, log)
    except DivergedError as error:
        return {**record, "diverged": str(error), "matrix": None, "model": "", "train_seconds": 0.0,
                "cache_hit": False}
    row = Row(variant, variant, "oracle" if tcfg.fusion else "none")
    loader = build_loader(tcfg, cfg.select_split, shuffle=False)
    matrices = evaluate_rows(cached.model, loader, tcfg, [row], progress)["matrices"][row.spec]
    return {**record, "matrix": matrices.sum(0), "model": str(cached.path),
            "train_seconds": float(_history(cached, tcfg)["seconds"].sum()), "cache_hit": cached.hit}


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _job(kind: str, cfg: AblationConfig, key: dict, cache_dir: Path, units: Units, progress: bool, threads: int,
         choices: dict | None = None) -> None:
    """Compute and save one tuning point or one cell (in this process or a worker of :func:`run`)."""
    cpu_worker(threads)
    if kind == "tuning":
        units.save(run_tuning(cfg, key["variant"], key["value"], cache_dir, _log, progress), **key)
    else:
        units.save(run_cell(cfg, key["variant"], key["seed"], cache_dir, _log, progress, choices), **key)


def _trained(call: tuple) -> TrainConfig:
    """The TrainConfig a :func:`_job` call trains."""
    kind, cfg, key = call[:3]
    if kind == "tuning":
        return plan(cfg, key["variant"], 0, settings={TUNING[key["variant"]][0]: key["value"]})
    return plan(cfg, key["variant"], key["seed"], settings=tuned_settings(call[7] if len(call) > 7 else {},
                                                                           key["variant"]))


def _batch(calls: list[tuple], jobs: int, desc: str, progress: bool, cache_dir: Path) -> None:
    """Run ``calls`` of :func:`_job`; the bar counts the epochs of every model (ETA over parallel workers)."""
    configs = [_trained(call) for call in calls]
    in_parallel(_job, calls, jobs, desc, progress, steps=lambda: epochs_done(configs, cache_dir))


def _slow_first(cfg: AblationConfig, calls: list[tuple]) -> list[tuple]:
    """The calls, those of variants with more updates per epoch first (the 3-step ones), to even out the workers."""
    return sorted(calls, key=lambda call: -train_config(cfg, call[2]["variant"], 0).updates_per_iteration)


def run(cfg: AblationConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        progress: bool = True, log: Callable[[str], None] = _log, jobs: int = 1, threads: int = 1,
        results_root: Path = Path("results/ablation")) -> dict:
    """Sweep :data:`~.design.TUNING` on the selection split (with ``cfg.tune``), then compute the missing
    (variant, seed) cells with the chosen settings, ``jobs`` processes of ``threads`` torch threads at a time,
    then write the tables, curves and plots; returns the summary. The cells that do not depend on a tuned
    setting train beside the sweep. With ``jobs > 1`` the per-model bars are off."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    baseline = plan(cfg, "baseline", 0, False)
    check_data(baseline, replace(baseline, num_val=cfg.budget["num_val"], eval_split=cfg.evaluated_split))
    start = time.perf_counter()
    with open_run(out, cfg.identity(), force, results_root, OUTPUTS) as opened:
        out = opened.out
        if opened.resumed:
            state = "rewriting the outputs of the finished" if is_finished(out) else "resuming the unfinished"
            log(f"{state} run in {out}")
        cache_dir = Path(cache_dir or default_cache_dir())
        cells, tuning = cell_units(out), tuning_units(out)
        opened.outputs.folder(cells.folder.name)
        opened.outputs.folder(tuning.folder.name)
        bars = progress and jobs == 1
        points = [{"variant": v, "value": x} for v, (_, grid, _) in TUNING.items() for x in grid] if cfg.tune else []
        tuned = {user for _, _, users in TUNING.values() for user in users}
        first = [("tuning", cfg, key, cache_dir, tuning, bars, threads) for key in points if not tuning.done(**key)]
        first += [("cell", cfg, {"variant": v, "seed": s}, cache_dir, cells, bars, threads)
                  for s in range(cfg.seed_count) for v in VARIANTS if v not in tuned and not cells.done(variant=v,
                                                                                                      seed=s)]
        if first:
            log(f"{len(first)} tuning points and untuned cells to compute in {out} with {jobs} process(es) (cached "
                f"models load at once); budget {cfg.budget}")
        _batch(_slow_first(cfg, first), jobs, "tuning + untuned cells", progress, cache_dir)
        sweep = [tuning.load(**key) for key in points]
        choices = choose(sweep) if cfg.tune else {v: grid[0] for v, (_, grid, _) in TUNING.items()}
        rest = [("cell", cfg, {"variant": v, "seed": s}, cache_dir, cells, bars, threads, choices)
                for s in range(cfg.seed_count) for v in VARIANTS if v in tuned and not cells.done(variant=v, seed=s)]
        if rest:
            log(f"{len(rest)} cells with the tuned settings {choices} to compute")
        _batch(_slow_first(cfg, rest), jobs, "tuned cells", progress, cache_dir)
        results = {(v, s): cells.load(variant=v, seed=s) for v in VARIANTS for s in range(cfg.seed_count)}
        summary = write_outputs(cfg, opened.outputs, results, sweep, choices)
        computed = [tuning.load(**c[2]) if c[0] == "tuning" else cells.load(**c[2]) for c in first + rest]
        summary["timings"] = {"wall_s": round(time.perf_counter() - start, 1), "jobs": jobs, "threads": threads,
                              "resumed": opened.resumed, "cells_computed": len(computed),
                              "models_trained": sum(not unit["cache_hit"] for unit in computed)}
        summary["out"] = str(out)
        opened.outputs.write_json("summary.json", summary)  # last: its presence marks a finished run
    return summary
