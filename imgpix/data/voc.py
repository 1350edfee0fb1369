"""PASCAL VOC 2012 segmentation (+ the SBD augmented set) from a local folder.

Nothing is ever downloaded. Expected layout under ``root``::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      (palette 'P' PNGs)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    SBD/img/<id>.jpg                                   (split='trainaug' only;
    SBD/cls/<id>.mat                                    torchvision's SBDataset
    SBD/{train,val}.txt                                 layout)

Splits:

* ``"train"`` / ``"val"`` (/ ``"trainval"``): the VOC 2012 id lists
  (1,464 / 1,449 / 2,913 images on the full data).
* ``"trainaug"``: (SBD train ∪ SBD val ∪ VOC train) minus VOC val -- the usual
  augmented training set; on the full data this gives **10,582** training ids,
  evaluated on the 1,449 VOC val ids. Ids from VOC train use VOC's own
  (finer, 255-bordered) PNG label; the others use SBD's ``cls/<id>.mat``
  (``GTcls`` -> ``Segmentation``, read as torchvision does). Images come from
  ``JPEGImages`` for VOC train ids and when present there, else from ``SBD/img``.

:func:`default_train_split` picks ``"trainaug"`` when ``root/SBD`` exists, else ``"train"``.

Labels: PNGs are read as palette indices (mode 'P', or 'L'), i.e. the pixel
values are the class ids 0..20 with 255 = ignore -- never converted to RGB.
Other modes, and any unreadable file, raise a ``FileError`` (``ValueError``) naming the file.
Classes: ``VOC_CLASSES`` (21); ``background`` (class 0 with the default ``"auto"``) as
for :func:`imgpix.data.classes.resolve_background`. Crops and augmentation: see
:mod:`imgpix.data.folder`. The constructor checks the folders and id lists only; the
listed files are checked by :func:`imgpix.data.check.check_dataset` (or when read).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .classes import resolve_background
from .common import VOC_CLASSES
from .folder import (
    FileError,
    SegmentationFiles,
    decode,
    read_ids,
    read_label_png,
    read_split,
    require,
)

SPLITS = ("train", "val", "trainval", "trainaug")
LAYOUT = (
    "expected layout under root:\n"
    "  VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
    "  VOCdevkit/VOC2012/SegmentationClass/<id>.png\n"
    "  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt\n"
    "  SBD/img/<id>.jpg, SBD/cls/<id>.mat, SBD/train.txt, SBD/val.txt  (split='trainaug' only)"
)


def has_sbd(root: str | os.PathLike) -> bool:
    """Whether ``root/SBD`` exists (then training defaults to ``trainaug``)."""
    return (Path(root) / "SBD").is_dir()


def default_train_split(root: str | os.PathLike) -> str:
    """``"trainaug"`` when ``root/SBD`` exists, else VOC 2012 ``"train"``."""
    return "trainaug" if has_sbd(root) else "train"


def read_label_mat(path: str | os.PathLike) -> np.ndarray:
    """Class-id array of an SBD ``cls/<id>.mat`` file (``GTcls`` -> ``Segmentation``)."""

    def segmentation(p):
        from scipy.io import loadmat

        mat = loadmat(p)
        try:
            return np.asarray(mat["GTcls"][0]["Segmentation"][0])
        except (KeyError, IndexError, ValueError) as err:
            raise FileError.at(p, "not an SBD class file (no GTcls.Segmentation)") from err

    return decode(path, "SBD .mat", segmentation)


class VOCSegmentation(SegmentationFiles):
    """PASCAL VOC 2012 / SBD ``trainaug`` segmentation (see module doc)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        crop_size: int | None = None,
        augment: bool = False,
        scale_range: tuple[float, float] | None = None,
        seed: int | None = None,
        background: str | int | None = "auto",
        resize: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown VOC split {split!r}; valid splits: {', '.join(SPLITS)}")
        super().__init__(root, split, VOC_CLASSES, resolve_background(VOC_CLASSES, background),
                         crop_size, augment, scale_range, seed, resize)
        self.ids, self.images, self.labels = self._index()

    def read_label(self, path: Path) -> np.ndarray:
        return read_label_mat(path) if path.suffix == ".mat" else read_label_png(path)

    def _index(self) -> tuple[list[str], list[Path], list[Path]]:
        voc = self.root / "VOCdevkit" / "VOC2012"
        jpeg, seg, sets = voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation"
        where = f"VOC root {str(self.root)!r}"
        if self.split != "trainaug":
            require(where, LAYOUT, jpeg, seg, sets / f"{self.split}.txt")
            ids = read_split(sets / f"{self.split}.txt")
            return ids, [jpeg / f"{i}.jpg" for i in ids], [seg / f"{i}.png" for i in ids]
        sbd = self.root / "SBD"
        require(where, LAYOUT, jpeg, seg, sets / "train.txt", sets / "val.txt", sbd / "img", sbd / "cls",
                sbd / "train.txt", sbd / "val.txt")
        voc_train = set(read_ids(sets / "train.txt"))
        voc_val = set(read_ids(sets / "val.txt"))
        sbd_ids = set(read_ids(sbd / "train.txt")) | set(read_ids(sbd / "val.txt"))
        ids = sorted((sbd_ids | voc_train) - voc_val)
        images, labels = [], []
        for i in ids:
            voc_img = jpeg / f"{i}.jpg"
            images.append(voc_img if i in voc_train or voc_img.exists() else sbd / "img" / f"{i}.jpg")
            labels.append(seg / f"{i}.png" if i in voc_train else sbd / "cls" / f"{i}.mat")
        return ids, images, labels
