"""A training configuration's datasets and loaders: which split, built how, checked, batched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.data import DataLoader

from .. import distributed as dist
from ..config import class_kwargs
from .build import build_dataset, default_train_split
from .check import check_dataset

if TYPE_CHECKING:
    from ..config import TrainConfig


def dataset_kwargs(cfg: TrainConfig, split: str) -> dict:
    """Constructor arguments of ``cfg``'s dataset for ``split`` ("train": the training split; any other name
    is evaluated). Synthetic training images are drawn afresh each epoch from ``(seed, epoch, index)`` unless
    ``cfg.fixed_train``; an evaluated split is one fixed set. Real images are scaled to ``cfg.resize``."""
    if cfg.data == "synthetic":
        count = cfg.num_train if split == "train" else cfg.num_val
        scenes = {"size": cfg.image_size, "preset": cfg.scene_preset, "ambiguity": cfg.ambiguity,
                  "family_size": cfg.family_size, "co_occurrence": cfg.co_occurrence}
        if split == "train":
            scenes.update(seed=cfg.seed, epoch=None if cfg.fixed_train else 0)
        return {**scenes, **({"num_images": count} if count else {})}
    train = split == "train"
    crop = min(cfg.crop_size, cfg.resize) if cfg.resize else cfg.crop_size  # no crop beyond the resized image
    return {"root": cfg.root, "crop_size": crop if train else None, "augment": train,
            "resize": cfg.resize, **({"seed": cfg.seed} if train else {}), **class_kwargs(cfg)}


def build_split(cfg: TrainConfig, split: str):
    """The dataset of ``split`` ("train" means ``cfg.train_split``). On real data ``num_train`` /
    ``num_val`` take that many images of the split, the same random draw (seed 0) for every run."""
    name = (cfg.train_split or default_train_split(cfg.data, cfg.root)) if split == "train" else split
    dataset = build_dataset(cfg.data, name, **dataset_kwargs(cfg, split))
    count = cfg.num_train if split == "train" else cfg.num_val
    return dataset.subset(count) if count and cfg.data != "synthetic" else dataset


def checked_split(cfg: TrainConfig, split: str, log: Callable[[str], None] = print):
    """:func:`build_split`, its files checked first (BadFilesError names them; ``skip_bad_files`` drops them)."""
    dataset, warning = check_dataset(build_split(cfg, split), skip_bad_files=cfg.skip_bad_files,
                                     progress=cfg.progress and dist.is_main())
    if warning:
        log(warning)
    return dataset


def set_epoch(dataset, epoch: int) -> None:
    """Tell a dataset that draws per epoch (fresh synthetic scenes, real-image augmentation) which epoch it serves."""
    if getattr(dataset, "epoch", None) is not None:
        dataset.epoch = epoch


def make_loader(cfg: TrainConfig, dataset, shuffle: bool, epoch: int = 0) -> DataLoader:
    """A DataLoader over ``dataset``; ``epoch`` seeds the shuffle. A training loader (``shuffle``) whose
    batch is larger than its images (per process) is refused: it would train on nothing."""
    if shuffle and len(dataset) < cfg.batch_size * dist.world_size():
        per = f" per process ({dist.world_size()} processes)" if dist.world_size() > 1 else ""
        raise ValueError(f"--batch-size {cfg.batch_size}{per} is larger than the {len(dataset)} training images: "
                         "no full batch, nothing would be trained; lower --batch-size or raise --num-train")
    batch = cfg.batch_size if cfg.data == "synthetic" or shuffle else 1  # real val images differ in size
    sampler = dist.sampler(dataset, shuffle=shuffle, seed=cfg.seed + epoch)
    generator = torch.Generator().manual_seed(cfg.seed + epoch)
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=generator, num_workers=cfg.workers, drop_last=shuffle)


def build_loader(cfg: TrainConfig, split: str, shuffle: bool = False, epoch: int = 0) -> DataLoader:
    """``make_loader`` over ``build_split(cfg, split)``, set to ``epoch``."""
    dataset = build_split(cfg, split)
    if shuffle:
        set_epoch(dataset, epoch)
    return make_loader(cfg, dataset, shuffle, epoch)
