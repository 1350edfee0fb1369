"""Build a dataset by name; its classes and its default training split without reading any image."""

from __future__ import annotations

import os
from typing import NamedTuple

from .classes import find_class_list, read_class_list, resolve_background
from .common import VOC_CLASSES
from .folder import SegmentationFolder
from .synthetic import SyntheticScenes, class_names
from .voc import VOCSegmentation
from .voc import default_train_split as voc_train_split

DATASETS = ("synthetic", "voc", "folder")


class DatasetInfo(NamedTuple):
    """What a model needs to know of a dataset: N, the class names, the class fusion always keeps."""

    num_classes: int
    class_names: tuple[str, ...]
    background: int | None


def _key(name: str) -> str:
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _root(key: str, root) -> str | os.PathLike:
    if root is None:
        held = "VOCdevkit/ and SBD/" if key == "voc" else "JPEGImages/, SegmentationClass/, ImageSets/"
        raise ValueError(f"dataset {key!r} needs root= (the folder holding {held})")
    return root


def build_dataset(name: str, split: str, root=None, **kwargs):
    """Dataset ``name`` in ``DATASETS`` for ``split``; extra kwargs go to its constructor."""
    key = _key(name)
    if key == "synthetic":
        return SyntheticScenes(split=split, **kwargs)
    if key == "voc":
        return VOCSegmentation(_root(key, root), split=split, **kwargs)
    return SegmentationFolder(_root(key, root), split=split, **kwargs)


def dataset_info(name: str, root=None, **kwargs) -> DatasetInfo:
    """Classes of ``build_dataset(name, split, root, **kwargs)`` for any split, reading no image.

    Only the kwargs that set the classes matter: ``classes`` and ``background`` (folder, VOC),
    the scene knobs (synthetic, whose background is class 0).
    """
    key = _key(name)
    if key == "synthetic":
        scenes = SyntheticScenes("train", **{**kwargs, "num_images": 0})
        return DatasetInfo(scenes.num_classes, tuple(class_names(scenes.num_classes, scenes.family_size)), 0)
    background = kwargs.get("background", "auto")
    if key == "voc":
        return DatasetInfo(len(VOC_CLASSES), VOC_CLASSES, resolve_background(VOC_CLASSES, background))
    names, _ = read_class_list(find_class_list(_root(key, root), kwargs.get("classes")))
    return DatasetInfo(len(names), names, resolve_background(names, background))


def default_train_split(name: str, root=None) -> str:
    """The training split: for VOC ``"trainaug"`` when ``root/SBD`` exists, else ``"train"``."""
    key = _key(name)
    return voc_train_split(_root(key, root)) if key == "voc" else "train"
