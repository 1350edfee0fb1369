"""TrainConfig: every setting of a training run, its checks, and the names it accepts (from their owners)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

from .data.build import DatasetInfo, dataset_info, default_train_split
from .data.synthetic import PRESETS as SCENE_PRESETS
from .labels import DEFAULT_TAU, LabelSource, check_tau
from .models.build import check_labeler_name, check_segmenter_name
from .models.fcn import SEGMENTERS
from .models.fused import FUSIONS
from .models.labeler import LABELER_BACKBONES

PROCEDURES = ("3step", "joint")
LR_SCHEDULES = ("constant", "cosine")
MODELS = tuple(SEGMENTERS)  # imgpix's own; torchvision's architectures and user factories are accepted too
LABELERS = tuple(LABELER_BACKBONES)
# may change between a run and its resume
RUNTIME_ONLY = ("epochs", "workers", "compile", "channels_last", "progress", "eval_split")


@dataclass
class TrainConfig:
    """Every setting of a run; saved in the checkpoint and ``config.json``."""

    data: str = "synthetic"
    root: str | None = None
    train_split: str | None = None  # None: VOC's trainaug when SBD is there, else train
    classes: str | None = None  # class-list file of a folder dataset (default: found in root)
    background: str | None = "auto"  # the class fusion always keeps: auto, none, a name or an id
    skip_bad_files: bool = False
    model: str = "tiny"
    labeler: str | None = "tiny"
    weights: str | None = None  # local state dict of the whole segmenter (its starting point)
    labeler_weights: str | None = None  # local state dict of the labeler
    backbone_weights: str | None = None
    fusion: str | None = "dot"
    generator: bool = True
    discriminator: bool = False
    procedure: str = "3step"
    train_labels: str = "oracle"
    tau: float = DEFAULT_TAU
    epochs: int = 8
    batch_size: int = 16
    lr: float = 0.05
    lr_schedule: str = "constant"  # the segmenter's: constant, or cosine from lr to 0 over all its updates
    momentum: float = 0.9
    weight_decay: float = 5e-4
    aux_lr: float = 1e-3
    labeler_lr: float = 3e-3  # peak of the labeler's one-cycle schedule
    labeler_epochs: int | None = None  # the labeler trains in the first labeler_epochs epochs (None: all)
    aux_weight: float = 1.0
    num_train: int | None = None
    num_val: int | None = None
    image_size: int = 64
    scene_preset: str = "legacy"
    ambiguity: float = 1.0
    family_size: int = 4
    co_occurrence: bool = False
    fixed_train: bool = False
    crop_size: int = 320
    resize: int | None = None  # real images and labels scaled so that their longer side is this many pixels
    eval_split: str = "val"  # the split scored after each epoch and by evaluate
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.procedure not in PROCEDURES:
            raise ValueError(f"procedure must be one of {PROCEDURES}, got {self.procedure!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        check_tau(self.tau)
        if self.fusion is None and self.train_source.fused:
            raise ValueError("fusion none trains without labels: train_labels must be 'none', got "
                             f"{self.train_labels!r}")
        if self.train_source.kind == "labeler" and self.labeler is None:
            raise ValueError("train_labels 'labeler' needs a labeler")
        if self.generator and self.discriminator:
            raise ValueError("choose the generator or the discriminator, not both")
        if self.discriminator and self.procedure == "joint":
            raise ValueError("the discriminator learns in step 2 only: use procedure '3step' with it")
        check_segmenter_name(self.model)
        if self.labeler is not None:
            check_labeler_name(self.labeler)
        if self.scene_preset not in SCENE_PRESETS:
            raise ValueError(f"scene_preset must be one of {tuple(SCENE_PRESETS)}, got {self.scene_preset!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.labeler_epochs is not None and self.labeler_epochs < 1:
            raise ValueError(f"labeler_epochs must be >= 1 (or None: every epoch), got {self.labeler_epochs}")
        for name in ("lr", "momentum", "weight_decay", "aux_lr", "labeler_lr", "aux_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name.endswith("lr") and value == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name.endswith('lr') else '>= 0'}, "
                                 f"got {value}")

    @property
    def labeler_epoch_count(self) -> int:
        """Epochs in which the labeler trains: ``labeler_epochs`` capped at ``epochs``."""
        return min(self.labeler_epochs or self.epochs, self.epochs)

    @cached_property
    def info(self) -> DatasetInfo:
        """Number of classes, their names and the background class of the dataset (read once; no image is read)."""
        return dataset_info(self.data, self.root, **class_kwargs(self))

    @property
    def protected(self) -> tuple[int, ...]:
        """Classes that labeler and noisy labels always keep: the background, if the dataset has one."""
        background = self.info.background
        return () if background is None else (background,)

    @property
    def train_source(self) -> LabelSource:
        """The labels fused during training (``train_labels`` parsed; labeler sources use ``tau``)."""
        protected = self.protected if self.train_labels.startswith(("labeler", "noisy")) else ()
        return LabelSource.parse(self.train_labels, tau=self.tau, seed=self.seed, protected=protected)

    @property
    def updates_per_iteration(self) -> int:
        """Segmenter updates of one iteration: 2 for the 3-step procedure with an auxiliary net (steps 1 and 3)."""
        return 2 if (self.generator or self.discriminator) and self.procedure == "3step" else 1

    @property
    def eval_source(self) -> LabelSource:
        """The labels of the per-epoch validation score: oracle for a fused model, none otherwise."""
        return LabelSource("oracle" if self.fusion else "none")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def class_kwargs(cfg: TrainConfig) -> dict:
    """The dataset arguments that decide its classes."""
    if cfg.data == "synthetic":
        return {"family_size": cfg.family_size}
    return {"background": cfg.background, **({"classes": cfg.classes} if cfg.data == "folder" else {})}


def resolve_data(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the training split chosen (trainaug if VOC has SBD, else train), reading no image."""
    return cfg if cfg.train_split else replace(cfg, train_split=default_train_split(cfg.data, cfg.root))


def epoch_seed(cfg: TrainConfig, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based): its weights' random draws, its label noise, its fresh images."""
    return cfg.seed + 1000 * epoch
