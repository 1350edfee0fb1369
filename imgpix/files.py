"""Atomic file writes: a temporary file beside the target, then one rename (a crash never leaves a torn file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch


def _temporary(path: Path, owner: str = "") -> Path:
    """Where an atomic write of ``path`` puts its data first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{owner or os.getpid()}.tmp")


def remove_torn_files(folder: Path, names) -> None:
    """Delete the temporaries of atomic writes of ``names`` in ``folder`` that a kill left behind."""
    for name in names:
        for torn in Path(folder).glob(_temporary(Path(name), "*").name):
            torn.unlink(missing_ok=True)


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (values JSON cannot hold are written with ``str``)."""
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    _replace_atomically(path, lambda tmp: torch.save(obj, tmp))
