"""SyntheticScenes: a procedurally generated stand-in for PASCAL VOC.

Design goal: *pixel appearance alone can be made ambiguous between classes,
while image-level presence resolves the ambiguity*, so that fusing a
segmentation net's per-pixel probabilities P with image-level labels L
(``P * L``, renormalised) helps by a controlled amount -- the effect the
IJCAI-18 paper studies.

Layout (``num_classes = 21``: background 0 + K = 20 object classes):

* **Own appearance.** Object class ``c`` (``k = c - 1``) has its own local
  appearance: hue ``k / K``, stripes at angle ``pi k / K + pi (k mod 4) / 4``
  with period ``4 + 1.5 (floor(k / 4) mod 3)`` px (at ``size=64``, scaled with
  ``size``). Classes with adjacent hues differ in stripe angle, so all K
  appearances are distinct.
* **Families** (``family_size``, default 4). Object classes form families of
  ``family_size`` consecutive ids (``class_families``). A family shares the
  appearance of its first member; ``ambiguity`` in [0, 1] mixes each member's
  own appearance back in, parameter by parameter:
  ``p_c = p_first + (1 - ambiguity) (p_own(c) - p_first)``.
  ``ambiguity=1`` (default): the members of a family are locally identical;
  ``ambiguity=0`` or ``family_size=1``: every class looks like itself.
  Per-image jitter (hue, saturation, brightness, stripe phase, contrast,
  noise) follows the same law for every class.
* **Members differ by a global cue: shape.** Class ``c`` is drawn as a disc,
  a (rotated) square, a (rotated) triangle or a ring (``(c - 1) % 4``), so a
  whole-image classifier can tell members apart from their outline.
* **Scenes** (``preset``). The number of object classes in an image follows
  the preset's law ``counts`` (P(1), P(2), ...), one instance each, with
  radii drawn uniformly in the preset's ``radius`` range (fractions of the
  side). ``legacy`` (default): 1-3 classes, large objects. ``voc``: the
  objects-per-image law of PASCAL VOC 2012 val and radii chosen so that
  object pixels take VOC's share of labelled pixels at ``size=64`` with
  ``ignore_border=1`` (``validation/scene_stats.py`` compares the generated
  statistics with VOC's).
  Without ``co_occurrence`` (default) the classes of an image come from
  *distinct* families (at most one member per family; the count is capped at
  the number of families), so knowing the present classes (L) tells for every
  family which member it is. With ``co_occurrence`` they are drawn uniformly
  from all object classes, so two members of a family can share an image and
  exact labels leave their pixels ambiguous.
  Background (class 0: tinted grey with low-frequency blotches) fills the
  rest; Gaussian pixel noise on top. Objects may overlap, but each keeps
  >= 40 % of its area visible and off the ignore border (layouts are re-drawn
  otherwise; after 30 failed draws the most visible layout is kept).
* **Ignore border.** Like VOC, object pixels within ``ignore_border`` px of a
  different label are set to 255 (``ignore_border=0`` disables it).

Determinism and fresh samples: with ``epoch=None`` (a fixed set) item ``i``
is generated from ``numpy.random.default_rng`` seeded with
``(seed, crc32(split), i)``; with ``epoch=e`` (train split only) from
``(seed, crc32(split), 1, e, i)``, so every epoch draws new images while any
item stays reproducible across instances, processes and DataLoader workers.
No disk access, a few ms per 64x64 image; ``mask(i)`` computes only the label
map. Images are float32 ``[3, H, W]`` normalised with ImageNet
``MEAN``/``STD``, masks int64 ``[H, W]`` with ids ``0..num_classes-1`` and
255 = ignore.
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import IGNORE_INDEX, normalize

FAMILY_SIZE = 4
SHAPES = ("disc", "square", "triangle", "ring")
DEFAULT_NUM_IMAGES = {"train": 512, "val": 128, "test": 128}
_MIN_VISIBLE = 0.4
_LAYOUT_TRIES = 30
_FRESH = 1  # rng key tag of epoch-dependent items (keeps their keys apart from fixed ones)


@dataclass(frozen=True)
class Preset:
    """Per-image label statistics: ``counts[j]`` = P(j + 1 object classes); radii as fractions of the side."""

    counts: tuple[float, ...]
    radius: tuple[float, float]


PRESETS = {
    "legacy": Preset(counts=(8 / 20, 7 / 20, 5 / 20), radius=(0.155, 0.31)),
    # counts: objects per image in the PASCAL VOC 2012 val label maps (1,449 images)
    "voc": Preset(counts=tuple(p / 100 for p in (64.0, 25.8, 8.4, 1.6, 0.2)), radius=(0.195, 0.39)),
}


def class_families(num_classes: int = 21, family_size: int = FAMILY_SIZE) -> list[list[int]]:
    """Object classes grouped into families of ``family_size`` consecutive ids (the last may be smaller)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + objects), got {num_classes}")
    if family_size < 1:
        raise ValueError(f"family_size must be >= 1, got {family_size}")
    ids = list(range(1, num_classes))
    return [ids[i : i + family_size] for i in range(0, len(ids), family_size)]


def family_of(class_id: int, family_size: int = FAMILY_SIZE) -> int:
    """Family index of an object class id (>= 1)."""
    return (class_id - 1) // family_size


def shape_of(class_id: int) -> str:
    """Shape drawn for an object class id (>= 1)."""
    return SHAPES[(class_id - 1) % len(SHAPES)]


def class_names(num_classes: int = 21, family_size: int = FAMILY_SIZE) -> list[str]:
    """Readable names, e.g. ``'f0-disc'`` (family and shape); ``'background'`` first."""
    return ["background"] + [f"f{family_of(c, family_size)}-{shape_of(c)}" for c in range(1, num_classes)]


def own_appearance(class_id: int, num_classes: int = 21) -> np.ndarray:
    """``[hue, stripe angle, stripe period at size 64]`` of an object class before any sharing."""
    k, n_obj = class_id - 1, num_classes - 1
    return np.array([k / n_obj, math.pi * k / n_obj + math.pi * (k % 4) / 4, 4.0 + 1.5 * ((k // 4) % 3)])


def appearance_table(num_classes: int = 21, family_size: int = FAMILY_SIZE,
                     ambiguity: float = 1.0) -> np.ndarray:
    """Rows ``p_c = p_first + (1 - ambiguity) (p_own(c) - p_first)`` for c = 0..N-1 (row 0 unused)."""
    table = np.zeros((num_classes, 3))
    for family in class_families(num_classes, family_size):
        first = own_appearance(family[0], num_classes)
        for c in family:
            table[c] = first + (1.0 - ambiguity) * (own_appearance(c, num_classes) - first)
    return table


class SyntheticScenes(Dataset):
    """Procedural scenes where image-level labels disambiguate pixels (see module doc).

    ``dataset[i] -> (image float32 [3,size,size] normalised, mask int64 [size,size])``.
    ``epoch=None`` gives a fixed set; ``epoch=e`` the train split's images of epoch ``e`` (the
    ``epoch`` attribute may be reassigned between epochs; items are drawn from it when read).
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        size: int = 64,
        seed: int = 0,
        num_classes: int = 21,
        ignore_border: int = 1,
        noise_std: float = 0.04,
        preset: str = "legacy",
        ambiguity: float = 1.0,
        family_size: int = FAMILY_SIZE,
        co_occurrence: bool = False,
        epoch: int | None = None,
    ) -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if num_images is None:
            num_images = DEFAULT_NUM_IMAGES.get(split, 128)
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        if ignore_border < 0:
            raise ValueError(f"ignore_border must be >= 0, got {ignore_border}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid names: {', '.join(PRESETS)}")
        if not 0.0 <= ambiguity <= 1.0:  # also rejects NaN
            raise ValueError(f"ambiguity must lie in [0, 1], got {ambiguity}")
        if epoch is not None and (split != "train" or epoch < 0):
            raise ValueError(f"epoch must be None or >= 0, and only the train split has epochs "
                             f"(got epoch={epoch!r}, split={split!r})")
        self.families = class_families(num_classes, family_size)
        self.split = split
        self.num_images = int(num_images)
        self.size = int(size)
        self.seed = int(seed)
        self.num_classes = int(num_classes)
        self.ignore_border = int(ignore_border)
        self.noise_std = float(noise_std)
        self.preset = PRESETS[preset]
        self.ambiguity = float(ambiguity)
        self.family_size = int(family_size)
        self.co_occurrence = bool(co_occurrence)
        self.epoch = None if epoch is None else int(epoch)
        self.appearance = appearance_table(num_classes, family_size, ambiguity)
        self._split_code = zlib.crc32(split.encode("utf-8"))

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.render(self._check_index(index))
        return normalize(torch.from_numpy(rgb)), torch.from_numpy(mask)

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return int(index)

    def rng(self, index: int) -> np.random.Generator:
        if self.epoch is None:
            return np.random.default_rng([self.seed, self._split_code, int(index)])
        return np.random.default_rng([self.seed, self._split_code, _FRESH, self.epoch, int(index)])

    def mask(self, index: int) -> np.ndarray:
        """The mask of item ``index`` (int64 [H,W]) without rendering its image."""
        classes, shapes = self._scene(self.rng(self._check_index(index)))
        return self._label(classes, shapes)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Un-normalised RGB in [0,1] (float32 [3,H,W]) and mask (int64 [H,W]) of item ``index``."""
        rng = self.rng(index)
        classes, shapes = self._scene(rng)
        yy, xx = _grid(self.size)
        rgb = self._background(rng, xx, yy)
        for c, m in zip(classes, shapes):
            if m is not None:
                rgb[:, m] = self._texture(rng, c, xx, yy)[:, m]
        rgb += rng.normal(0.0, self.noise_std, size=rgb.shape).astype(np.float32)
        np.clip(rgb, 0.0, 1.0, out=rgb)
        return rgb, self._label(classes, shapes)

    # -- scene sampling ---------------------------------------------------

    def _scene(self, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray | None]]:
        classes = self._sample_classes(rng)
        return classes, self._layout(rng, classes)

    def _label(self, classes: list[int], shapes: list[np.ndarray | None]) -> np.ndarray:
        mask = np.zeros((self.size, self.size), dtype=np.int64)
        for c, m in zip(classes, shapes):
            if m is not None:
                mask[m] = c
        if self.ignore_border:
            mask[_border(mask, self.ignore_border)] = IGNORE_INDEX
        return mask

    def _sample_classes(self, rng: np.random.Generator) -> list[int]:
        counts = self.preset.counts
        k = int(rng.choice(len(counts), p=counts)) + 1
        if self.co_occurrence:
            objects = np.arange(1, self.num_classes)
            return [int(c) for c in rng.choice(objects, size=min(k, len(objects)), replace=False)]
        n_fam = len(self.families)
        fams = rng.choice(n_fam, size=min(k, n_fam), replace=False)
        return [int(self.families[f][rng.integers(len(self.families[f]))]) for f in fams]

    def _layout(self, rng, classes) -> list[np.ndarray | None]:
        """Visible shape masks in drawing order; each keeps >= 40 % of its pixels labelled."""
        s = self.size
        yy, xx = _grid(s)
        lo, hi = self.preset.radius
        best, best_score = None, -1.0
        for _ in range(_LAYOUT_TRIES):
            shapes = []
            for c in classes:
                r = rng.uniform(lo, hi) * s
                cx, cy = rng.uniform(r * 0.8, s - r * 0.8, size=2)
                shapes.append(_shape_mask(shape_of(c), cx, cy, r, rng.uniform(0, 2 * np.pi), xx, yy))
            visible = _visible(shapes)
            score = min(self._kept(visible, shapes))
            if score >= _MIN_VISIBLE:
                return visible
            if score > best_score:
                best, best_score = visible, score
        # Give up on full visibility: drop hidden objects (never the last-drawn, fully visible one).
        return [v if v.sum() > 0 else None for v in best]

    def _kept(self, visible, shapes) -> list[float]:
        """Fraction of each shape's pixels that stay labelled (visible and off the ignore border)."""
        label = np.zeros(visible[0].shape, dtype=np.int64)
        for k, v in enumerate(visible, start=1):
            label[v] = k
        if self.ignore_border:
            label[_border(label, self.ignore_border)] = 0
        return [(label == k).sum() / max(m.sum(), 1) for k, m in enumerate(shapes, start=1)]

    # -- appearance ---------------------------------------------------------

    def _background(self, rng, xx, yy) -> np.ndarray:
        s = self.size
        grey = rng.uniform(0.3, 0.7)
        tint = rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
        field = np.zeros((s, s), dtype=np.float32)
        for _ in range(3):
            theta = rng.uniform(0, np.pi)
            period = rng.uniform(0.4, 1.2) * s
            phase = rng.uniform(0, 2 * np.pi)
            field += np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        field *= rng.uniform(0.03, 0.07)
        return (grey + tint[:, None, None] + field[None]).astype(np.float32)

    def _texture(self, rng, class_id: int, xx, yy) -> np.ndarray:
        """Full-frame texture of a class: its (shared) hue and oriented stripes, with per-image jitter."""
        hue0, theta0, period0 = self.appearance[class_id]
        hue = (hue0 + rng.uniform(-0.03, 0.03)) % 1.0
        sat = rng.uniform(0.55, 0.9)
        val = rng.uniform(0.55, 0.85)
        base = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)
        theta = theta0 + rng.uniform(-0.15, 0.15)
        period = self.size / 64 * period0 * rng.uniform(0.9, 1.1)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        shade = 1.0 + rng.uniform(0.15, 0.3) * stripes
        return base[:, None, None] * shade[None].astype(np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, float32 [size, size] (read-only: shared between calls)."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    grid.flags.writeable = False
    return grid[0], grid[1]


def _shape_mask(shape: str, cx, cy, r, phi, xx, yy) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    if shape == "square":
        half = 0.85 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":
        inner = 0.72 * r  # inradius; area 2.7 r^2, close to the disc's 3.1 r^2
        inside = np.ones_like(u, dtype=bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(a) + v * np.sin(a) <= inner
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def _visible(shapes: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each shape when painted in order (later ones on top)."""
    covered = np.zeros_like(shapes[0])
    out = [None] * len(shapes)
    for i in range(len(shapes) - 1, -1, -1):
        out[i] = shapes[i] & ~covered
        covered |= shapes[i]
    return out


def _border(mask: np.ndarray, width: int) -> np.ndarray:
    """Object pixels (id != 0) within ``width`` px (Chebyshev) of a different label inside the frame."""
    h, w = mask.shape
    differs = np.zeros((h, w), dtype=bool)
    for dy in range(width + 1):  # each pair of pixels (y, x), (y + dy, x + dx) once
        for dx in range(-width, width + 1):
            if (dy == 0 and dx <= 0) or dy >= h or abs(dx) >= w:
                continue
            here = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
            there = slice(dy, h), slice(max(0, dx), w - max(0, -dx))
            unequal = mask[here] != mask[there]
            differs[here] |= unequal
            differs[there] |= unequal
    return differs & (mask != 0)
