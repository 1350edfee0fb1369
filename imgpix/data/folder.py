"""Segmentation datasets stored as files: readers, the shared item pipeline, and a generic folder dataset.

:class:`SegmentationFolder` reads any dataset in the PASCAL VOC layout (what labelme's
``labelme2voc.py`` and CVAT's "Segmentation mask" export write) with its own class list::

    root/JPEGImages/<id>.jpg                 (or .jpeg .png .bmp .tif .tiff)
    root/SegmentationClass/<id>.png          class ids: palette ('P') or grey ('L') PNG,
                                             or colour (RGB) PNG mapped through labelmap.txt
    root/ImageSets/Segmentation/<split>.txt  one id per line (train.txt, val.txt, ...)
    root/labelmap.txt or root/class_names.txt   the class list; line i names class id i

``class_names.txt``: one name per line (labelme's ``__ignore__`` first line, if present, is
skipped). ``labelmap.txt`` (CVAT): ``name:r,g,b:parts:actions`` lines, ``#`` comments; the
colours map RGB masks to class ids. N = number of classes (2..255); mask value 255 is
"ignore", every other value must be a class id < N.

Every file dataset has ``num_classes``, ``class_names`` (tuple) and ``background`` (the class
id fusion always keeps, or None). Items follow the package protocol ``(image float32 [3,H,W]
ImageNet-normalised, mask int64 [H,W])``. With ``crop_size=S`` every item is ``S x S``: the
image is padded bottom/right with 0 (the mean colour, after normalisation) and the mask with
255, then cropped -- a random crop plus a random horizontal flip (and an optional random
rescale ``scale_range``) when ``augment=True``, a centre crop otherwise. Randomness comes from
``seed`` (deterministic per ``(seed, epoch, index)``; call ``set_epoch``) or, with
``seed=None``, from torch's global RNG (which DataLoader seeds per worker).

A missing or undecodable file raises :class:`FileError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .classes import FOLDER_LAYOUT, find_class_list, read_class_list, resolve_background
from .common import IGNORE_INDEX, normalize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
T = TypeVar("T")


class FileError(ValueError):
    """A file that cannot be used; the message is ``"<path>: <problem>"``."""

    path: str = ""
    problem: str = ""

    @classmethod
    def at(cls, path: str | os.PathLike, problem: str) -> "FileError":
        # built from the message alone, so DataLoader workers can re-raise it as a FileError
        error = cls(f"{path}: {problem}")
        error.path, error.problem = str(path), problem
        return error


def decode(path: str | os.PathLike, what: str, read: Callable[[str | os.PathLike], T]) -> T:
    """``read(path)``, with a missing or undecodable file raised as a :class:`FileError` naming it."""
    try:
        return read(path)
    except FileError:
        raise
    except FileNotFoundError:
        raise FileError.at(path, "file not found") from None
    except Exception as error:  # PIL and scipy raise OSError, SyntaxError, IndexError, zlib.error, ...
        raise FileError.at(path, f"cannot decode {what} ({type(error).__name__}: {error})") from error


def read_ids(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines of an id list file."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_split(path: Path) -> list[str]:
    """The ids of a split list; ValueError when it lists none."""
    ids = read_ids(path)
    if not ids:
        raise ValueError(f"{path} lists no ids")
    return ids


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 RGB ``[H,W,3]`` of an image file."""

    def rgb(p):
        with Image.open(p) as img:
            return np.array(img.convert("RGB"))

    return decode(path, "image", rgb)


def read_label_png(path: str | os.PathLike, colours: np.ndarray | None = None) -> np.ndarray:
    """Class ids (uint8 ``[H,W]``) of a label PNG.

    Palette ('P') and grey ('L') PNGs hold the ids (palette indices, never their colours);
    an RGB(A) PNG is mapped through ``colours`` (``[N,3]``, row ``c`` = colour of class ``c``).
    """

    def ids(p):
        with Image.open(p) as img:
            mode = img.mode
            if mode in ("P", "L"):
                return np.array(img)
            if mode in ("RGB", "RGBA") and colours is not None:
                return ids_from_colours(np.array(img.convert("RGB")), colours, p)
        raise FileError.at(p, f"label PNG must be palette ('P') or grey ('L') mode holding class ids, got mode "
                              f"{mode!r}" + ("" if colours is not None else " (colour masks need labelmap.txt)"))

    return decode(path, "label PNG", ids)


def ids_from_colours(rgb: np.ndarray, colours: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """uint8 ``[H,W]`` id ``c`` where ``rgb == colours[c]``; a colour not in ``colours`` is a FileError."""
    codes, table = _rgb_code(rgb), _rgb_code(colours)
    order = np.argsort(table)
    pos = np.searchsorted(table[order], codes).clip(max=len(table) - 1)
    known = table[order][pos] == codes
    if not known.all():
        unknown = [tuple(int(v) for v in c) for c in np.unique(rgb[~known], axis=0)[:5]]
        raise FileError.at(path, f"colours {unknown} are not in the class list's colours")
    return order[pos].astype(np.uint8)


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def check_label(mask: np.ndarray, num_classes: int, path: str | os.PathLike,
                size: tuple[int, int] | None = None) -> None:
    """FileError unless ``mask`` is ``size`` (H, W) and holds only ids ``0..num_classes-1`` or 255."""
    if size is not None and mask.shape != tuple(size):
        raise FileError.at(path, f"label size {mask.shape} != image size {tuple(size)}")
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = [int(v) for v in np.unique(mask[bad])[:5]]
        raise FileError.at(path, f"label values {values} are not class ids 0..{num_classes - 1} "
                                 f"or {IGNORE_INDEX} (ignore)")


# -- the shared item pipeline ---------------------------------------------------------------


class SegmentationFiles(Dataset):
    """Items from parallel ``images`` / ``labels`` file lists (set by subclasses); see module doc."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        class_names: Sequence[str],
        background: int | None,
        crop_size: int | None = None,
        augment: bool = False,
        scale_range: tuple[float, float] | None = None,
        seed: int | None = None,
        resize: int | None = None,
    ) -> None:
        if resize is not None and int(resize) < 8:
            raise ValueError(f"resize must be an int >= 8 (the longer side in pixels) or None, got {resize}")
        if crop_size is not None and int(crop_size) < 1:
            raise ValueError(f"crop_size must be a positive int or None, got {crop_size}")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self.root = Path(root)
        self.split = split
        self.class_names = tuple(class_names)
        self.background = background
        self.crop_size = None if crop_size is None else int(crop_size)
        self.augment = bool(augment)
        self.scale_range = scale_range
        self.seed = seed
        self.resize = None if resize is None else int(resize)
        self.epoch = 0
        self.ids: list[str] = []
        self.images: list[Path] = []
        self.labels: list[Path] = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def read_label(self, path: Path) -> np.ndarray:
        """Class ids ``[H,W]`` of one label file (a FileError names a bad one)."""
        return read_label_png(path)

    def without(self, indices: Iterable[int]) -> "SegmentationFiles":
        """A copy without the items at ``indices`` (e.g. those with bad files)."""
        drop = set(indices)
        return self._keeping([i for i in range(len(self)) if i not in drop])

    def subset(self, count: int, seed: int = 0) -> "SegmentationFiles":
        """A copy with ``count`` items drawn at random (seeded by ``seed``), in the split's order."""
        if not 1 <= count <= len(self):
            raise ValueError(f"the {self.split} split of {self.root} has {len(self)} images: cannot take {count}")
        chosen = np.random.default_rng(seed).choice(len(self), size=count, replace=False)
        return self._keeping(sorted(int(i) for i in chosen))

    def _keeping(self, keep: list[int]) -> "SegmentationFiles":
        clone = copy.copy(self)
        clone.ids = [self.ids[i] for i in keep]
        clone.images = [self.images[i] for i in keep]
        clone.labels = [self.labels[i] for i in keep]
        return clone

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw when ``seed`` is set (one per epoch)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(uint8 RGB [H,W,3], ids [H,W])`` of item ``index``, no transforms."""
        rgb = read_image(self.images[index])
        mask = self.read_label(self.labels[index])
        check_label(mask, self.num_classes, self.labels[index], size=rgb.shape[:2])
        return rgb, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, ids = self.load(index)
        image = normalize(torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0))
        mask = torch.from_numpy(ids.astype(np.int64))
        if self.resize is not None:
            image, mask = resize_longer_side(image, mask, self.resize)
        if not self.augment and self.crop_size is None:
            return image.contiguous(), mask
        rng = self._rng(index)
        if self.augment and self.scale_range is not None:
            image, mask = _rescale(image, mask, rng.uniform(*self.scale_range))
        if self.crop_size is not None:
            image, mask = pad_crop(image, mask, self.crop_size, rng if self.augment else None)
        if self.augment and rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])


def require(where: str, layout: str, *paths: Path) -> None:
    """FileNotFoundError: ``where`` (e.g. "VOC root 'DIR'") misses ``paths`` (first 5 named); then the ``layout``."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{where} is missing: {shown}\n{layout}")


def resize_longer_side(image: torch.Tensor, mask: torch.Tensor, side: int):
    """Image (bilinear, antialiased) and mask (nearest neighbour) scaled so that the longer side is ``side``."""
    h, w = mask.shape
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image, mask


def _rescale(image: torch.Tensor, mask: torch.Tensor, scale: float):
    h, w = mask.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


def pad_crop(image: torch.Tensor, mask: torch.Tensor, size: int, rng: np.random.Generator | None = None):
    """Pad bottom/right (image 0, mask 255) to >= ``size``, then crop ``size x size``.

    Random offsets from ``rng``, or a centre crop when ``rng`` is None.
    """
    h, w = mask.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
    h, w = mask.shape
    if rng is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]


# -- the generic folder dataset ------------------------------------------------------------


class SegmentationFolder(SegmentationFiles):
    """A VOC-layout dataset with its own class list (see module doc).

    ``classes``: the class-list file (default: ``labelmap.txt``, else ``class_names.txt``);
    ``background``: see :func:`resolve_background`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: str | os.PathLike | None = None,
        background: str | int | None = "auto",
        crop_size: int | None = None,
        augment: bool = False,
        scale_range: tuple[float, float] | None = None,
        seed: int | None = None,
        resize: int | None = None,
    ) -> None:
        names, self.colours = read_class_list(find_class_list(root, classes))
        super().__init__(root, split, names, resolve_background(names, background),
                         crop_size, augment, scale_range, seed, resize)
        self.ids, self.images, self.labels = self._index()

    def read_label(self, path: Path) -> np.ndarray:
        return read_label_png(path, self.colours)

    def _index(self) -> tuple[list[str], list[Path], list[Path]]:
        jpeg, seg = self.root / "JPEGImages", self.root / "SegmentationClass"
        sets = self.root / "ImageSets" / "Segmentation"
        require(f"dataset root {str(self.root)!r}", FOLDER_LAYOUT, jpeg, seg, sets)
        listing = sets / f"{self.split}.txt"
        if not listing.is_file():
            found = sorted(p.stem for p in sets.glob("*.txt"))
            raise FileNotFoundError(f"no split {self.split!r}: {listing} is missing "
                                    f"(splits found: {', '.join(found) or 'none'})")
        ids = read_split(listing)
        return ids, [find_image(jpeg, i) for i in ids], [seg / f"{i}.png" for i in ids]


def find_image(folder: Path, stem: str) -> Path:
    """``folder/<stem><ext>`` with the first IMAGE_EXTENSIONS that exists, else the .jpg path (reported missing)."""
    for ext in IMAGE_EXTENSIONS:
        path = folder / f"{stem}{ext}"
        if path.is_file():
            return path
    return folder / f"{stem}.jpg"
