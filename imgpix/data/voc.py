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
  ``JPEGImages`` when present there, else from ``SBD/img``.

Labels: PNGs are read as palette indices (mode 'P', or 'L'), i.e. the pixel
values are the class ids 0..20 with 255 = ignore -- never converted to RGB.
Other modes raise ``ValueError``.

Items follow the package protocol: ``(image float32 [3,H,W] ImageNet-normalised,
mask int64 [H,W])``. With ``crop_size=S`` every item is ``S x S``: the image is
padded bottom/right with 0 (the mean colour, after normalisation) and the mask
with 255, then cropped -- a random crop plus a random horizontal flip (and an
optional random rescale ``scale_range``) when ``augment=True``, a centre crop
otherwise. Randomness comes from ``seed`` (deterministic per ``(seed, epoch,
index)``; call ``set_epoch``) or, with ``seed=None``, from torch's global RNG
(which DataLoader seeds per worker).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from . import IGNORE_INDEX, MEAN, NUM_CLASSES, STD

SPLITS = ("train", "val", "trainval", "trainaug")
LAYOUT = (
    "expected layout under root:\n"
    "  VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
    "  VOCdevkit/VOC2012/SegmentationClass/<id>.png\n"
    "  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt\n"
    "  SBD/img/<id>.jpg, SBD/cls/<id>.mat, SBD/train.txt, SBD/val.txt  (split='trainaug' only)"
)


def read_ids(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines of an id list file."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Class-id array (uint8 [H,W]) of a VOC label PNG; its palette indices, not colours."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: label PNG must be palette ('P') or grey ('L') mode holding class ids, "
                f"got mode {img.mode!r} (colour-rendered masks are not supported)"
            )
        return np.array(img)


def read_label_mat(path: str | os.PathLike) -> np.ndarray:
    """Class-id array of an SBD ``cls/<id>.mat`` file (``GTcls`` -> ``Segmentation``)."""
    from scipy.io import loadmat

    mat = loadmat(path)
    try:
        return np.asarray(mat["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"{path}: not an SBD class file (no GTcls.Segmentation)") from err


class VOCSegmentation(Dataset):
    """PASCAL VOC 2012 / SBD ``trainaug`` segmentation (see module doc)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        crop_size: int | None = None,
        augment: bool = False,
        scale_range: tuple[float, float] | None = None,
        seed: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown VOC split {split!r}; valid splits: {', '.join(SPLITS)}")
        if crop_size is not None and int(crop_size) < 1:
            raise ValueError(f"crop_size must be a positive int or None, got {crop_size}")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self.root = Path(root)
        self.split = split
        self.crop_size = None if crop_size is None else int(crop_size)
        self.augment = bool(augment)
        self.scale_range = scale_range
        self.seed = seed
        self.epoch = 0
        self.num_classes = NUM_CLASSES
        self.ids, self.images, self.labels = self._index()

    # -- indexing -----------------------------------------------------------

    def _require(self, *paths: Path) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise FileNotFoundError(f"VOC root {str(self.root)!r} is missing: {shown}\n{LAYOUT}")

    def _index(self) -> tuple[list[str], list[Path], list[Path]]:
        voc = self.root / "VOCdevkit" / "VOC2012"
        jpeg, seg, sets = voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation"
        if self.split != "trainaug":
            self._require(jpeg, seg, sets / f"{self.split}.txt")
            ids = read_ids(sets / f"{self.split}.txt")
            images = [jpeg / f"{i}.jpg" for i in ids]
            labels = [seg / f"{i}.png" for i in ids]
        else:
            sbd = self.root / "SBD"
            self._require(jpeg, seg, sets / "train.txt", sets / "val.txt", sbd / "img", sbd / "cls",
                          sbd / "train.txt", sbd / "val.txt")
            voc_train = set(read_ids(sets / "train.txt"))
            voc_val = set(read_ids(sets / "val.txt"))
            sbd_ids = set(read_ids(sbd / "train.txt")) | set(read_ids(sbd / "val.txt"))
            ids = sorted((sbd_ids | voc_train) - voc_val)
            images, labels = [], []
            for i in ids:
                voc_img = jpeg / f"{i}.jpg"
                images.append(voc_img if voc_img.exists() else sbd / "img" / f"{i}.jpg")
                labels.append(seg / f"{i}.png" if i in voc_train else sbd / "cls" / f"{i}.mat")
        self._require(*images, *labels)
        return ids, images, labels

    # -- items ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw when ``seed`` is set (one per epoch)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(uint8 RGB [H,W,3], uint8 ids [H,W])`` of item ``index``, no transforms."""
        with Image.open(self.images[index]) as img:
            rgb = np.array(img.convert("RGB"))
        path = self.labels[index]
        mask = read_label_mat(path) if path.suffix == ".mat" else read_label_png(path)
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"{path}: label size {mask.shape} != image size {rgb.shape[:2]}")
        bad = (mask >= NUM_CLASSES) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ValueError(f"{path}: label values {sorted(np.unique(mask[bad]))[:5]} are not "
                             f"class ids 0..{NUM_CLASSES - 1} or {IGNORE_INDEX}")
        return rgb, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, ids = self.load(index)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
        image = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        mask = torch.from_numpy(ids.astype(np.int64))
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
