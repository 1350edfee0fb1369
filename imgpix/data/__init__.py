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

from .common import IGNORE_INDEX, MEAN, NUM_CLASSES, STD, VOC_CLASSES, denormalize, normalize
from .synthetic import SyntheticScenes, class_families
from .voc import VOCSegmentation
from .build import DATASETS, build_dataset

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
