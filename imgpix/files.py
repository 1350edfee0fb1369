"""Every atomic write: a temporary file beside the target, then one rename (a crash never leaves a torn file).

Text, JSON, torch states, pickles and figures all go through :func:`replace_atomically`, so their temporaries
share one name pattern, ``.<name>.<pid>.tmp``, that :func:`is_temporary` recognises and
:func:`remove_torn_files` cleans up. Nothing heavy is imported here until a write needs it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Callable

TEMPORARY_SUFFIX = ".tmp"


def _temporary(path: Path, owner: str = "") -> Path:
    """Where an atomic write of ``path`` puts its data first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{owner or os.getpid()}{TEMPORARY_SUFFIX}")


def is_temporary(name: str) -> bool:
    """True for the name of an atomic write's temporary file (one a kill may have left behind)."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def remove_torn_files(folder: Path, names) -> None:
    """Delete the temporaries of atomic writes of ``names`` in ``folder`` that a kill left behind."""
    for name in names:
        for torn in Path(folder).glob(_temporary(Path(name), "*").name):
            torn.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary beside ``path``, then rename it to ``path``; on any error the
    temporary is removed and ``path`` keeps its previous content."""
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
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (values JSON cannot hold are written with ``str``)."""
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch

    replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_pickle(path: Path, obj) -> None:
    """Pickle ``obj`` to ``path`` atomically."""
    replace_atomically(path, lambda tmp: tmp.write_bytes(pickle.dumps(obj)))


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save the matplotlib figure ``fig`` atomically (format from ``path``'s suffix, e.g. PNG) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
