"""Running the noisy-label experiment: train (or load) each seed's models, evaluate every condition, save the
seed; then (unless sharded) write the outputs.

One seed's work is one unit ``seeds/seed<S>.json.gz`` (:class:`imgpix.experiments.runner.Units`): seeds
resume, and ``--shard i/n`` computes seeds ``i, i+n, ...`` in separate processes; ``--merge`` (or any run
whose seed files all exist) writes the tables, claims, verdicts and plots.
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
from ...data.loaders import build_loader
from ...evaluate import Evaluator
from ...labels import LabelSource
from ...models import build_model
from ...runtime import cpu_worker
from ..cache import default_cache_dir, epochs_done, is_cached, trained_model
from ..runner import ExperimentError, Units, in_parallel, is_finished, open_run
from ..splits import check_data
from ..stats import score
from .design import BASELINE, BUDGET_FACTOR, MODELS, TAUS, NoiseConfig, ambiguities, conditions, scaled, train_config
from .report import OUTPUTS, report_markdown, write_outputs


def seed_units(out: Path) -> Units:
    return Units(out, "seeds", "seed{seed}.json.gz")


def budget_units(out: Path) -> Units:
    return Units(out, "budget", "seed{seed}_x{factor}.json.gz")


def seed_path(out: Path, seed: int) -> Path:
    return seed_units(out).path(seed=seed)


def affinities(unfused_confusion: np.ndarray, cfg: NoiseConfig, seed: int) -> dict[str, torch.Tensor]:
    """Outlier weights of the count-sufficiency test, from the unfused model's own confusion matrix:
    "confusable" outliers are drawn in proportion to how often present classes are predicted as them,
    "distant" ones in inverse proportion."""
    cm = torch.as_tensor(unfused_confusion, dtype=torch.float64)
    rates = cm / cm.sum(1, keepdim=True).clamp_min(1)
    rates.fill_diagonal_(0)
    weights = {"confusable": rates + 1e-9, "distant": 1 / (rates + 1e-3)}
    return {c.source.name: weights[c.role] for c in conditions(cfg, seed) if c.role in weights}


def _evaluate(model, loader, cfg: NoiseConfig, seed: int, affinity: dict | None):
    """Per-image records and confusion matrices of every condition, the tau curve and labeler scores.

    ``affinity=None``: the outlier affinities are computed from this (unfused) model first."""
    evaluator = Evaluator(model, loader, cfg.device, keep=True)
    if affinity is None:
        unfused = evaluator.run([LabelSource("none")])["unfused"].confusion.matrix.cpu().numpy()
        affinity = affinities(unfused, cfg, seed)
    chosen = [c for c in conditions(cfg, seed) if c.role != "labeler" or model.labeler]
    unique = list({c.source.name: c.source for c in chosen}.values())  # with m = 0, case3 is case2
    results = evaluator.run(unique, per_image=True, affinity=affinity)
    frames, matrices = [], {}
    for condition in chosen:
        result = results[condition.source.name]
        frame = pd.DataFrame(result.images)
        frames.append(frame.assign(condition=condition.name, image=np.arange(len(frame))))
        matrices[condition.name] = torch.cat(result.image_confusion).numpy().astype(np.int32)
    extra = {"matrices": matrices, "tau_curve": {}, "labeler": None}
    if model.labeler is not None:
        taus = [LabelSource("labeler", tau=t, protected=cfg.protected) for t in TAUS]
        extra["tau_curve"] = {t: 100 * r.scores["MIOU"] for t, r in zip(TAUS, evaluator.run(taus).values())}
        objects = [c for c in range(model.num_classes) if c not in cfg.protected]
        extra["labeler"] = evaluator.labeler(cfg.tau, objects=objects)
    return pd.concat(frames, ignore_index=True), extra, affinity


def _sweep_rows(records: pd.DataFrame, matrices: dict, model: str, ambiguity: float) -> pd.DataFrame:
    """Per condition: dataset MIOU and the mean nats the labels remove (the ambiguity sweep's points)."""
    removed = records.groupby("condition")["removed"].mean()
    return pd.DataFrame([{"ambiguity": ambiguity, "model": model, "condition": name,
                          "MIOU": float(score(m.sum(0), "MIOU")), "removed": float(removed[name])}
                         for name, m in matrices.items()])


def run_seed(cfg: NoiseConfig, seed: int, cache_dir: Path, log: Callable[[str], None]) -> dict:
    """Train (or load) every model of ``seed`` and evaluate all conditions: the seed's whole result."""
    result = {"seed": seed, "models": {}, "records": [], "sweep": []}
    for ambiguity in ambiguities(cfg):
        eval_cfg = replace(train_config(cfg, BASELINE, seed, ambiguity), num_val=cfg.budget["num_val"],
                           eval_split=cfg.evaluated_split)
        loader = build_loader(eval_cfg, cfg.evaluated_split, shuffle=False)
        affinity = labeler = None
        # the baseline first: its confusions define the outlier affinities, and the others borrow its labeler
        for name in sorted(cfg.models, key=list(MODELS).index):
            cached = trained_model(train_config(cfg, name, seed, ambiguity), cache_dir, log)
            if cached.model.labeler is None:
                cached.model.labeler = labeler
            elif labeler is None:
                labeler = cached.model.labeler
            records, extra, affinity = _evaluate(cached.model, loader, cfg, seed, affinity)
            result["sweep"].append(_sweep_rows(records, extra["matrices"], name, ambiguity))
            if ambiguity != cfg.ambiguity:
                continue
            result["records"].append(records.assign(model=name))
            history = pd.read_csv(Path(cached.path).parent / HISTORY)
            result["models"][name] = {**extra, "history": history, "updates": int(history["updates"].iloc[-1]),
                                      "train_seconds": float(history["seconds"].sum())}
        if ambiguity == cfg.ambiguity:
            torch.manual_seed(cfg.seed + seed)
            untrained = build_model(train_config(cfg, BASELINE, seed, ambiguity))
            untrained.labeler = None
            records, _, _ = _evaluate(untrained, loader, cfg, seed, affinity)
            result["records"].append(records.assign(model="untrained"))
    result["records"] = pd.concat(result["records"], ignore_index=True).assign(seed=seed)
    result["sweep"] = pd.concat(result["sweep"], ignore_index=True).assign(seed=seed)
    return result


def _load_seeds(out: Path, seeds: range) -> list[dict]:
    units = seed_units(out)
    missing = [s for s in seeds if not units.done(seed=s)]
    if missing:
        raise ExperimentError(f"cannot merge: seeds {missing} have no result in {units.folder}; run the shards "
                              "that own them (--shard i/n), or rerun without --merge")
    return [units.load(seed=s) for s in seeds]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _train_job(tcfg: TrainConfig, cache: Path, threads: int) -> None:
    """Train one model into the cache (in this process or a worker)."""
    cpu_worker(threads)
    trained_model(tcfg, cache, _stderr)


def _seed_job(cfg: NoiseConfig, seed: int, cache: Path, units: Units, threads: int) -> None:
    """Evaluate and save one seed from its cached models."""
    cpu_worker(threads)
    start = time.perf_counter()
    units.save(run_seed(cfg, seed, cache, _stderr), seed=seed)
    _stderr(f"seed {seed} evaluated in {time.perf_counter() - start:.0f} s")


def _budget_check(cfg: NoiseConfig, opened, cache: Path, progress: bool, jobs: int, threads: int,
                  log: Callable[[str], None]) -> dict:
    """Seed 0's result with every model trained to :data:`~.design.BUDGET_FACTOR` times the epochs."""
    units = budget_units(opened.out)
    opened.outputs.folder(units.folder.name)
    key = {"seed": 0, "factor": BUDGET_FACTOR}
    if not units.done(**key):
        big = scaled(cfg, BUDGET_FACTOR)
        to_train = [t for t in (train_config(big, name, 0, cfg.ambiguity) for name in cfg.models)
                    if not is_cached(t, cache)]
        log(f"convergence check: seed 0 of {len(cfg.models)} models at {BUDGET_FACTOR}x the epochs, "
            f"{len(to_train)} to train")
        in_parallel(_train_job, [(t, cache, threads) for t in to_train], jobs, f"training {len(to_train)} models "
                    f"at {BUDGET_FACTOR}x", progress, steps=lambda: epochs_done(to_train, cache))
        units.save(run_seed(big, 0, cache, log), **key)
    return units.load(**key)


def run(cfg: NoiseConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        shard: tuple[int, int] | None = None, merge: bool = False, progress: bool = True, jobs: int = 1,
        threads: int = 1, log: Callable[[str], None] = print, results_root: Path = Path("results/noisy_labels"),
        command: str = "") -> dict | None:
    """Compute the seeds this process owns, then (unless sharded) write every output; returns the summary.

    ``jobs`` worker processes train the models (longest first), then evaluate the seeds, in parallel, each
    with ``threads`` torch threads (the tiny nets' small tensors gain little from more threads, and threads
    of busy processes wait on each other)."""
    if (shard or merge) and out is None:
        raise ExperimentError("--shard and --merge need --out DIR: the directory every shard and the merge share")
    if shard and merge:
        raise ExperimentError("--shard and --merge are separate steps: run the shards, then --merge once")
    if shard and force:
        raise ExperimentError("--force cannot be combined with --shard (the shards share --out)")
    baseline = train_config(cfg, BASELINE, 0, cfg.ambiguity)
    check_data(baseline, replace(baseline, num_val=cfg.budget["num_val"], eval_split=cfg.evaluated_split))
    start = time.perf_counter()
    seeds = range(cfg.seeds)
    if merge:
        _load_seeds(Path(out), seeds)  # fails before anything is written when a seed is missing
    with open_run(out, cfg.identity(), force, results_root, OUTPUTS, shard) as opened:
        out = opened.out
        if opened.resumed:
            state = "rewriting the outputs of the finished" if is_finished(out) else "resuming the unfinished"
            log(f"{state} run of this configuration in {out}")
        units = seed_units(out)
        opened.outputs.folder(units.folder.name)
        mine = [s for s in seeds if shard is None or s % shard[1] == shard[0]]
        todo = [s for s in mine if not merge and not units.done(seed=s)]
        trainings = [train_config(cfg, name, seed, a) for seed in todo for a in ambiguities(cfg)
                     for name in cfg.models]
        trainings.sort(key=lambda tcfg: tcfg.labeler is None)  # the models that train a labeler take longest
        cache = Path(cache_dir or default_cache_dir())
        to_train = [t for t in trainings if not is_cached(t, cache)]  # no worker is started for a warm cache
        if todo:
            log(f"{len(todo)} seed(s) to compute in {out}: {len(trainings)} models, {len(to_train)} of them to "
                f"train and the rest from the cache; budget {cfg.budget}")
        in_parallel(_train_job, [(t, cache, threads) for t in to_train], jobs, f"training {len(to_train)} models",
                    progress, steps=lambda: epochs_done(to_train, cache))
        in_parallel(_seed_job, [(cfg, seed, cache, units, threads) for seed in todo], jobs, "seeds", progress)
        if shard is not None:
            return None
        doubled = _budget_check(cfg, opened, cache, progress, jobs, threads, log) if cfg.budget_check else None
        summary = write_outputs(cfg, opened.outputs, _load_seeds(out, seeds), doubled)
        summary["timings"] = {"wall_s": round(time.perf_counter() - start, 1),
                              "cache_warm": not todo or not to_train, "seeds_computed": len(todo),
                              "jobs": min(jobs, max(len(trainings), 1)), "threads": threads}
        summary["command"], summary["out"] = command, str(out)
        opened.outputs.write_text("report.md", report_markdown(summary))
        opened.outputs.write_json("summary.json", summary)  # last: its presence marks a finished run
    return summary
