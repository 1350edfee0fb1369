"""Trained models cached by configuration: train once, reuse in every later run with the same TrainConfig."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..checkpoint import CHECKPOINT, HISTORY, load_checkpoint, read_checkpoint
from ..config import RUNTIME_ONLY, TrainConfig
from ..train import train


@dataclass
class CachedModel:
    model: object
    config: TrainConfig
    path: str
    hit: bool
    train_seconds: float


def default_cache_dir() -> Path:
    """``$IMGPIX_CACHE``, else ``$XDG_CACHE_HOME/imgpix``, else ``~/.cache/imgpix``."""
    if os.environ.get("IMGPIX_CACHE"):
        return Path(os.environ["IMGPIX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgpix"


# the library code that shapes a trained model: the training loop and its settings, the data and their loaders
# ("data"), the networks, fusion, losses and labels, the checkpoints a resumed training reads, and the
# distributed helpers that choose the data order (tests/test_cache.py checks every module train.py imports)
TRAINING_CODE = ("models", "data", "train.py", "config.py", "checkpoint.py", "distributed.py", "fusion.py",
                 "fast_fusion.py", "losses.py", "labels.py")


def code_digest() -> str:
    """Hash of the library code that shapes a trained model: a change of it is a new cache entry."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        for path in sorted((package / name).rglob("*.py")) if (package / name).is_dir() else [package / name]:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def config_key(cfg: TrainConfig) -> str:
    """Hash of every setting and of the code that change the trained weights."""
    values = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_ONLY or k == "epochs"}
    values["code"] = code_digest()
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive advisory lock: two processes never train into one cache entry at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def epochs_done(configs: list[TrainConfig], cache_dir: Path) -> tuple[int, int]:
    """(epochs trained so far, epochs in all) of ``configs`` in ``cache_dir``: the rows of their histories."""
    done = 0
    for cfg in configs:
        history = Path(cache_dir) / "models" / config_key(cfg) / HISTORY
        with contextlib.suppress(OSError):
            done += min(max(len(history.read_text().splitlines()) - 1, 0), cfg.epochs)
    return done, sum(cfg.epochs for cfg in configs)


def is_cached(cfg: TrainConfig, cache_dir: Path) -> bool:
    """True when ``cache_dir`` holds the finished model of ``cfg`` (nothing is loaded but its epoch)."""
    ckpt = Path(cache_dir) / "models" / config_key(cfg) / CHECKPOINT
    return ckpt.exists() and read_checkpoint(ckpt)["epoch"] >= cfg.epochs


def trained_model(cfg: TrainConfig, cache_dir: Path, log: Callable[[str], None] = print) -> CachedModel:
    """The model of ``cfg`` from ``cache_dir/models/<key>`` when finished there, else trained (resuming)."""
    key = config_key(cfg)
    entry = Path(cache_dir) / "models" / key
    start = time.perf_counter()
    with _file_lock(entry.with_name(key + ".lock")):
        ckpt = entry / CHECKPOINT
        if is_cached(cfg, cache_dir):
            model, _, _ = load_checkpoint(ckpt, cfg.device)
            return CachedModel(model, cfg, str(ckpt), True, 0.0)
        log(f"training {entry} ({cfg.epochs} epochs)")
        trainer = train(cfg, entry, log=lambda text: None)
    return CachedModel(trainer.model, cfg, str(ckpt), False, time.perf_counter() - start)
