"""Class lists of datasets stored as files: which file, its names (and CVAT colours), the background class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import IGNORE_INDEX

CLASS_FILES = ("labelmap.txt", "class_names.txt")
BACKGROUND_NAMES = ("background", "_background_")
MAX_CLASSES = IGNORE_INDEX  # ids 0..254: 255 means "ignore"
FOLDER_LAYOUT = (
    "expected layout under root:\n"
    "  JPEGImages/<id>.jpg\n"
    "  SegmentationClass/<id>.png   (palette or grey PNG of class ids, or RGB colours of labelmap.txt)\n"
    "  ImageSets/Segmentation/<split>.txt\n"
    "  labelmap.txt (CVAT) or class_names.txt (one class name per line, line i = class id i)"
)


def find_class_list(root: str | os.PathLike, classes: str | os.PathLike | None = None) -> Path:
    """The class-list file: ``classes`` if given (relative to ``root`` or absolute), else the first of CLASS_FILES."""
    root = Path(root)
    candidates = [root / classes] if classes is not None else [root / name for name in CLASS_FILES]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no class list in {str(root)!r}: looked for "
                            f"{', '.join(str(p) for p in candidates)}\n{FOLDER_LAYOUT}")


def read_class_list(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray | None]:
    """``(names, colours)`` of a class list: line i names class id i.

    A CVAT ``labelmap.txt`` (``name:r,g,b:parts:actions``) also gives ``colours`` ``[N,3]``;
    a ``class_names.txt`` gives ``colours=None``.
    """
    path = Path(path)
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if path.name == "labelmap.txt" or (lines and all(":" in line for line in lines)):
        names, colours = _parse_labelmap(lines, path)
    else:
        names, colours = lines[1:] if lines[:1] == ["__ignore__"] else lines, None
    _check_names(names, path)
    return tuple(names), colours


def _parse_labelmap(lines: list[str], path: Path) -> tuple[list[str], np.ndarray]:
    names, colours = [], []
    for line in lines:
        name, _, rest = line.partition(":")
        colour = rest.split(":")[0]
        try:
            rgb = [int(v) for v in colour.split(",")]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"{path}: line {line!r} is not 'name:r,g,b:parts:actions' with r,g,b in 0..255")
        names.append(name.strip())
        colours.append(rgb)
    table = np.array(colours, dtype=np.uint8).reshape(-1, 3)
    if len(np.unique(table, axis=0)) != len(table):
        raise ValueError(f"{path}: two classes share a colour")
    return names, table


def _check_names(names: Sequence[str], path: Path) -> None:
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"{path}: needs 2..{MAX_CLASSES} classes (255 is the ignore value), got {len(names)}")
    if not all(names):
        raise ValueError(f"{path}: a class has an empty name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: repeated class names {repeated}")


def resolve_background(names: Sequence[str], background: str | int | None = "auto") -> int | None:
    """Class id fusion always keeps, or None.

    ``"auto"``: the class named ``background`` or ``_background_`` (any case) if there is one;
    ``None`` or ``"none"``: no such class; a class name; or a class id (int or digits).
    """
    if background is None or background == "none":
        return None
    if background == "auto":
        found = [i for i, n in enumerate(names) if n.lower() in BACKGROUND_NAMES]
        return found[0] if found else None
    if isinstance(background, str) and background in names:
        return list(names).index(background)
    if isinstance(background, int) or (isinstance(background, str) and background.isdigit()):
        if 0 <= int(background) < len(names):
            return int(background)
    raise ValueError(f"background must be 'auto', 'none', a class name or an id 0..{len(names) - 1}; "
                     f"got {background!r} (classes: {', '.join(names)})")
