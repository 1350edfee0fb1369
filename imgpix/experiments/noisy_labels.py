"""The noisy image-label experiment (the paper's §3.2), made fair.

Per seed, two networks are trained on the same budget of segmenter updates: ``unfused`` (no labels:
the baseline) and ``fused`` (oracle labels fused, the paper's setting); optional ``fused-labeler``
and ``fused-noisy``. The segmenter's learning rate decays along a cosine (:data:`LR_SCHEDULE`) so each
model ends on its budget's plateau; :func:`learning_plateaus` measures how flat. Every model is
evaluated under every label source (conditions): unfused, oracle, Case 1 / 2 / 3 (m, k) and the
labeler at tau, post-hoc fusion into the unfused model included, plus the tau curve. Per image the evaluation keeps a confusion matrix (for paired,
image-resampled CIs of MIOU) and the measured information of :func:`imgpix.information.audit`
(for the theory tests of :mod:`imgpix.experiments.theory_tests`).

One seed's work is one file ``seeds/seed<S>.pkl``: seeds resume, and ``--shard i/n`` computes seeds
``i, i+n, ...`` in separate processes; ``--merge`` (or any run whose seed files all exist) writes
the tables, claims, verdicts and plots.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..evaluate import Evaluator
from ..files import write_atomic, write_json
from ..labels import DEFAULT_TAU, LabelSource, check_tau
from ..metrics import METRIC_NAMES
from ..runtime import cpu_worker
from ..checkpoint import HISTORY
from ..config import TrainConfig
from ..data.loaders import build_loader
from ..models import build_model
from . import paired, stats
from .cache import default_cache_dir, is_cached, trained_model
from .report import ExperimentError, prepare_out, pyplot, save_figure, versions, write_table

TAUS = tuple(round(0.05 * i, 2) for i in range(21))
THEORY_MS = (1, 2, 3, 5)  # Case 1 outlier counts of the Eq. 10 regression
AMBIGUITIES = tuple(i / 4 for i in range(5))  # 0 to 1 in quarters
MODELS = {  # labeler: trained inside this model; the others borrow the unfused model's (one per seed)
    "unfused": {"fusion": None, "train_labels": "none", "labeler": "tiny"},
    "fused": {"fusion": "dot", "train_labels": "oracle", "labeler": None},
    "fused-labeler": {"fusion": "dot", "train_labels": "labeler", "labeler": "tiny"},
    "fused-noisy": {"fusion": "dot", "train_labels": "noisy", "labeler": None},
}
# images per epoch x epochs at batch_size: the budget of every model (segmenter updates). default: 3072 updates,
# where the unfused baseline plateaus under the cosine schedule (validation/README.md); the labeler, a separate
# network, trains in the first labeler_epochs epochs only
PRESETS = {
    "default": {"num_train": 1024, "epochs": 48, "labeler_epochs": 12, "batch_size": 16, "num_val": 256,
                "train_val": 64},
    "quick": {"num_train": 128, "epochs": 2, "labeler_epochs": 2, "batch_size": 16, "num_val": 64, "train_val": 16},
}
LR_SCHEDULE = "cosine"  # the segmenter's, in every model: each run ends on its budget's plateau, not mid-swing
CLAIMS = ("oracle_beats_baseline", "posthoc_oracle_beats_baseline", "labeler_beats_baseline",
          "posthoc_labeler_beats_baseline", "case1_below_oracle", "case2_below_oracle", "case3_below_case2")
OWNED = ("seeds", "report.md", "count_sufficiency.csv", "count_sufficiency.md", "case2.csv", "case2.md", "table.csv", "table.md", "claims.csv", "claims.md", "verdicts.csv", "verdicts.md",
         "tau_curve.csv", "tau_curve.png", "theory.png", "learning_curves.png", "ambiguity.csv", "ambiguity.png",
         "summary.json")


@dataclass(frozen=True)
class NoiseConfig:
    """Everything that determines the results (output paths, progress and --force do not)."""

    m: int = 3
    k: int = 1
    tau: float = DEFAULT_TAU
    seeds: int = 3
    quick: bool = False
    models: tuple[str, ...] = ("unfused", "fused")
    data: str = "synthetic"
    root: str | None = None
    classes: str | None = None
    background: str | None = "auto"
    scene_preset: str = "voc"
    ambiguity: float = 1.0
    ambiguity_sweep: bool = False
    protect_background: bool = True
    generator: bool = False
    epochs: int | None = None
    num_train: int | None = None
    num_val: int | None = None
    device: str = "cpu"

    def __post_init__(self):
        if self.data != "synthetic" and not self.root:
            raise ValueError(f"--data {self.data} needs --root DIR (the dataset folder)")
        n = self.num_classes
        if not 0 <= self.m <= n - 2:
            raise ValueError(f"m must satisfy 0 <= m <= {n - 2} (object classes an image can lack), got {self.m}")
        if not 1 <= self.k <= n - 1:
            raise ValueError(f"k must satisfy 1 <= k <= {n - 1} (object classes), got {self.k}")
        check_tau(self.tau)
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        unknown = set(self.models) - set(MODELS)
        if unknown or "unfused" not in self.models:
            raise ValueError(f"models must include 'unfused' (the baseline) and come from {list(MODELS)}, "
                             f"got {list(self.models)}")
        if not 0 <= self.ambiguity <= 1:
            raise ValueError(f"ambiguity must lie in [0, 1], got {self.ambiguity}")

    @property
    def budget(self) -> dict:
        preset = dict(PRESETS["quick" if self.quick else "default"])
        for name in ("epochs", "num_train", "num_val"):
            if getattr(self, name) is not None:
                preset[name] = getattr(self, name)
        return preset

    @property
    def num_classes(self) -> int:
        return self.base_config().info.num_classes

    @property
    def protected(self) -> tuple[int, ...]:
        """The dataset's background class, when it has one and it is protected."""
        return self.base_config().protected if self.protect_background else ()

    def base_config(self) -> TrainConfig:
        """The data settings every model of this run shares."""
        return TrainConfig(data=self.data, root=self.root, classes=self.classes, background=self.background)

    def identity(self) -> dict:
        return {**asdict(self), "models": list(self.models), "budget": self.budget, "lr_schedule": LR_SCHEDULE}


def train_config(cfg: NoiseConfig, model: str, seed: int, ambiguity: float) -> TrainConfig:
    """The TrainConfig of ``model`` for ``seed``: every model gets the same budget and scenes.

    channels_last: faster convolutions on CPU (``benchmarks/cpu_settings.py``); a runtime setting, so it is
    not part of the model cache key."""
    budget = cfg.budget
    labels = MODELS[model]["train_labels"]
    if labels == "noisy":
        labels = f"noisy:m={cfg.m},k={cfg.k}"
    return replace(cfg.base_config(), fusion=MODELS[model]["fusion"], labeler=MODELS[model]["labeler"],
                   train_labels=labels, tau=cfg.tau,
                   generator=cfg.generator, epochs=budget["epochs"], labeler_epochs=budget["labeler_epochs"],
                   lr_schedule=LR_SCHEDULE, batch_size=budget["batch_size"],
                   num_train=budget["num_train"], num_val=budget["train_val"], scene_preset=cfg.scene_preset,
                   ambiguity=ambiguity, seed=seed, device=cfg.device, channels_last=True, progress=False)


def _noise_seed(seed: int, *parts) -> int:
    digest = hashlib.sha256(f"imgpix-noise:{seed}:{parts}".encode()).hexdigest()
    return int(digest[:15], 16)


def conditions(cfg: NoiseConfig, seed: int) -> dict[str, LabelSource]:
    """Display name -> label source. Noise depends on (seed, k) only: every model sees the same labels, a
    larger m adds outliers to a smaller m's, and case3 adds outliers to case2's kept classes."""
    def noisy(m: int, k: int | None, tag: str = "") -> LabelSource:  # one stream per k: case3 = case2 + outliers
        return LabelSource("noisy", m=m, k=k, seed=_noise_seed(seed, k, tag), protected=cfg.protected, tag=tag)

    table = {"unfused": LabelSource("none"), "oracle": LabelSource("oracle"),
             f"case1 (m={cfg.m})": noisy(cfg.m, None), f"case2 (k={cfg.k})": noisy(0, cfg.k),
             f"case3 (m={cfg.m}, k={cfg.k})": noisy(cfg.m, cfg.k),
             f"labeler@{cfg.tau:g}": LabelSource("labeler", tau=cfg.tau, protected=cfg.protected)}
    for m in THEORY_MS:
        table.setdefault(f"case1 (m={m})", noisy(m, None))
    m = max(cfg.m, 1)
    table[f"case1 (m={m}) confusable"] = noisy(m, None, "confusable")
    table[f"case1 (m={m}) distant"] = noisy(m, None, "distant")
    return table


def main_conditions(cfg: NoiseConfig) -> list[str]:
    """The conditions of the results table (the rest serve the theory tests)."""
    return list(conditions(cfg, 0))[:6]


def affinities(unfused_confusion: np.ndarray, cfg: NoiseConfig, seed: int) -> dict[str, torch.Tensor]:
    """Outlier weights of the count-sufficiency test, from the unfused model's own confusion matrix:
    "confusable" outliers are drawn in proportion to how often present classes are predicted as them,
    "distant" ones in inverse proportion."""
    cm = torch.as_tensor(unfused_confusion, dtype=torch.float64)
    rates = cm / cm.sum(1, keepdim=True).clamp_min(1)
    rates.fill_diagonal_(0)
    out = {}
    for name, source in conditions(cfg, seed).items():
        if source.tag == "confusable":
            out[source.name] = rates + 1e-9
        elif source.tag == "distant":
            out[source.name] = 1 / (rates + 1e-3)
    return out


# -- one seed ---------------------------------------------------------------------------------


def _evaluate(model, loader, cfg: NoiseConfig, seed: int, affinity: dict | None):
    """Per-image records and confusion matrices of every condition, the tau curve and labeler scores.

    ``affinity=None``: the outlier affinities are computed from this (unfused) model first."""
    evaluator = Evaluator(model, loader, cfg.device, keep=True)
    if affinity is None:
        unfused = evaluator.run([LabelSource("none")])["unfused"].confusion.matrix.cpu().numpy()
        affinity = affinities(unfused, cfg, seed)
    sources = {name: s for name, s in conditions(cfg, seed).items() if s.kind != "labeler" or model.labeler}
    unique = list({s.name: s for s in sources.values()}.values())  # with m = 0, case3 is case2
    results = evaluator.run(unique, per_image=True, affinity=affinity)
    frames, matrices = [], {}
    for name, source in sources.items():
        frame = pd.DataFrame(results[source.name].images)
        frames.append(frame.assign(condition=name, image=np.arange(len(frame))))
        matrices[name] = torch.cat(results[source.name].image_confusion).numpy().astype(np.int32)
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
                          "MIOU": float(paired.score(m.sum(0), "MIOU")), "removed": float(removed[name])}
                         for name, m in matrices.items()])


def ambiguities(cfg: NoiseConfig) -> list[float]:
    return sorted({*AMBIGUITIES, cfg.ambiguity}) if cfg.ambiguity_sweep else [cfg.ambiguity]


def run_seed(cfg: NoiseConfig, seed: int, cache_dir: Path, log: Callable[[str], None]) -> dict:
    """Train (or load) every model of ``seed`` and evaluate all conditions: the seed's whole result."""
    result = {"seed": seed, "models": {}, "records": [], "sweep": []}
    for ambiguity in ambiguities(cfg):
        eval_cfg = replace(train_config(cfg, "unfused", seed, ambiguity), num_val=cfg.budget["num_val"])
        loader = build_loader(eval_cfg, "val", shuffle=False)
        affinity = labeler = None
        # "unfused" first: its confusions define the outlier affinities, and the others borrow its labeler
        for name in sorted(cfg.models, key=list(MODELS).index):
            tcfg = train_config(cfg, name, seed, ambiguity)
            cached = trained_model(tcfg, cache_dir, log)
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
            torch.manual_seed(seed)
            untrained = build_model(train_config(cfg, "unfused", seed, ambiguity))
            untrained.labeler = None
            records, _, _ = _evaluate(untrained, loader, cfg, seed, affinity)
            result["records"].append(records.assign(model="untrained"))
    result["records"] = pd.concat(result["records"], ignore_index=True).assign(seed=seed)
    result["sweep"] = pd.concat(result["sweep"], ignore_index=True).assign(seed=seed)
    return result


# -- all seeds: tables, claims, plots ---------------------------------------------------------


def seed_path(out: Path, seed: int) -> Path:
    return out / "seeds" / f"seed{seed}.pkl"


def _save_seed(out: Path, result: dict) -> None:
    path = seed_path(out, result["seed"])
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)


def _load_seeds(out: Path, seeds: range) -> list[dict]:
    missing = [s for s in seeds if not seed_path(out, s).is_file()]
    if missing:
        raise ExperimentError(f"cannot merge: seeds {missing} have no result in {out / 'seeds'}; run the shards "
                              "that own them (--shard i/n), or rerun without --merge")
    return [pickle.loads(seed_path(out, s).read_bytes()) for s in seeds]


def row_name(model: str, condition: str) -> str:
    return f"{model} + {condition}"


def _matrices(results: list[dict], model: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image confusion matrices of ``model + condition`` over all seeds, and each image's seed."""
    stacks = [r["models"][model]["matrices"][condition] for r in results]
    return np.concatenate(stacks), np.concatenate([np.full(len(m), r["seed"]) for m, r in zip(stacks, results)])


def results_table(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """One row per model and condition: scores (mean ± sd over seeds, MIOU bootstrap CI) and label counts."""
    records = pd.concat([r["records"] for r in results])
    rows = []
    for model in cfg.models:
        for condition in results[0]["models"][model]["matrices"]:
            if condition not in main_conditions(cfg):
                continue
            matrices, seeds = _matrices(results, model, condition)
            row = {"row": row_name(model, condition), "model": model, "condition": condition}
            for metric in METRIC_NAMES:
                ci = paired.score_interval(matrices, seeds, metric)
                row[metric], row[f"{metric}_sd"] = ci["mean"], ci["sd"]
                if metric == "MIOU":
                    row["MIOU_ci_low"], row["MIOU_ci_high"] = ci["ci_low"], ci["ci_high"]
            mine = records[(records.model == model) & (records.condition == condition)]
            row.update({name: float(mine[name].mean()) for name in ("n", "size", "kept", "outliers", "removed",
                                                                     "lost_fraction")})
            row.update(seeds=len(results), images=int(len(mine) / len(results)),
                       updates=results[0]["models"][model]["updates"])
            rows.append(row)
    return pd.DataFrame(rows)


def claims(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """Each claim: B - A in MIOU points (mean over seeds), bootstrap CI, permutation p, and whether the
    CI lies on the claimed side of 0 (``supported``)."""
    labeler = f"labeler@{cfg.tau:g}"
    case1, case2, case3 = f"case1 (m={cfg.m})", f"case2 (k={cfg.k})", f"case3 (m={cfg.m}, k={cfg.k})"
    base = ("unfused", "unfused")
    wanted = [("oracle_beats_baseline", base, ("fused", "oracle"), +1),
              ("posthoc_oracle_beats_baseline", base, ("unfused", "oracle"), +1),
              ("labeler_beats_baseline", base, ("fused", labeler), +1),
              ("posthoc_labeler_beats_baseline", base, ("unfused", labeler), +1),
              ("case1_below_oracle", ("fused", "oracle"), ("fused", case1), -1),
              ("case2_below_oracle", ("fused", "oracle"), ("fused", case2), -1),
              ("case3_below_case2", ("fused", case2), ("fused", case3), -1)]
    rows = []
    for name, a, b, sign in wanted:
        if a[0] not in cfg.models or b[0] not in cfg.models or b[1] not in results[0]["models"][b[0]]["matrices"]:
            continue
        (ma, seeds), (mb, _) = _matrices(results, *a), _matrices(results, *b)
        test = paired.paired_difference(ma, mb, seeds, "MIOU")
        bound = test["ci_low"] if sign > 0 else -test["ci_high"]
        rows.append({"claim": name, "a": row_name(*a), "b": row_name(*b), "expected": "b > a" if sign > 0 else "b < a",
                     **{k: v for k, v in test.items() if k != "per_seed"}, "supported": bool(bound > 0)})
    return pd.DataFrame(rows)


def labeler_summary(results: list[dict], model: str = "unfused") -> dict | None:
    scores = [r["models"][model]["labeler"] for r in results if r["models"].get(model, {}).get("labeler")]
    if not scores:
        return None
    return {key: float(np.mean([s[key] for s in scores])) for key in ("mAP", "precision", "recall", "tau")} | {
        "mAP_sd": float(np.std([s["mAP"] for s in scores], ddof=1)) if len(scores) > 1 else 0.0}


def tau_curve(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    rows = []
    for model in cfg.models:
        for r in results:
            for tau, miou in r["models"][model]["tau_curve"].items():
                rows.append({"model": model, "seed": r["seed"], "tau": tau, "MIOU": miou})
    frame = pd.DataFrame(rows)
    return frame.groupby(["model", "tau"])["MIOU"].agg(["mean", "std"]).reset_index() if len(frame) else frame


def plot_tau(curve: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for model, color in zip(curve["model"].unique(), ("tab:blue", "tab:orange", "tab:purple", "tab:brown")):
        part = curve[curve.model == model]
        ax.plot(part.tau, part["mean"], "o-", ms=3, color=color, label=f"{model} + labeler@tau")
        ax.fill_between(part.tau, part["mean"] - part["std"].fillna(0), part["mean"] + part["std"].fillna(0),
                        color=color, alpha=0.15)
    base = table[table.row == row_name("unfused", "unfused")].iloc[0]
    ax.axhline(base.MIOU, color="tab:red", ls="--", label="baseline: unfused + unfused")
    ax.axhspan(base.MIOU_ci_low, base.MIOU_ci_high, color="tab:red", alpha=0.08)
    for _, row in table[table.condition == "oracle"].iterrows():
        ax.axhline(row.MIOU, ls=":", color="tab:green" if row.model == "fused" else "tab:olive", label=row.row)
    ax.set(xlabel="tau (labeler threshold)", ylabel="MIOU (%)", title="MIOU against tau (cf. the paper's Fig. 4)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_theory(records: pd.DataFrame, num_classes: int, path: Path) -> None:
    """Measured nats removed per image against the theory's log(N/|L|), untrained vs trained."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    case1 = records.condition.str.match(r"^(oracle|case1 \(m=\d+\))$")
    for model, color in (("untrained", "tab:gray"), ("fused", "tab:blue"), ("unfused", "tab:orange")):
        part = records[case1 & (records.model == model)]
        if len(part):
            ax.scatter(np.log(num_classes / part["size"]), part["removed"], s=4, alpha=0.3, color=color, label=f"{model} model")
    top = np.log(num_classes)
    ax.plot([0, top], [0, top], "k--", lw=1, label="theory: removed = log(N/|L|) (Eqs. 6, 10)")
    ax.set(xlabel="log(N / |L|) (nats)", ylabel="measured nats removed per image",
           title="Oracle and Case 1 labels, per image")
    ax.legend(fontsize=7, markerscale=3)
    save_figure(fig, path)


def plot_learning_curves(results: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"unfused": "tab:red", "fused": "tab:blue", "fused-labeler": "tab:purple", "fused-noisy": "tab:brown"}
    for r in results:
        for model, info in r["models"].items():
            h = info["history"]
            label = f"{model} (val MIOU, {'oracle' if model != 'unfused' else 'no'} labels)" if r is results[0] else None
            ax.plot(h.epoch, h.MIOU, color=colors[model], alpha=0.7, label=label)
    ax.set(xlabel="epoch", ylabel="validation MIOU (%)", title="Learning curves, every seed")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def learning_plateaus(results: list[dict]) -> pd.DataFrame:
    """Per model: final validation MIOU of the seed-mean learning curve and its last-quarter change."""
    curves = pd.concat([info["history"][["epoch", "updates", "MIOU"]].assign(model=model, seed=r["seed"])
                        for r in results for model, info in r["models"].items()], ignore_index=True)
    return stats.plateau(curves, "model")


def ambiguity_table(results: list[dict]) -> pd.DataFrame:
    sweep = pd.concat([r["sweep"] for r in results])
    pivot = sweep.pivot_table(index=["seed", "ambiguity"], columns=["model", "condition"], values="MIOU")
    out = []
    for (seed, ambiguity), row in pivot.iterrows():
        baseline = row[("unfused", "unfused")]
        entry = {"seed": seed, "ambiguity": ambiguity, "baseline_MIOU": baseline}
        for model, condition in row.index:
            if condition in ("oracle",) or condition.startswith("labeler"):
                entry[f"gain {model} + {condition}"] = row[(model, condition)] - baseline
        oracle = sweep[(sweep.seed == seed) & (sweep.ambiguity == ambiguity) & (sweep.model == "unfused")
                       & (sweep.condition == "oracle")]
        entry["oracle_removed_nats"] = float(oracle.removed.iloc[0])
        out.append(entry)
    frame = pd.DataFrame(out)
    return frame.drop(columns="seed").groupby("ambiguity").agg(["mean", "std"]).reset_index()


def plot_ambiguity(frame: pd.DataFrame, path: Path) -> None:
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
    save_figure(fig, path)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _train_job(tcfg: TrainConfig, cache: Path, threads: int) -> None:
    """Train one model into the cache (in this process or a worker)."""
    cpu_worker(threads)
    trained_model(tcfg, cache, _stderr)


def _seed_job(cfg: NoiseConfig, seed: int, cache: Path, out: Path, threads: int) -> None:
    """Evaluate and save one seed from its cached models."""
    cpu_worker(threads)
    start = time.perf_counter()
    _save_seed(out, run_seed(cfg, seed, cache, _stderr))
    _stderr(f"seed {seed} evaluated in {time.perf_counter() - start:.0f} s")


def _in_parallel(job: Callable, calls: list[tuple], jobs: int, threads: int, desc: str, progress: bool) -> list:
    """``job(*call)`` for every call, in ``jobs`` worker processes of ``threads`` torch threads each."""
    from tqdm import tqdm

    if jobs > 1 and len(calls) > 1:
        with ProcessPoolExecutor(min(jobs, len(calls)), mp_context=get_context("spawn")) as pool:
            return list(tqdm(pool.map(job, *zip(*calls)), total=len(calls), desc=desc, disable=not progress))
    return [job(*call) for call in tqdm(calls, desc=desc, disable=not progress)]


# -- the whole run ----------------------------------------------------------------------------


def run(cfg: NoiseConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        shard: tuple[int, int] | None = None, merge: bool = False, progress: bool = True, jobs: int = 1,
        threads: int = 1,
        log: Callable[[str], None] = print, results_root: Path = Path("results/noisy_labels"),
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
    start = time.perf_counter()
    seeds = range(cfg.seeds)
    if merge:
        _load_seeds(Path(out), seeds)  # fails before anything is written when a seed is missing
    out, resumed = prepare_out(out, cfg.identity(), force, results_root, OWNED)
    if resumed:
        log(f"resuming the unfinished run in {out}")
    mine = [s for s in seeds if shard is None or s % shard[1] == shard[0]]
    todo = [s for s in mine if not merge and not seed_path(out, s).is_file()]
    trainings = [train_config(cfg, name, seed, a) for seed in todo for a in ambiguities(cfg) for name in cfg.models]
    trainings.sort(key=lambda tcfg: tcfg.labeler is None)  # the models that train a labeler take longest: first
    cache = Path(cache_dir or default_cache_dir())
    to_train = [t for t in trainings if not is_cached(t, cache)]  # no worker is started for a warm cache
    if todo:
        log(f"{len(todo)} seed(s) to compute in {out}: {len(trainings)} models, {len(to_train)} of them to train "
            f"and the rest from the cache; budget {cfg.budget}")
    _in_parallel(_train_job, [(t, cache, threads) for t in to_train], jobs, threads, "models", progress)
    _in_parallel(_seed_job, [(cfg, seed, cache, out, threads) for seed in todo], jobs, threads, "seeds", progress)
    cache_warm = not to_train
    if shard is not None:
        return None
    summary = write_outputs(cfg, out, _load_seeds(out, seeds))
    summary["timings"] = {"wall_s": round(time.perf_counter() - start, 1), "cache_warm": not todo or cache_warm,
                          "seeds_computed": len(todo), "jobs": min(jobs, max(len(trainings), 1)), "threads": threads}
    summary["command"] = command
    write_atomic(out / "report.md", report_markdown(summary))
    write_json(out / "summary.json", summary)  # last: its presence marks a finished run
    return summary


def write_outputs(cfg: NoiseConfig, out: Path, results: list[dict]) -> dict:
    """Tables, claims, verdicts and plots from every seed's result; returns the summary (not yet written)."""
    from . import theory_tests

    table = results_table(results, cfg)
    columns = ["row", "model", "condition", "MIOU", "MIOU_sd", "MIOU_ci_low", "MIOU_ci_high", "PA", "MPA", "FWAA", "n", "size", "kept",
               "outliers", "removed", "lost_fraction", "updates", "seeds", "images"]
    markdown = write_table(table[columns], out, "table")
    claim_table = claims(results, cfg)
    claims_md = write_table(claim_table, out, "claims", floatfmt=".3g")
    records = pd.concat([r["records"] for r in results], ignore_index=True)
    resamples = {"n_resamples": 999} if cfg.quick else {}  # the CI run: wider-grained CIs, a quarter of the time
    verdicts = theory_tests.verdicts(records, cfg.num_classes, **resamples)
    verdicts_md = write_table(verdicts, out, "verdicts", floatfmt=".3g")
    m = max(cfg.m, 1)
    trained = records[records.model != "untrained"]
    sufficiency = pd.concat([theory_tests.count_sufficiency(trained, f"case1 (m={m}) confusable",
                                                            f"case1 (m={m}) distant", value=value, **resamples)
                             for value in ("accuracy_fused", "removed")], ignore_index=True)
    sufficiency_md = write_table(sufficiency, out, "count_sufficiency", floatfmt=".3g")
    case2 = theory_tests.case2_loss(records, **resamples)
    case2_md = write_table(case2, out, "case2", floatfmt=".3g")
    curve = tau_curve(results, cfg)
    if len(curve):
        write_table(curve, out, "tau_curve")
        plot_tau(curve, table, out / "tau_curve.png")
    plot_theory(records, cfg.num_classes, out / "theory.png")
    plot_learning_curves(results, out / "learning_curves.png")
    plateaus = learning_plateaus(results)
    summary = {"config": cfg.identity(), "versions": versions(), "table": table.to_dict("records"),
               "claims": claim_table.to_dict("records"), "verdicts": verdicts.to_dict("records"),
               "count_sufficiency": sufficiency.to_dict("records"), "case2": case2.to_dict("records"),
               "labeler": labeler_summary(results), "headline": headline(table, claim_table, cfg),
               "models": {m: {"segmenter_updates": results[0]["models"][m]["updates"],
                              "train_seconds": [r["models"][m]["train_seconds"] for r in results]}
                          for m in cfg.models},
               "plateau": plateaus.to_dict("records"),
               "markdown": {"table": markdown, "claims": claims_md, "verdicts": verdicts_md,
                            "count_sufficiency": sufficiency_md, "case2": case2_md,
                            "plateau": plateaus.to_markdown(index=False, floatfmt=".2f")},
               "images": int(table["images"].iloc[0])}
    if cfg.ambiguity_sweep:
        sweep = ambiguity_table(results)
        flat = sweep.copy()
        flat.columns = [" ".join(str(p) for p in c if p).strip() for c in flat.columns]
        summary["markdown"]["ambiguity"] = write_table(flat, out, "ambiguity")
        plot_ambiguity(sweep, out / "ambiguity.png")
        summary["ambiguity"] = flat.to_dict("records")
    if len(curve):
        summary["markdown"]["tau_curve"] = curve.pivot(index="tau", columns="model", values="mean").reset_index() \
            .to_markdown(index=False, floatfmt=".2f")
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


def headline(table: pd.DataFrame, claim_table: pd.DataFrame, cfg: NoiseConfig) -> dict:
    """Predicted labels (the labeler at tau) against the fair unfused baseline."""
    out = {}
    for claim in ("labeler_beats_baseline", "posthoc_labeler_beats_baseline", "oracle_beats_baseline"):
        found = claim_table[claim_table.claim == claim]
        if len(found):
            out[claim] = found.iloc[0].to_dict()
    return out
