"""Checkpoints and the output directory of a training run: read / load / save, resume, the metrics.csv history."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed as dist
from .config import RUNTIME_ONLY, TrainConfig
from .files import write_atomic
from .models import ImgPixNet, build_model

if TYPE_CHECKING:
    from .train import Trainer

CHECKPOINT = "checkpoint.pt"
HISTORY = "metrics.csv"


def load_checkpoint(path: str | Path, device="cpu") -> tuple[ImgPixNet, TrainConfig, dict]:
    """The model, its TrainConfig and the raw state of an imgpix checkpoint (ValueError if unreadable)."""
    state = read_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.to(device), cfg, state


def read_checkpoint(path: str | Path) -> dict:
    """The saved state of ``path``, on the CPU; FileNotFoundError / ValueError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ValueError, ...
        why = str(error).split(". ")[0].splitlines()[0] if str(error).strip() else ""  # torch's first sentence
        raise ValueError(f"{path} is not a readable imgpix checkpoint (empty, truncated or another file?): "
                         f"{type(error).__name__}{': ' + why if why else ''}") from None
    if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
        raise ValueError(f"{path} is not an imgpix checkpoint (no config/model/epoch entries)")
    return state


def append_history(path: Path, row: dict) -> None:
    """Append ``row`` under the file's header (a column the row lacks, e.g. the labeler's loss after its
    last epoch, stays empty); a new file takes the row's keys as its header."""
    new = not path.exists() or path.stat().st_size == 0
    fieldnames = list(row)
    if not new:
        with path.open(newline="") as handle:
            fieldnames = next(csv.reader(handle))
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, restval="")
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_history(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint being resumed from."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    keep = [row for row in rows if int(row["epoch"]) <= last_epoch]
    if len(keep) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(keep)
    write_atomic(path, buffer.getvalue())


def resume_or_start(trainer: Trainer, out: Path) -> None:
    """Continue from ``out/checkpoint.pt`` when it exists and was made by the same configuration."""
    ckpt = out / CHECKPOINT
    if not ckpt.exists():
        if dist.is_main():  # rows of an epoch killed before its first checkpoint
            truncate_history(out / HISTORY, 0)
        return
    try:
        state = read_checkpoint(ckpt)
    except ValueError as error:
        raise ValueError(f"{error}; delete it to train afresh, or use another --out directory") from None
    # torchrun gives rank r the device cuda:r: compare the device type, not the index
    saved = {k: torch.device(v).type if k == "device" else v
             for k, v in state["config"].items() if k not in RUNTIME_ONLY}
    current = {k: torch.device(v).type if k == "device" else v
               for k, v in asdict(trainer.cfg).items() if k not in RUNTIME_ONLY}
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current[k])
        raise ValueError(f"{ckpt} was written by another configuration (differs in {changed}); "
                         "use another --out directory")
    trainer.load_state(state)
    if dist.is_main():
        truncate_history(out / HISTORY, trainer.epoch)


def make_out_dir(out: Path) -> bool:
    """Create ``out`` and its parents; True if ``out`` is new. OSError naming ``out`` if it cannot be written."""
    new = not out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = "a file of that name exists" if isinstance(error, FileExistsError) else error.strerror or error
        raise OSError(f"cannot create the --out directory {out}: {why}") from None
    if not os.access(out, os.W_OK):
        raise OSError(f"cannot write into the --out directory {out}: permission denied")
    return new


def discard_failed_start(out: Path, created: bool) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (and ``out`` itself if it made it)."""
    for name in ("config.json", HISTORY):
        (out / name).unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()
