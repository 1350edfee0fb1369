"""Running the ablations: train (or load) each (variant, seed) cell's model, evaluate every row that reads it,
save the cell; then write the outputs.

One cell is one unit ``cells/<variant>_seed<S>.pkl`` (:class:`imgpix.experiments.runner.Units`): an
interrupted run resumes at the next missing cell (trained models are cached by
:mod:`imgpix.experiments.cache`); ``summary.json`` is written last and marks a finished run.
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
from ..cache import default_cache_dir, trained_model
from ..runner import Units, in_parallel, is_finished, open_run
from .design import VARIANTS, AblationConfig, Row, label_source, plan, row_specs, train_config
from .report import OUTPUTS, write_outputs


def cell_units(out: Path) -> Units:
    return Units(out, "cells", "{variant}_seed{seed}.pkl")


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


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cell_job(cfg: AblationConfig, variant: str, seed: int, cache_dir: Path, units: Units, progress: bool,
              threads: int) -> None:
    """Compute and save one cell (in this process or a worker of :func:`run`)."""
    cpu_worker(threads)
    units.save(run_cell(cfg, variant, seed, cache_dir, _log, progress), variant=variant, seed=seed)


def run(cfg: AblationConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        progress: bool = True, log: Callable[[str], None] = _log, jobs: int = 1, threads: int = 1,
        results_root: Path = Path("results/ablation")) -> dict:
    """Compute the missing (variant, seed) cells, ``jobs`` processes of ``threads`` torch threads at a time,
    then write the tables, curves and plots; returns the summary. With ``jobs > 1`` the per-model bars are off."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    with open_run(out, cfg.identity(), force, results_root, OUTPUTS) as opened:
        out = opened.out
        if opened.resumed:
            state = "rewriting the outputs of the finished" if is_finished(out) else "resuming the unfinished"
            log(f"{state} run in {out}")
        cache_dir = Path(cache_dir or default_cache_dir())
        units = cell_units(out)
        opened.outputs.folder(units.folder.name)
        todo = [(v, s) for s in range(cfg.seed_count) for v in VARIANTS if not units.done(variant=v, seed=s)]
        todo.sort(key=lambda cell: -train_config(cfg, cell[0], 0).updates_per_iteration)  # slow 3-step ones first
        if todo:
            log(f"{len(todo)} (variant, seed) cells to compute in {out} with {jobs} process(es) (cached models "
                f"load at once); budget {cfg.budget}")
        calls = [(cfg, v, s, cache_dir, units, progress and jobs == 1, threads) for v, s in todo]
        in_parallel(_cell_job, calls, jobs, "cells", progress)
        cells = {(v, s): units.load(variant=v, seed=s) for v in VARIANTS for s in range(cfg.seed_count)}
        summary = write_outputs(cfg, opened.outputs, cells)
        summary["timings"] = {"wall_s": round(time.perf_counter() - start, 1), "jobs": jobs,
                              "resumed": opened.resumed, "cells_computed": len(todo)}
        summary["out"] = str(out)
        opened.outputs.write_json("summary.json", summary)  # last: its presence marks a finished run
    return summary
