"""Datasets with a common item protocol.

Every dataset maps ``dataset[i] -> (image, mask)``:

* ``image``: float32 tensor ``[3, H, W]``, RGB in [0, 1] normalised with the
  ImageNet ``MEAN`` / ``STD`` (``denormalize`` undoes it);
* ``mask``: int64 tensor ``[H, W]`` with class ids ``0..NUM_CLASSES-1``
  (0 = background) and ``IGNORE_INDEX = 255`` for "don't care" pixels.

``build_dataset(name, split, root=None, **kwargs)`` builds one by name:
``"synthetic"`` (:class:`SyntheticScenes`, ``root`` unused) or ``"voc"``
(:class:`VOCSegmentation`, ``root`` required).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..labels import IGNORE_INDEX

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 21
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

from .synthetic import SyntheticScenes, class_families  # noqa: E402
from .voc import VOCSegmentation  # noqa: E402

DATASETS = ("synthetic", "voc")


def normalize(image: Tensor) -> Tensor:
    """RGB in [0, 1], ``[3,H,W]`` or ``[B,3,H,W]`` -> ImageNet-normalised (new tensor)."""
    mean, std = _stats(image)
    return (image - mean) / std


def denormalize(image: Tensor) -> Tensor:
    """Inverse of the ImageNet normalisation: ``[3,H,W]`` or ``[B,3,H,W]`` -> RGB in ~[0, 1]."""
    mean, std = _stats(image)
    return image * std + mean


def _stats(image: Tensor) -> tuple[Tensor, Tensor]:
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image must have shape [3,H,W] or [B,3,H,W], got {tuple(image.shape)}")
    dtype = image.dtype if image.is_floating_point() else torch.float32
    mean = torch.tensor(MEAN, dtype=dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=dtype, device=image.device).view(3, 1, 1)
    return mean, std


def build_dataset(name: str, split: str, root=None, **kwargs):
    """Dataset ``name`` in ``DATASETS`` for ``split``; extra kwargs go to its constructor."""
    key = str(name).lower()
    if key == "synthetic":
        return SyntheticScenes(split=split, **kwargs)
    if key == "voc":
        if root is None:
            raise ValueError("build_dataset('voc', ...) needs root= (the folder holding VOCdevkit/ and SBD/)")
        return VOCSegmentation(root, split=split, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "MEAN",
    "NUM_CLASSES",
    "STD",
    "SyntheticScenes",
    "VOCSegmentation",
    "VOC_CLASSES",
    "build_dataset",
    "class_families",
    "denormalize",
    "normalize",
]
