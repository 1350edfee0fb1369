"""The pre-training file check: every listed image and label, before any training starts.

Per item: the image exists and decodes (JPEGs at 1/8 scale, which still reads every byte, so a
truncated file is caught), its label decodes in an accepted mode, has the image's size and holds
only class ids ``0..N-1`` or 255. :func:`check_dataset` raises :class:`BadFilesError` naming the
first 10 bad files and their count, or with ``skip_bad_files=True`` returns the dataset without
the items concerned and a warning naming them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

from PIL import Image
from tqdm import tqdm

from .folder import FileError, SegmentationFiles, check_label, decode

SHOWN = 10


class BadFile(NamedTuple):
    index: int  # the dataset item it belongs to
    path: str
    problem: str


class BadFilesError(ValueError):
    """Files of a split that cannot be used; ``bad`` lists them."""

    bad: tuple[BadFile, ...] = ()

    @classmethod
    def of(cls, bad: list[BadFile], dataset: SegmentationFiles, skipping: bool = False) -> "BadFilesError":
        hint = ("every item has a bad file: none is left to use" if skipping
                else "skip_bad_files=True (--skip-bad-files) leaves their items out")
        error = cls(f"{describe(bad, dataset)}\n{hint}")
        error.bad = tuple(bad)
        return error


def describe(bad: list[BadFile], dataset: SegmentationFiles) -> str:
    """The count, then the first SHOWN bad files with their problems."""
    items = len({b.index for b in bad})
    lines = [f"{len(bad)} bad file(s) in {items} of {len(dataset)} items of split {dataset.split!r} "
             f"under {dataset.root}:"]
    lines += [f"  {b.path}: {b.problem}" for b in bad[:SHOWN]]
    if len(bad) > SHOWN:
        lines.append(f"  ... and {len(bad) - SHOWN} more")
    return "\n".join(lines)


def image_size(path) -> tuple[int, int]:
    """``(H, W)`` of an image file that decodes completely (a FileError otherwise)."""

    def read(p):
        with Image.open(p) as img:
            w, h = img.size
            img.draft("RGB", (max(w // 8, 1), max(h // 8, 1)))  # JPEG only: DCT-scaled decode
            img.load()
        return h, w

    return decode(path, "image", read)


def item_problems(dataset: SegmentationFiles, index: int) -> list[BadFile]:
    """The bad files of item ``index``: its image, then its label."""
    bad, size = [], None
    try:
        size = image_size(dataset.images[index])
    except FileError as error:
        bad.append(BadFile(index, error.path, error.problem))
    label = dataset.labels[index]
    try:
        check_label(dataset.read_label(label), dataset.num_classes, label, size)
    except FileError as error:
        bad.append(BadFile(index, error.path, error.problem))
    return bad


def find_bad_files(dataset: SegmentationFiles, workers: int = 4, progress: bool = False) -> list[BadFile]:
    """Every bad file of ``dataset``, in item order; ``workers`` threads decode (PIL releases the GIL)."""
    check = partial(item_problems, dataset)
    indices = range(len(dataset))
    bar = partial(tqdm, total=len(dataset), desc=f"checking {dataset.split}", leave=False, disable=not progress)
    if workers <= 1:
        return [b for found in bar(map(check, indices)) for b in found]
    with ThreadPoolExecutor(workers) as pool:
        return [b for found in bar(pool.map(check, indices, chunksize=16)) for b in found]


def check_dataset(dataset, skip_bad_files: bool = False, workers: int = 4,
                  progress: bool = False) -> tuple[object, str | None]:
    """``(dataset, None)`` when all its files are good.

    Otherwise raise :class:`BadFilesError`, or with ``skip_bad_files`` return
    ``(dataset without the bad items, warning)``. Datasets without files (synthetic) pass unchanged.
    """
    if not isinstance(dataset, SegmentationFiles):
        return dataset, None
    bad = find_bad_files(dataset, workers, progress)
    if not bad:
        return dataset, None
    dropped = {b.index for b in bad}
    if not skip_bad_files or len(dropped) == len(dataset):
        raise BadFilesError.of(bad, dataset, skipping=skip_bad_files)
    warning = f"warning: skipping {len(dropped)} item(s) with bad files; " + describe(bad, dataset)
    return dataset.without(dropped), warning
