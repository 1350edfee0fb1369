"""The noisy image-label experiment of §3.2: measured vs predicted degradation.

``validation/noisy_labels.py`` is the command-line front end; this module
holds the logic so that it can be imported and the sweep sharded across
processes (``run(..., shard=(i, n))`` computes cells ``[i::n]`` of the grid into
the shared ``out/cells/``; ``run(..., merge=True)`` merges them).

Pipeline:

1. :func:`trained_model` trains the fused model and its labeler with
   :func:`imgpix.train.train` into a cache directory keyed by a hash of the
   full :class:`~imgpix.train.TrainConfig` (or loads it when finished there;
   an interrupted training resumes from its checkpoint).
2. :class:`Evaluator` runs the segmentation net (and the labeler) once per
   validation batch and fuses the *same* logits with the label vectors of
   every :class:`Condition` (unfused, oracle, corrupted, thresholded).
   Logits are kept in memory when the split is small (synthetic data), so
   sweeps re-fuse them without running the network again.
3. Per condition: PA / MPA / FWAA / MIOU (percent) from one confusion matrix
   over the split, the measured information (mean per-pixel entropy of the
   fused prediction and cross-entropy to the truth, nats), and the theory's
   nats (:mod:`imgpix.theory`) computed per image from the label vector
   actually used, then averaged over images (see :func:`theory_columns`).

Noise comes from :func:`imgpix.labels.corrupt` with a ``torch.Generator``
seeded from ``(seed, m, k)`` only, so a condition's labels are the same in
the main table and in the sweep cell with the same ``(m, k)``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from . import theory
from .data import IGNORE_INDEX, NUM_CLASSES
from .fusion import fuse_log
from .labels import corrupt, from_masks, threshold
from .metrics import scores
from .train import CHECKPOINT, METRIC_NAMES, TrainConfig, build_loader, load_checkpoint, train

N = NUM_CLASSES
CONDITIONS = ("baseline", "oracle", "case1", "case2", "case3")
LABELER = "labeler"
TAUS = tuple(round(0.05 * i, 2) for i in range(21))
M_MAX = N - 1  # an image has n >= 1 true classes, so at most N - 1 outliers exist
K_MAX = N
CE_FLOOR = 1e-6  # probabilities below this count as 1e-6 in the cross-entropy (a removed true class is -log 1e-6)

# Training presets of the synthetic default. The generator (Eq. 3) is off by default: it is a
# training regulariser whose 3-step iteration costs ~3.6x a plain step of the tiny net, and the experiment is about the
# fusion with test-time labels; ``--generator`` turns it on (a different cache entry).
# ``train_val``: the validation images train() scores after every epoch (a log only);
# ``num_val``: the validation images this experiment evaluates.
PRESETS = {
    "default": {"num_train": 1024, "train_val": 64, "num_val": 256, "epochs": 12, "batch_size": 16},
    "quick": {"num_train": 64, "train_val": 32, "num_val": 64, "epochs": 2, "batch_size": 8},
}
DEFAULT_GRID = {"m": (0, 1, 2, 3, 5, 8, 13), "k": (1, 2, 3, None)}
QUICK_GRID = {"m": (0, 2, 5), "k": (1, 2, None)}

# Files this command owns inside an output directory (``--force`` removes only these).
OUTPUT_FILES = ("run.json", "table.csv", "table.md", "summary.json", "degradation.png", "sweep.csv",
                "sweep_heatmaps.png", "tau_sweep.csv", "tau_sweep.png")
CELLS = "cells"

TABLE_COLUMNS = (
    "condition", "m", "k", "tau", "PA", "MPA", "FWAA", "MIOU",
    "d_oracle_PA", "d_oracle_MPA", "d_oracle_FWAA", "d_oracle_MIOU",
    "d_baseline_PA", "d_baseline_MPA", "d_baseline_FWAA", "d_baseline_MIOU",
    "n", "labels", "kept", "outliers", "theory_quantity", "theory_nats",
    "theory_removed_nats", "theory_outlier_nats", "theory_lost_nats", "theory_degradation_nats",
    "entropy_nats", "cross_entropy_nats", "truth_removed_pct", "images",
)


class ExperimentError(Exception):
    """A user-facing error (bad arguments, existing output, missing data): exit status 2."""


# -- configuration ----------------------------------------------------------------------------


def check_m(m: int) -> int:
    if not 0 <= m <= M_MAX:
        raise ValueError(f"m must satisfy 0 <= m <= N - 1 = {M_MAX} (N = {N} classes), got {m}")
    return m


def check_k(k: int | None) -> int | None:
    if k is not None and not 1 <= k <= K_MAX:
        raise ValueError(f"k must satisfy 1 <= k <= N = {K_MAX}, got {k}")
    return k


def check_tau(tau: float | None) -> float | None:
    if tau is not None and not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must satisfy 0 <= tau <= 1, got {tau}")
    return tau


def k_name(k: int | None) -> str:
    return "all" if k is None else str(k)


@dataclass
class ExperimentConfig:
    """Everything that determines the results (the output path and ``--force`` do not)."""

    m: int = 3
    k: int = 1
    tau: float | None = None  # labeler threshold of the ``labeler`` row (None: the checkpoint's)
    data: str = "synthetic"
    root: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"
    seed: int = 0
    quick: bool = False
    sweep: bool = False
    tau_sweep: bool = False
    m_grid: tuple[int, ...] | None = None
    k_grid: tuple[int | None, ...] | None = None
    protect_background: bool = False
    generator: bool = False
    epochs: int | None = None
    num_train: int | None = None
    num_val: int | None = None

    def __post_init__(self):
        check_m(self.m)
        check_k(self.k)
        check_tau(self.tau)
        for m in self.m_grid or ():
            check_m(m)
        for k in self.k_grid or ():
            check_k(k)
        if self.data not in ("synthetic", "voc"):
            raise ValueError(f"data must be 'synthetic' or 'voc', got {self.data!r}")
        if self.data == "voc" and not self.root and not self.checkpoint:
            raise ValueError("--data voc needs --root DIR (the folder holding VOCdevkit/ and SBD/)")

    @property
    def preset(self) -> dict:
        return PRESETS["quick" if self.quick else "default"]

    @property
    def grid(self) -> tuple[tuple[int, ...], tuple[int | None, ...]]:
        base = QUICK_GRID if self.quick else DEFAULT_GRID
        return tuple(self.m_grid or base["m"]), tuple(self.k_grid or base["k"])

    @property
    def protected(self) -> tuple[int, ...]:
        return (0,) if self.protect_background else ()

    def identity(self) -> dict:
        """JSON form used to recognise a resumable run of the same configuration."""
        values = asdict(self)
        values["m_grid"], values["k_grid"] = [list(g) for g in self.grid]
        if self.root:
            values["root"] = str(Path(self.root).resolve())
        if self.checkpoint:
            values["checkpoint"] = str(Path(self.checkpoint).resolve())
        else:
            values["train_config"] = asdict(train_config(self))
        return json.loads(json.dumps(values))


def train_config(cfg: ExperimentConfig) -> TrainConfig:
    """The :class:`TrainConfig` of the model this experiment trains (synthetic or VOC)."""
    preset = cfg.preset
    synthetic = cfg.data == "synthetic"
    return TrainConfig(
        data=cfg.data, root=None if synthetic else str(Path(cfg.root).resolve()), model="tiny", labeler="tiny",
        generator=cfg.generator, epochs=cfg.epochs or preset["epochs"], batch_size=preset["batch_size"],
        num_train=(cfg.num_train or preset["num_train"]) if synthetic else None,
        num_val=preset["train_val"] if synthetic else None, seed=cfg.seed, device=cfg.device)


def config_key(tcfg: TrainConfig) -> str:
    text = json.dumps(asdict(tcfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    env = os.environ.get("IMGPIX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgpix"


# -- model ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive advisory lock (two processes never train into the same cache entry at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class ModelInfo:
    path: str
    cache_key: str | None
    cache_hit: bool
    train_seconds: float
    epochs: int


def trained_model(tcfg: TrainConfig, cache_dir: Path, log: Callable[[str], None]):
    """The model of ``tcfg``: loaded from ``cache_dir/models/<key>`` when finished there, else trained.

    Training goes through :func:`imgpix.train.train`, which resumes an interrupted run
    from the entry's ``checkpoint.pt``.
    """
    key = config_key(tcfg)
    entry = Path(cache_dir) / "models" / key
    start = time.perf_counter()
    with _file_lock(entry.with_name(key + ".lock")):
        ckpt = entry / CHECKPOINT
        if ckpt.exists():
            model, saved, state = load_checkpoint(ckpt, tcfg.device)
            if state["epoch"] >= tcfg.epochs and asdict(saved) == asdict(tcfg):
                log(f"model: cached {ckpt}")
                return model, tcfg, ModelInfo(str(ckpt), key, True, 0.0, state["epoch"])
            log(f"model: resuming the training in {entry} (epoch {state['epoch']}/{tcfg.epochs})")
        else:
            log(f"model: training into {entry} ({tcfg.epochs} epochs, {tcfg.num_train or 'all'} images)")
        trainer = train(tcfg, entry, log=log)
    return trainer.model, tcfg, ModelInfo(str(ckpt), key, False, time.perf_counter() - start, trainer.epoch)


def checkpoint_model(path: str, cfg: ExperimentConfig):
    path = Path(path)
    ckpt = path / CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise ExperimentError(f"checkpoint not found: {ckpt} (give checkpoint.pt or the directory holding it)")
    model, tcfg, state = load_checkpoint(ckpt, cfg.device)
    tcfg = replace(tcfg, device=cfg.device)
    if cfg.data == "voc" or cfg.root:
        tcfg = replace(tcfg, data=cfg.data, root=str(Path(cfg.root).resolve()) if cfg.root else tcfg.root)
    return model, tcfg, ModelInfo(str(ckpt), None, True, 0.0, state.get("epoch", 0))


# -- conditions -------------------------------------------------------------------------------


def noise_seed(seed: int, m: int, k: int | None) -> int:
    """Seed of the noise of cell ``(m, k)``: independent of the order in which cells run."""
    digest = hashlib.sha256(f"imgpix-noise:{seed}:{m}:{k_name(k)}".encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass
class Condition:
    """A way of choosing each image's label vector.

    ``kind``: ``none`` (unfused), ``oracle`` (labels from the masks), ``noisy`` (``corrupt`` of
    the oracle labels with ``m`` outliers and ``k`` kept true classes), ``labeler`` (the
    labeler's scores thresholded at ``tau``).
    """

    name: str
    kind: str
    m: int | None = None
    k: int | None = None
    tau: float | None = None
    seed: int = 0
    protected: tuple[int, ...] = ()
    _generator: torch.Generator | None = field(default=None, repr=False)

    def reset(self) -> None:
        if self.kind == "noisy":
            self._generator = torch.Generator().manual_seed(noise_seed(self.seed, self.m, self.k))

    def labels(self, oracle: Tensor, scores_: Tensor | None) -> Tensor | None:
        if self.kind == "none":
            return None
        if self.kind == "oracle":
            return oracle
        if self.kind == "noisy":
            return corrupt(oracle, self.m, self.k, self._generator, self.protected)
        if self.kind == "labeler":
            if scores_ is None:
                raise ExperimentError("the labeler condition needs a model trained with a labeler")
            return threshold(scores_, self.tau)
        raise ValueError(f"unknown condition kind {self.kind!r}")

    @property
    def theory_quantity(self) -> str:
        return {"baseline": "none", "oracle": "d_hat", "case1": "d_m", "case2": "d_k",
                "case3": "d_mk"}.get(self.name, "")


def noisy(name: str, m: int, k: int | None, seed: int, protected=()) -> Condition:
    if m == 0 and k is None:
        return Condition(name, "oracle", 0, None, seed=seed)
    return Condition(name, "noisy", m, k, seed=seed, protected=tuple(protected))


def main_conditions(cfg: ExperimentConfig, tau: float | None, has_labeler: bool) -> list[Condition]:
    """The five conditions of the table (+ the labeler row when the model has a labeler)."""
    conds = [Condition("baseline", "none"), Condition("oracle", "oracle", 0, None),
             noisy("case1", cfg.m, None, cfg.seed, cfg.protected),
             noisy("case2", 0, cfg.k, cfg.seed, cfg.protected),
             noisy("case3", cfg.m, cfg.k, cfg.seed, cfg.protected)]
    if has_labeler:
        conds.append(Condition(LABELER, "labeler", tau=tau))
    return conds


# -- evaluation -------------------------------------------------------------------------------


class Accumulator:
    """Running sums of one condition over the split."""

    def __init__(self, condition: Condition):
        self.condition = condition
        self.cm = torch.zeros(N, N, dtype=torch.int64)
        self.entropy = 0.0
        self.cross_entropy = 0.0
        self.removed = 0
        self.pixels = 0
        self.n: list[Tensor] = []
        self.size: list[Tensor] = []
        self.kept: list[Tensor] = []
        self.outliers: list[Tensor] = []

    def add(self, log_probs: Tensor, mask: Tensor, oracle: Tensor, used: Tensor | None) -> None:
        valid = mask != IGNORE_INDEX
        target = torch.where(valid, mask, 0)
        pred = log_probs.max(1).indices  # argmax; about 2x faster than argmax(1) on CPU
        self.cm += torch.bincount((target * N + pred)[valid], minlength=N * N).view(N, N).cpu()
        entropy = torch.special.entr(log_probs.exp()).sum(1)  # -sum p log p, 0 where p = 0
        truth = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)[valid]
        self.entropy += float(entropy[valid].sum(dtype=torch.float64))
        self.cross_entropy += float(truth.clamp(min=math.log(CE_FLOOR)).sum(dtype=torch.float64).neg())
        self.removed += int((truth == float("-inf")).sum())
        self.pixels += int(valid.sum())
        oracle = oracle.cpu()
        self.n.append(oracle.sum(1))
        if used is None:  # unfused: every class stays, as if L were all ones
            used_b = torch.ones_like(oracle)
        else:
            used_b = used.cpu().bool()
            used_b = torch.where(used_b.any(1, keepdim=True), used_b, torch.ones_like(used_b))  # empty row -> P
        self.size.append(used_b.sum(1))
        self.kept.append((used_b & oracle).sum(1))
        self.outliers.append((used_b & ~oracle).sum(1))

    def result(self) -> dict:
        c = self.condition
        metrics = scores(self.cm)
        n = torch.cat(self.n).numpy()
        size, kept, outl = (torch.cat(x).numpy() for x in (self.size, self.kept, self.outliers))
        row = {"condition": c.name,
               "m": "" if c.kind in ("none", "labeler") else c.m,
               "k": "" if c.kind in ("none", "labeler") else k_name(c.k),
               "tau": "" if c.tau is None else c.tau,
               **{name: round(100 * metrics[name], 4) for name in METRIC_NAMES},
               "n": round(float(n.mean()), 4), "labels": round(float(size.mean()), 4),
               "kept": round(float(kept.mean()), 4), "outliers": round(float(outl.mean()), 4)}
        row.update(theory_columns(c, n, size, kept, outl))
        row.update({"entropy_nats": round(self.entropy / self.pixels, 4),
                    "cross_entropy_nats": round(self.cross_entropy / self.pixels, 4),
                    "truth_removed_pct": round(100 * self.removed / self.pixels, 4), "images": int(len(n))})
        return row


def _where(condition: np.ndarray, fn, *args, default=0.0) -> np.ndarray:
    """``fn(*args)`` on the images where ``condition`` holds (in its domain), ``default`` elsewhere."""
    out = np.full(condition.shape, default, dtype=np.float64)
    if condition.any():
        out[condition] = fn(*(a[condition] if isinstance(a, np.ndarray) else a for a in args))
    return out


def theory_columns(c: Condition, n: np.ndarray, size: np.ndarray, kept: np.ndarray, outl: np.ndarray) -> dict:
    """The theory's nats per image from the label vector actually used, averaged over images.

    Per image with n true classes, |L| labels of which k' are true and m' outliers (N = 21):

    * ``theory_nats``: the condition's own quantity -- baseline 0; oracle d_hat =
      ``removed_information(N, n)`` (Eq. 6); case1 d_m = ``case1_removed(N, n, m')`` (Eq. 10,
      = d_hat when m' = 0); case2 d_k = ``case2_lost(n, k')`` (Eq. 12, 0 when k' = n); case3
      d_mk = ``case3_outlier(m', k')`` (Eq. 14, 0 when m' = 0).
    * ``theory_removed_nats`` = log(N/|L|) (Eq. 6 with |L| for n): information the labels used
      remove (0 unfused).
    * ``theory_outlier_nats`` = log(|L|/k') (Eq. 14 with m = |L| - k'): wrong-class information
      the labels leave in; unfused this is log(N/n) = d_hat, for case1 d_hat - d_m.
    * ``theory_lost_nats`` = log(n/k') (Eq. 12): valid information the labels remove.
    * ``theory_degradation_nats`` = outlier + lost: the predicted loss against the oracle
      (0 for the oracle); the sweep correlates it with the measured MIOU drop.

    The labeler row's vectors may keep no true class (k' = 0, lost = inf): its theory columns
    are left empty.
    """
    if c.kind == "labeler":
        return {"theory_quantity": "", "theory_nats": "", "theory_removed_nats": "", "theory_outlier_nats": "",
                "theory_lost_nats": "", "theory_degradation_nats": ""}
    d_hat = np.asarray(theory.removed_information(N, n), dtype=np.float64)
    if c.name == "baseline":
        own = np.zeros_like(d_hat)
    elif c.name == "case1":
        own = np.where(outl >= 1, _where(outl >= 1, lambda a, b: theory.case1_removed(N, a, b), n, outl), d_hat)
    elif c.name == "case2":
        own = _where(kept < n, theory.case2_lost, n, kept)
    elif c.name == "case3":
        own = _where(outl >= 1, theory.case3_outlier, outl, kept)
    else:  # oracle; a sweep cell's own quantity is its degradation
        own = d_hat if c.name == "oracle" else None
    removed = np.asarray(theory.removed_information(N, size), dtype=np.float64)
    outlier = _where(outl >= 1, theory.case3_outlier, outl, kept)
    lost = _where(kept < n, theory.case2_lost, n, kept)
    degradation = outlier + lost
    if own is None:
        own = degradation
    mean = lambda a: round(float(np.mean(a)), 4)  # noqa: E731
    return {"theory_quantity": c.theory_quantity if c.name in CONDITIONS else "degradation",
            "theory_nats": mean(own), "theory_removed_nats": mean(removed), "theory_outlier_nats": mean(outlier),
            "theory_lost_nats": mean(lost), "theory_degradation_nats": mean(degradation)}


class Evaluator:
    """Runs the networks once per validation batch and fuses the logits with many label vectors.

    With ``keep=True`` the logits, labeler scores, masks and oracle labels stay in memory after
    the first pass (chosen automatically when the whole split takes under ``max_bytes``).
    """

    def __init__(self, model, loader, device="cpu", max_bytes: int = 2 << 30, progress: bool | None = None):
        self.model = model.eval()
        self.loader = loader
        self.device = torch.device(device)
        self.max_bytes = max_bytes
        self.progress = progress
        self._kept: list[tuple] | None = None
        self._keep: bool | None = None
        self.forward_seconds = 0.0

    @torch.no_grad()
    def _forward(self, image: Tensor, mask: Tensor) -> tuple:
        image, mask = image.to(self.device), mask.to(self.device)
        logits = self.model.seg(image).float()
        scores_ = torch.sigmoid(self.model.labeler(image)) if self.model.labeler is not None else None
        return logits, scores_, mask, from_masks(mask, N)

    def batches(self, desc: str = "evaluate") -> Iterator[tuple]:
        if self._kept is not None:
            yield from self._kept
            return
        kept = []
        for image, mask in tqdm(self.loader, desc=desc, leave=False, disable=self._tqdm_disable()):
            start = time.perf_counter()
            batch = self._forward(image, mask)
            self.forward_seconds += time.perf_counter() - start
            if self._keep is None:
                per_image = batch[0][0].numel() * batch[0].element_size()
                self._keep = per_image * len(self.loader.dataset) <= self.max_bytes
            if self._keep:
                kept.append(batch)
            yield batch
        if self._keep:
            self._kept = kept

    def _tqdm_disable(self):
        return None if self.progress is None else not self.progress

    def fuse(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            return torch.log_softmax(logits, dim=1)
        if self.model.fusion is None:  # a model trained unfused: fuse with Eq. 1 at test time
            return fuse_log(logits, labels)
        return self.model.fuse_logits(logits, labels)

    @torch.no_grad()
    def run(self, conditions: Sequence[Condition], desc: str = "evaluate") -> list[dict]:
        """One result row per condition (same batches, same order, fresh noise generators)."""
        for c in conditions:
            c.reset()
        accs = [Accumulator(c) for c in conditions]
        for logits, scores_, mask, oracle in self.batches(desc):
            for acc in accs:
                used = acc.condition.labels(oracle, scores_)
                acc.add(self.fuse(logits, used), mask, oracle, used)
        return [acc.result() for acc in accs]


def add_deltas(rows: list[dict], oracle: dict, baseline: dict) -> list[dict]:
    for row in rows:
        for name in METRIC_NAMES:
            row[f"d_oracle_{name}"] = round(row[name] - oracle[name], 4) + 0.0  # never -0.0
            row[f"d_baseline_{name}"] = round(row[name] - baseline[name], 4) + 0.0
    return [{col: row.get(col, "") for col in TABLE_COLUMNS} for row in rows]


# -- files ------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def _fmt(value, digits=2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    head = ["condition", "m", "k", "PA", "MPA", "FWAA", "MIOU", "ΔMIOU vs oracle", "ΔMIOU vs baseline", "n",
            "theory", "theory nats", "degradation nats", "entropy nats", "CE nats"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cond = r["condition"] + (f" (tau={r['tau']})" if r["condition"] == LABELER else "")
        cells = [cond, r["m"], r["k"], r["PA"], r["MPA"], r["FWAA"], r["MIOU"],
                 f"{r['d_oracle_MIOU']:+.2f}", f"{r['d_baseline_MIOU']:+.2f}", _fmt(r["n"]),
                 r["theory_quantity"], _fmt(r["theory_nats"], 3), _fmt(r["theory_degradation_nats"], 3),
                 _fmt(r["entropy_nats"], 3), _fmt(r["cross_entropy_nats"], 3)]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _entries(directory: Path) -> list[Path]:
    """The directory's entries, less the temporary files of atomic writes (another shard's, in flight)."""
    return [p for p in directory.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]


def prepare_out(out: Path | None, cfg: ExperimentConfig, force: bool, results_root: Path,
                keep_cells: bool = False) -> tuple[Path, bool]:
    """The output directory and whether this run resumes an unfinished one.

    * ``--force``: this command's previous files there (and ``cells/``, unless ``keep_cells``:
      the merge step's input, kept only when ``run.json`` shows the same configuration) are
      removed first.
    * An unfinished run of the same configuration there (``run.json`` matches, no
      ``summary.json``) is resumed; without ``--out`` the newest such run under
      ``results_root`` is resumed.
    * Any other non-empty directory: :class:`ExperimentError` (exit 2).
    """
    identity = cfg.identity()
    if out is None:
        if results_root.is_dir() and not force:
            for run in sorted((p for p in results_root.iterdir() if p.is_dir()), reverse=True):
                if _resumable(run, identity):
                    return run, True
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out, i = results_root / stamp, 1
        while out.exists():
            out, i = results_root / f"{stamp}-{i}", i + 1
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} exists and is not a directory")
    if out.is_dir() and _entries(out):
        if force:
            if keep_cells and (out / CELLS).is_dir():
                _check_same_config(out, identity)
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
            if not keep_cells:
                shutil.rmtree(out / CELLS, ignore_errors=True)
        elif _resumable(out, identity):
            return out, True
        else:
            raise ExperimentError(f"output directory {out} already exists and is not empty; pass --force to "
                                  "overwrite it or choose another --out (an unfinished run of the same "
                                  "configuration is resumed instead)")
    out.mkdir(parents=True, exist_ok=True)
    return out, False


def _check_same_config(run: Path, identity: dict) -> None:
    try:
        config = json.loads((run / "run.json").read_text()).get("config")
    except (OSError, ValueError):
        config = None
    if config != identity:
        raise ExperimentError(f"the sweep cells in {run / CELLS} were not computed by this configuration "
                              f"({run / 'run.json'} differs or is missing); refusing to merge them")


def _resumable(run: Path, identity: dict) -> bool:
    meta = run / "run.json"
    if not meta.is_file() or (run / "summary.json").exists():
        return False
    try:
        return json.loads(meta.read_text()).get("config") == identity
    except (OSError, ValueError):
        return False


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("imgpix", "torch", "numpy", "scipy", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch_threads"] = torch.get_num_threads()
    return out


def git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                              capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- sweep (cell loop and merge are separate so the grid can be sharded) ----------------------


def sweep_cells(cfg: ExperimentConfig) -> list[tuple[int, int | None]]:
    ms, ks = cfg.grid
    return [(m, k) for m in ms for k in ks]


def cell_path(out: Path, m: int, k: int | None) -> Path:
    return out / CELLS / f"m{m}_k{k_name(k)}.json"


def check_shard(index: int, count: int) -> tuple[int, int]:
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard i/n must satisfy 0 <= i < n (n >= 1), got {index}/{count}")
    return index, count


def shard_cells(cells: Sequence[tuple[int, int | None]], index: int, count: int) -> list[tuple[int, int | None]]:
    """Shard ``index`` of ``count``: cells ``index, index + count, ...`` of the grid (deterministic, disjoint,
    together the whole grid)."""
    check_shard(index, count)
    return list(cells[index::count])


def missing_cells(out: Path, cells: Iterable[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    return [(m, k) for m, k in cells if not cell_path(out, m, k).is_file()]


def run_cells(evaluator: Evaluator, cfg: ExperimentConfig, out: Path, cells: Iterable[tuple[int, int | None]],
              progress: bool | None = None) -> int:
    """Evaluate every cell without a result file; each result is written atomically as it finishes."""
    (out / CELLS).mkdir(parents=True, exist_ok=True)
    todo = [(m, k) for m, k in cells if not cell_path(out, m, k).is_file()]
    for m, k in tqdm(todo, desc="sweep", disable=None if progress is None else not progress):
        cond = noisy(f"m{m}_k{k_name(k)}", m, k, cfg.seed, cfg.protected)
        row = evaluator.run([cond], desc=f"cell m={m} k={k_name(k)}")[0]
        row.update({"condition": "cell", "m": m, "k": k_name(k)})
        write_json(cell_path(out, m, k), row)
    return len(todo)


SWEEP_COLUMNS = ("m", "k", "PA", "MPA", "FWAA", "MIOU", "MIOU_drop", "n", "labels", "kept", "outliers",
                 "theory_removed_nats", "theory_outlier_nats", "theory_lost_nats", "theory_degradation_nats",
                 "entropy_nats", "cross_entropy_nats", "truth_removed_pct")


def merge_sweep(out: Path, cells: Sequence[tuple[int, int | None]], oracle_miou: float) -> tuple[list[dict], dict]:
    """Read every cell file (all must exist) -> rows in grid order and the Spearman statistics."""
    from scipy.stats import spearmanr

    rows = []
    for m, k in cells:
        path = cell_path(out, m, k)
        if not path.is_file():
            raise ExperimentError(f"sweep cell {path} is missing; rerun the command to finish the sweep")
        row = json.loads(path.read_text())
        row["MIOU_drop"] = round(oracle_miou - row["MIOU"], 4)
        rows.append({c: row.get(c, "") for c in SWEEP_COLUMNS})
    drop = np.array([r["MIOU_drop"] for r in rows], dtype=float)
    stats = {"cells": len(rows), "predictor": "theory_degradation_nats", "measured": "MIOU_drop (oracle MIOU - cell MIOU, points)"}
    for name in ("theory_degradation_nats", "theory_lost_nats", "theory_outlier_nats", "theory_removed_nats"):
        pred = np.array([r[name] for r in rows], dtype=float)
        if len(rows) >= 3 and np.ptp(pred) > 0 and np.ptp(drop) > 0:
            res = spearmanr(pred, drop)
            rho, p = float(res.statistic), float(res.pvalue)
        else:
            rho, p = float("nan"), float("nan")
        if name == "theory_degradation_nats":
            stats.update({"spearman": round(rho, 4), "p_value": p})
        else:
            stats.setdefault("spearman_other", {})[name] = round(rho, 4)
    return rows, stats


# -- tau sweep --------------------------------------------------------------------------------


def tau_sweep(evaluator: Evaluator, baseline_miou: float, oracle_miou: float) -> tuple[list[dict], dict]:
    conds = [Condition(f"tau={t}", "labeler", tau=t) for t in TAUS]
    rows = []
    for t, row in zip(TAUS, evaluator.run(conds, desc="tau sweep")):
        rows.append({"tau": t, **{k: row[k] for k in METRIC_NAMES}, "labels": row["labels"], "kept": row["kept"],
                     "outliers": row["outliers"], "d_baseline_MIOU": round(row["MIOU"] - baseline_miou, 4)})
    best = max(rows, key=lambda r: (r["MIOU"], -abs(r["tau"] - 0.5)))
    above = [r["tau"] for r in rows if r["MIOU"] > baseline_miou]
    intervals, run_ = [], []
    for r in rows:
        if r["MIOU"] > baseline_miou:
            run_.append(r["tau"])
        elif run_:
            intervals.append([run_[0], run_[-1]])
            run_ = []
    if run_:
        intervals.append([run_[0], run_[-1]])
    stats = {"best_tau": best["tau"], "best_MIOU": best["MIOU"], "baseline_MIOU": baseline_miou,
             "oracle_MIOU": oracle_miou, "beats_baseline_range": [min(above), max(above)] if above else None,
             "beats_baseline_intervals": intervals}
    return rows, stats


# -- plots ------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_degradation(rows: list[dict], path: Path, title: str) -> None:
    plt = _pyplot()
    names = [r["condition"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = ax.bar(x - 0.2, [r["MIOU"] for r in rows], 0.4, color="tab:blue", label="measured MIOU (%)")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_ylabel("MIOU (%)")
    ax.set_ylim(0, 105)
    ax2 = ax.twinx()
    theo = [r["theory_degradation_nats"] if r["theory_degradation_nats"] != "" else 0.0 for r in rows]
    bars2 = ax2.bar(x + 0.2, theo, 0.4, color="tab:orange", label="theory: predicted loss vs oracle (nats)")
    ax2.bar_label(bars2, labels=[f"{t:.2f}" if r["theory_degradation_nats"] != "" else "" for t, r in zip(theo, rows)],
                  fontsize=7)
    names = [f"{r['condition']}\n{r['theory_quantity']}={r['theory_nats']:.2f}"
             if r["theory_quantity"] not in ("", "none") else r["condition"] for r in rows]
    ax2.set_ylabel("nats")
    ax2.set_ylim(0, max(theo + [0.1]) * 1.25)
    ax.set_xticks(x, names)
    handles = [bars, bars2]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(rows: list[dict], cells, stats: dict, path: Path) -> None:
    plt = _pyplot()
    ms = sorted({m for m, _ in cells})
    ks = list(dict.fromkeys(k_name(k) for _, k in cells))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, title, cmap in ((axes[0], "MIOU_drop", "measured MIOU drop vs oracle (points)", "Reds"),
                                 (axes[1], "theory_degradation_nats", "theory: predicted degradation (nats)",
                                  "Oranges")):
        grid = np.full((len(ms), len(ks)), np.nan)
        for r in rows:
            grid[ms.index(int(r["m"])), ks.index(str(r["k"]))] = r[key]
        im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
        for i in range(len(ms)):
            for j in range(len(ks)):
                ax.text(j, i, f"{grid[i, j]:.2f}" if key != "MIOU_drop" else f"{grid[i, j]:.1f}", ha="center",
                        va="center", fontsize=8)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_yticks(range(len(ms)), ms)
        ax.set_xlabel("k (true classes kept)")
        ax.set_ylabel("m (outlier labels)")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"Spearman rho = {stats['spearman']:.3f} over {stats['cells']} cells", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tau(rows: list[dict], stats: dict, path: Path) -> None:
    plt = _pyplot()
    taus = [r["tau"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(taus, [r["MIOU"] for r in rows], "o-", color="tab:blue", label="fused with labeler (tau)")
    ax.axhline(stats["baseline_MIOU"], color="tab:red", ls="--", label="baseline (no fusion)")
    ax.axhline(stats["oracle_MIOU"], color="tab:green", ls=":", label="oracle labels")
    for lo, hi in stats["beats_baseline_intervals"]:
        ax.axvspan(lo - 0.025, hi + 0.025, color="tab:blue", alpha=0.08)
    ax.plot([stats["best_tau"]], [stats["best_MIOU"]], "*", ms=14, color="gold", mec="k",
            label=f"best tau = {stats['best_tau']}")
    ax.set_xlabel("tau (labeler threshold)")
    ax.set_ylabel("MIOU (%)")
    ax.set_title("MIOU against the labeler threshold (cf. paper Fig. 4)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the whole run ----------------------------------------------------------------------------


def _eval_loader(tcfg: TrainConfig, cfg: ExperimentConfig):
    ecfg = replace(tcfg, device=cfg.device, workers=0)
    if ecfg.data == "synthetic":
        ecfg = replace(ecfg, num_val=cfg.num_val or (tcfg.num_val if cfg.checkpoint else cfg.preset["num_val"]))
    return build_loader(ecfg, "val", shuffle=False)


def check_data(cfg: ExperimentConfig) -> None:
    """Fail early (before any training) when the VOC root lacks the expected layout."""
    if cfg.data == "voc" and cfg.root:
        from .data import VOCSegmentation

        VOCSegmentation(cfg.root, split="val")  # FileNotFoundError names the layout
        if not cfg.checkpoint:
            VOCSegmentation(cfg.root, split="trainaug")


def check_sweep_mode(cfg: ExperimentConfig, out: Path | None, force: bool, shard: tuple[int, int] | None,
                     merge: bool) -> None:
    """The rules of ``--shard`` / ``--merge`` (:class:`ExperimentError`, exit 2, when broken)."""
    if shard is None and not merge:
        return
    flag = "--merge" if shard is None else "--shard"
    if shard is not None:
        check_shard(*shard)
    if shard is not None and merge:
        raise ExperimentError("--shard and --merge are separate steps: run the shards, then --merge once")
    if not cfg.sweep:
        raise ExperimentError(f"{flag} needs --sweep (it shards / merges the m x k sweep)")
    if out is None:
        raise ExperimentError(f"{flag} needs --out DIR: the directory every shard and the merge share")
    if shard is not None and force:
        raise ExperimentError("--force cannot be combined with --shard (the shards share --out and would "
                              "delete each other's cells); remove the directory, or run --force once "
                              "without --shard")


def _model(cfg: ExperimentConfig, cache_dir: Path | None, log):
    if cfg.checkpoint:
        return checkpoint_model(cfg.checkpoint, cfg)
    return trained_model(train_config(cfg), Path(cache_dir or default_cache_dir()), log)


def run_shard(cfg: ExperimentConfig, out: Path, shard: tuple[int, int], cache_dir: Path | None = None,
              results_root: Path = Path("results/noisy_labels"), log: Callable[[str], None] | None = None,
              progress: bool | None = None) -> dict:
    """Compute shard ``shard = (i, n)`` of the sweep: cells ``[i::n]`` into ``out/cells/`` (nothing else).

    Every shard and the merge use the same configuration and ``out``; ``run.json`` (the same
    configuration) is written by each, and a shard resumes its unfinished cells. The main
    table, the tau sweep and ``summary.json`` are the merge's (:func:`run` with ``merge=True``).
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    check_sweep_mode(cfg, out, False, shard, False)
    wall0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    check_data(cfg)
    out, resumed = prepare_out(out, cfg, False, Path(results_root))
    write_json(out / "run.json", {"config": cfg.identity(), "started": datetime.now().isoformat(timespec="seconds")})
    (out / CELLS).mkdir(exist_ok=True)
    cells = shard_cells(sweep_cells(cfg), *shard)
    todo = missing_cells(out, cells)
    log(f"shard {shard[0]}/{shard[1]}: {len(cells)} of {len(sweep_cells(cfg))} cells, {len(todo)} to compute")
    timings, done, info = {}, 0, None
    if todo:  # a shard with nothing to do never trains nor loads the model
        start = time.perf_counter()
        model, tcfg, info = _model(cfg, cache_dir, log)
        timings["model_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        evaluator = Evaluator(model, _eval_loader(tcfg, cfg), cfg.device, progress=progress)
        done = run_cells(evaluator, cfg, out, cells, progress)
        timings["sweep_s"] = round(time.perf_counter() - start, 2)
    timings["total_s"] = round(time.perf_counter() - wall0, 2)
    return {"shard": {"index": shard[0], "count": shard[1], "cells": [f"m{m}_k{k_name(k)}" for m, k in cells],
                      "computed": done, "resumed": resumed},
            "model": asdict(info) if info else None, "out": str(out), "timings": timings}


def run(cfg: ExperimentConfig, out: Path | None = None, force: bool = False, cache_dir: Path | None = None,
        results_root: Path = Path("results/noisy_labels"), log: Callable[[str], None] | None = None,
        progress: bool | None = None, shard: tuple[int, int] | None = None, merge: bool = False) -> dict:
    """Run the experiment; returns the summary (also written to ``out/summary.json``).

    ``shard=(i, n)``: only compute cells ``[i::n]`` of the sweep (:func:`run_shard`).
    ``merge=True``: compute no cell; every cell file must exist in ``out/cells/`` (else
    :class:`ExperimentError` listing the missing ones), and the outputs are those of an
    unsharded run of the same configuration (``--force`` keeps ``cells/`` here).
    """
    check_sweep_mode(cfg, out, force, shard, merge)
    if shard is not None:
        return run_shard(cfg, out, shard, cache_dir, results_root, log, progress)
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    check_data(cfg)
    if merge:  # before prepare_out: a failed merge creates, removes and overwrites nothing
        missing = missing_cells(Path(out), sweep_cells(cfg))
        if missing:
            names = ", ".join(f"m{m}_k{k_name(k)}" for m, k in missing)
            raise ExperimentError(f"cannot merge: {len(missing)} of {len(sweep_cells(cfg))} sweep cells missing in "
                                  f"{Path(out) / CELLS}: {names}; finish the shards that own them (--shard i/n), "
                                  "or rerun without --shard/--merge to compute them here")
    out, resumed = prepare_out(out, cfg, force, Path(results_root), keep_cells=merge)
    if resumed:
        log(f"{'merging' if merge else 'resuming'} the unfinished run in {out}")
    write_json(out / "run.json", {"config": cfg.identity(), "started": datetime.now().isoformat(timespec="seconds")})
    timings = {}

    start = time.perf_counter()
    model, tcfg, info = _model(cfg, cache_dir, log)
    timings["model_s"] = round(time.perf_counter() - start, 2)
    tau = cfg.tau if cfg.tau is not None else float(getattr(model, "tau", 0.25))

    start = time.perf_counter()
    evaluator = Evaluator(model, _eval_loader(tcfg, cfg), cfg.device, progress=progress)
    conds = main_conditions(cfg, tau, model.labeler is not None)
    raw = evaluator.run(conds)
    by_name = {r["condition"]: r for r in raw}
    rows = add_deltas(raw, by_name["oracle"], by_name["baseline"])
    by_name = {r["condition"]: r for r in rows}
    timings["evaluate_s"] = round(time.perf_counter() - start, 2)

    write_atomic(out / "table.csv", csv_text(rows, TABLE_COLUMNS))
    table_md = markdown_table(rows)
    write_atomic(out / "table.md", table_md)
    title = (f"{tcfg.data}: m={cfg.m}, k={cfg.k}, seed={cfg.seed}"
             f"{', background protected' if cfg.protect_background else ''}")
    plot_degradation(rows, out / "degradation.png", title)

    checks = {"oracle_beats_baseline": by_name["oracle"]["MIOU"] > by_name["baseline"]["MIOU"],
              "case2_not_above_oracle": by_name["case2"]["MIOU"] <= by_name["oracle"]["MIOU"],
              "case3_not_above_oracle": by_name["case3"]["MIOU"] <= by_name["oracle"]["MIOU"]}
    summary = {"config": cfg.identity(), "train_config": asdict(tcfg), "model": asdict(info),
               "device": str(cfg.device), "seed": cfg.seed, "protected_classes": list(cfg.protected),
               "labeler_tau": tau, "versions": versions(), "git_commit": git_commit(),
               "resumed": resumed, "table": rows, "checks": checks}

    if cfg.sweep:
        start = time.perf_counter()
        cells = sweep_cells(cfg)
        done = run_cells(evaluator, cfg, out, cells, progress)
        sweep_rows, stats = merge_sweep(out, cells, by_name["oracle"]["MIOU"])
        stats.update({"m_grid": list(cfg.grid[0]), "k_grid": [k_name(k) for k in cfg.grid[1]],
                      "cells_computed_this_run": done, "merge_only": merge})
        write_atomic(out / "sweep.csv", csv_text(sweep_rows, SWEEP_COLUMNS))
        plot_sweep(sweep_rows, cells, stats, out / "sweep_heatmaps.png")
        summary["sweep"] = stats
        timings["sweep_s"] = round(time.perf_counter() - start, 2)

    if cfg.tau_sweep:
        if model.labeler is None:
            raise ExperimentError("--tau-sweep needs a model trained with a labeler")
        start = time.perf_counter()
        tau_rows, stats = tau_sweep(evaluator, by_name["baseline"]["MIOU"], by_name["oracle"]["MIOU"])
        write_atomic(out / "tau_sweep.csv", csv_text(tau_rows, list(tau_rows[0])))
        plot_tau(tau_rows, stats, out / "tau_sweep.png")
        summary["tau_sweep"] = stats
        timings["tau_sweep_s"] = round(time.perf_counter() - start, 2)

    timings.update({"network_forward_s": round(evaluator.forward_seconds, 2),
                    "total_s": round(time.perf_counter() - wall0, 2),
                    "cpu_s": round(time.process_time() - cpu0, 2)})
    summary["timings"] = timings
    summary["out"] = str(out)
    summary["table_md"] = table_md
    write_json(out / "summary.json", summary)  # last: its presence marks a finished run
    return summary
