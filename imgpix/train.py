"""Training (the paper's 3-step iteration, §2.3), evaluation, checkpoints.

One iteration of the ``"3step"`` procedure:
  (1) the segmentation net alone on L_seg (Eq. 2);
  (2) the generator alone on L_gen (Eq. 3), the segmentation net frozen;
  (3) both jointly on L_seg + L_gen.
Step 2 sees ``P'`` of the frozen net, which is exactly the ``P'`` that step
3's forward pass computes, so one forward pass serves both steps (same
result as running them one after the other, one forward pass cheaper).
``"joint"`` runs step 3 only. Without a generator an iteration is step 1.
With a discriminator (Table 2 ablation) step 2 trains the discriminator and
step 3 adds the adversarial loss of the segmentation net.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .data import IGNORE_INDEX, build_dataset
from .data.build import DatasetInfo, dataset_info, default_train_split
from .data.check import check_dataset
from .evaluate import Evaluator
from .files import remove_torn_files, save_atomic, write_atomic, write_json
from .labels import DEFAULT_TAU, LabelSource, check_tau, from_masks
from .losses import adversarial_loss, reconstruction_loss, segmentation_loss
from .metrics import METRIC_NAMES
from .models import Discriminator, Generator, build_labeler, build_segmenter
from .models.fused import FUSIONS, ImgPixNet

PROCEDURES = ("3step", "joint")
LR_SCHEDULES = ("constant", "cosine")
MODELS = ("tiny", "fcn32s", "fcn16s", "fcn8s")
LABELERS = ("tiny", "vgg16", "resnet18")
CHECKPOINT = "checkpoint.pt"
HISTORY = "metrics.csv"
RUNTIME_ONLY = ("epochs", "workers", "compile", "channels_last", "progress")  # may change between a run and its resume


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
            raise ValueError(f"fusion none trains without labels: train_labels must be 'none', got {self.train_labels!r}")
        if self.train_source.kind == "labeler" and self.labeler is None:
            raise ValueError("train_labels 'labeler' needs a labeler")
        if self.generator and self.discriminator:
            raise ValueError("choose the generator or the discriminator, not both")
        if self.discriminator and self.procedure == "joint":
            raise ValueError("the discriminator learns in step 2 only: use procedure '3step' with it")
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

    @property
    def info(self) -> DatasetInfo:
        """Number of classes, their names and the background class of the dataset (no image is read)."""
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


def build_model(cfg: TrainConfig) -> ImgPixNet:
    """The networks of ``cfg``, sized by the dataset's number of classes."""
    n = cfg.info.num_classes
    seg = build_segmenter(cfg.model, n, backbone_weights=cfg.backbone_weights)
    labeler = build_labeler(cfg.labeler, n) if cfg.labeler else None
    generator = Generator(n) if cfg.generator else None
    discriminator = Discriminator(n) if cfg.discriminator else None
    return ImgPixNet(seg, labeler, generator, fusion=cfg.fusion, discriminator=discriminator)


def dataset_kwargs(cfg: TrainConfig, split: str) -> dict:
    """Constructor arguments of ``cfg``'s dataset for ``split``. Synthetic training images are drawn
    afresh each epoch from ``(seed, epoch, index)`` unless ``cfg.fixed_train``; val is one fixed set."""
    if cfg.data == "synthetic":
        count = cfg.num_train if split == "train" else cfg.num_val
        scenes = {"size": cfg.image_size, "preset": cfg.scene_preset, "ambiguity": cfg.ambiguity,
                  "family_size": cfg.family_size, "co_occurrence": cfg.co_occurrence}
        if split == "train":
            scenes.update(seed=cfg.seed, epoch=None if cfg.fixed_train else 0)
        return {**scenes, **({"num_images": count} if count else {})}
    train = split != "val"
    return {"root": cfg.root, "crop_size": cfg.crop_size if train else None, "augment": train,
            **({"seed": cfg.seed} if train else {}), **class_kwargs(cfg)}


def build_split(cfg: TrainConfig, split: str):
    """The dataset of ``split`` ("train" means ``cfg.train_split``)."""
    name = (cfg.train_split or default_train_split(cfg.data, cfg.root)) if split == "train" else split
    return build_dataset(cfg.data, name, **dataset_kwargs(cfg, split))


def checked_split(cfg: TrainConfig, split: str, log: Callable[[str], None] = print):
    """:func:`build_split`, its files checked first (BadFilesError names them; ``skip_bad_files`` drops them)."""
    dataset, warning = check_dataset(build_split(cfg, split), skip_bad_files=cfg.skip_bad_files,
                                     progress=cfg.progress and dist.is_main())
    if warning:
        log(warning)
    return dataset


def make_loader(cfg: TrainConfig, dataset, shuffle: bool, epoch: int = 0) -> DataLoader:
    """A DataLoader over ``dataset``; ``epoch`` seeds the shuffle, the augmentation and fresh synthetic images."""
    if shuffle and getattr(dataset, "epoch", None) is not None:
        dataset.epoch = epoch
    batch = cfg.batch_size if cfg.data == "synthetic" or shuffle else 1  # real val images differ in size
    sampler = dist.sampler(dataset, shuffle=shuffle, seed=cfg.seed + epoch)
    generator = torch.Generator().manual_seed(cfg.seed + epoch)
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=generator, num_workers=cfg.workers, drop_last=shuffle)


def build_loader(cfg: TrainConfig, split: str, shuffle: bool = False, epoch: int = 0) -> DataLoader:
    """``make_loader`` over ``build_split(cfg, split)``."""
    return make_loader(cfg, build_split(cfg, split), shuffle, epoch)


class DivergedError(ValueError):
    """A training loss became NaN or infinite."""


class Trainer:
    """Holds the model and its optimisers; runs iterations and epochs."""

    def __init__(self, cfg: TrainConfig, model: ImgPixNet | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = (model or build_model(cfg)).to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.seg = dist.wrap(self.model.seg)
        self.aux = self.model.generator or self.model.discriminator
        self.aux_ddp = dist.wrap(self.aux) if self.aux is not None else None
        if cfg.compile:
            self.seg = torch.compile(self.seg)
        # fused: one kernel per step instead of a loop over tensors (6x faster on CPU for VGG16)
        self.seg_opt = torch.optim.SGD(self.model.seg.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay, fused=True)
        self.aux_opt = (torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr, fused=True)
                        if self.aux is not None else None)
        self.labeler_ddp = dist.wrap(self.model.labeler) if self.model.labeler is not None else None
        self.labeler_opt = (torch.optim.Adam(self.model.labeler.parameters(), lr=cfg.labeler_lr, fused=True)
                            if self.model.labeler is not None else None)
        self.labeler_schedule = None  # made by the first epoch, when the loader's length is known
        self.epoch = 0
        self.updates = 0  # steps of the segmentation net: the budget experiments match
        self.total_updates = 0  # of the whole run: set by the first epoch, when the loader's length is known
        self.label_stream = cfg.train_source.generator()

    def autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def fused(self, image: Tensor, labels: Tensor | None) -> Tensor:
        with self.autocast():
            logits = self.seg(image)
        if not bool(torch.isfinite(logits.sum(dtype=torch.float32))):  # the check of fuse_log, as divergence
            raise self.diverged("non-finite logits")
        return self.model.fuse_logits(logits, labels)

    def diverged(self, what: str) -> DivergedError:
        """The error that stops a run whose ``what`` became NaN or infinite in the current epoch."""
        kept = f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else "no epoch finished, none is kept"
        return DivergedError(f"training diverged: {what} in epoch {self.epoch + 1}; {kept}; try a smaller --lr")

    def aux_step_loss(self, log_probs: Tensor, image: Tensor, mask: Tensor) -> Tensor:
        """Step 2: the generator (Eq. 3) or the discriminator alone, on a frozen ``P'``."""
        probs = log_probs.detach().exp()
        if self.model.generator is not None:
            return reconstruction_loss(self.aux_ddp(probs), image)
        real = one_hot(mask, probs.shape[1])
        return adversarial_loss(self.aux_ddp(real, image), True) + adversarial_loss(self.aux_ddp(probs, image), False)

    def aux_joint_loss(self, log_probs: Tensor, image: Tensor) -> Tensor:
        """The auxiliary term of step 3."""
        if self.model.generator is not None:
            return reconstruction_loss(self.aux_ddp(log_probs.exp()), image)
        return adversarial_loss(self.aux_ddp(log_probs.exp(), image), True)

    def seg_lr(self) -> float:
        """The segmenter's learning rate at the current update: ``lr``, or under ``cosine``
        ``lr * (1 + cos(pi * updates / total_updates)) / 2``."""
        if self.cfg.lr_schedule == "constant" or not self.total_updates:
            return self.cfg.lr
        return self.cfg.lr * (1 + math.cos(math.pi * min(self.updates / self.total_updates, 1.0))) / 2

    def seg_step(self, loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """One update of the segmentation net (with ``optimizers``, e.g. the generator's, in the same step)."""
        for group in self.seg_opt.param_groups:
            group["lr"] = self.seg_lr()
        step(loss, self.seg_opt, *optimizers)
        self.updates += 1

    def iteration(self, image: Tensor, mask: Tensor) -> dict[str, float]:
        """One training iteration of ``cfg.procedure`` on a batch; returns the losses."""
        source = self.cfg.train_source
        scores = self.model.label_scores(image) if source.kind == "labeler" else None
        labels = source.resolve(self.model.num_classes, mask, scores, self.label_stream)
        losses = {}
        if self.aux is None or self.cfg.procedure == "3step":
            seg_loss = segmentation_loss(self.fused(image, labels), mask)
            self.seg_step(seg_loss)
            losses["seg"] = seg_loss.item()
        if self.aux is None:
            return losses
        log_probs = self.fused(image, labels)
        if self.cfg.procedure == "3step":
            aux_loss = self.aux_step_loss(log_probs, image, mask)
            step(aux_loss, self.aux_opt)
            losses["aux"] = aux_loss.item()
        seg_loss = segmentation_loss(log_probs, mask)
        joint = seg_loss + self.cfg.aux_weight * self.aux_joint_loss(log_probs, image)
        self.seg_step(joint, *((self.aux_opt,) if self.model.generator is not None else ()))
        losses["joint"] = joint.item()
        losses.setdefault("seg", seg_loss.item())
        return losses

    def labeler_iteration(self, image: Tensor, mask: Tensor) -> float:
        """BCE step of the image labeler on labels from the masks (it stays frozen for L_seg)."""
        target = from_masks(mask, self.model.num_classes).float()
        loss = F.binary_cross_entropy_with_logits(self.labeler_ddp(image), target)
        step(loss, self.labeler_opt)
        if self.labeler_schedule is not None:
            self.labeler_schedule.step()
        return loss.item()

    def start_labeler_schedule(self, steps_per_epoch: int) -> None:
        """Adam's learning rate for the labeler: torch's one cycle (up to ``labeler_lr`` and down) over its
        ``labeler_epoch_count`` epochs, advanced to the current epoch so a resumed run goes on where it stopped."""
        total = self.cfg.labeler_epoch_count * steps_per_epoch
        self.labeler_schedule = OneCycleLR(self.labeler_opt, max_lr=self.cfg.labeler_lr, total_steps=total)
        with warnings.catch_warnings():  # "step() before optimizer.step()": no step is skipped here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(min(self.epoch * steps_per_epoch, total - 1)):
                self.labeler_schedule.step()

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        self.model.train()
        train_labeler = self.labeler_opt is not None and self.epoch < self.cfg.labeler_epoch_count
        if train_labeler and self.labeler_schedule is None and len(loader):
            self.start_labeler_schedule(len(loader))
        if self.model.labeler is not None and not train_labeler:
            self.model.labeler.eval()  # done training: its batch-norm statistics stay as they are
        self.total_updates = self.cfg.epochs * len(loader) * self.cfg.updates_per_iteration
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not (dist.is_main() and self.cfg.progress))
        for count, (image, mask) in enumerate(bar, start=1):
            image, mask = self.to_device(image, mask)
            losses = self.iteration(image, mask)
            if train_labeler:
                losses["labeler"] = self.labeler_iteration(image, mask)
            bad = [name for name, value in losses.items() if not math.isfinite(value)]
            if bad:
                raise self.diverged(f"non-finite {', '.join(bad)} loss at iteration {count}")
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value
            bar.set_postfix({name: f"{value / count:.3f}" for name, value in totals.items()})
        return {f"loss_{name}": value / max(len(loader), 1) for name, value in totals.items()}

    def to_device(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        image = image.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, mask.to(self.device, non_blocking=True)

    def state(self) -> dict:
        return {"config": asdict(self.cfg), "epoch": self.epoch, "updates": self.updates, "model": self.model.state_dict(),
                "seg_opt": self.seg_opt.state_dict(),
                "aux_opt": self.aux_opt.state_dict() if self.aux_opt else None,
                "labeler_opt": self.labeler_opt.state_dict() if self.labeler_opt else None}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.seg_opt.load_state_dict(state["seg_opt"])
        for name in ("aux_opt", "labeler_opt"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])
        self.epoch, self.updates = state["epoch"], state.get("updates", 0)


def step(loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def one_hot(mask: Tensor, num_classes: int) -> Tensor:
    """[B,H,W] masks -> [B,N,H,W] float one-hot maps; ignored pixels are all zero."""
    valid = mask != IGNORE_INDEX
    hot = F.one_hot(torch.where(valid, mask, 0), num_classes).permute(0, 3, 1, 2).float()
    return hot * valid[:, None]


def evaluate(model: ImgPixNet, loader: DataLoader, source: LabelSource, device="cpu", progress=False) -> dict:
    """PA, MPA, FWAA, MIOU (fractions) of ``model`` on ``loader`` with labels from ``source``."""
    return Evaluator(model, loader, device, progress).run([source])[source.name].scores


def load_checkpoint(path: str | Path, device="cpu") -> tuple[ImgPixNet, TrainConfig, dict]:
    """The model, its TrainConfig and the raw state of an imgpix checkpoint (ValueError if unreadable)."""
    state = read_checkpoint(path, device)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.to(device), cfg, state


def read_checkpoint(path: str | Path, device="cpu") -> dict:
    """The saved state dict of ``path``; FileNotFoundError / ValueError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ValueError, ...
        why = str(error).split(". ")[0].splitlines()[0] if str(error).strip() else ""  # torch's first sentence
        raise ValueError(f"{path} is not a readable imgpix checkpoint (empty, truncated or another file?): "
                         f"{type(error).__name__}{': ' + why if why else ''}") from None
    if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
        raise ValueError(f"{path} is not an imgpix checkpoint (no config/model/epoch entries)")
    return state


def append_history(path: Path, row: dict) -> None:
    """Append ``row`` under the file's header (a column the row lacks, e.g. the labeler's loss after its
    last epoch, stays empty); a new file takes the row's keys as its header."""
    new = not path.exists() or path.stat().st_size == 0
    fieldnames = list(row)
    if not new:
        with path.open(newline="") as handle:
            fieldnames = next(csv.reader(handle))
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, restval="")
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_history(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint being resumed from."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    keep = [row for row in rows if int(row["epoch"]) <= last_epoch]
    if len(keep) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(keep)
    write_atomic(path, buffer.getvalue())


def resume_or_start(trainer: Trainer, out: Path) -> None:
    """Continue from ``out/checkpoint.pt`` when it exists and was made by the same configuration."""
    ckpt = out / CHECKPOINT
    if not ckpt.exists():
        if dist.is_main():  # rows of an epoch killed before its first checkpoint
            truncate_history(out / HISTORY, 0)
        return
    try:
        state = read_checkpoint(ckpt, trainer.device)
    except ValueError as error:
        raise ValueError(f"{error}; delete it to train afresh, or use another --out directory") from None
    # torchrun gives rank r the device cuda:r: compare the device type, not the index
    saved = {k: torch.device(v).type if k == "device" else v
             for k, v in state["config"].items() if k not in RUNTIME_ONLY}
    current = {k: torch.device(v).type if k == "device" else v
               for k, v in asdict(trainer.cfg).items() if k not in RUNTIME_ONLY}
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current[k])
        raise ValueError(f"{ckpt} was written by another configuration (differs in {changed}); "
                         "use another --out directory")
    trainer.load_state(state)
    if dist.is_main():
        truncate_history(out / HISTORY, trainer.epoch)


def make_out_dir(out: Path) -> bool:
    """Create ``out`` and its parents; True if ``out`` is new. OSError naming ``out`` if it cannot be written."""
    new = not out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = "a file of that name exists" if isinstance(error, FileExistsError) else error.strerror or error
        raise OSError(f"cannot create the --out directory {out}: {why}") from None
    if not os.access(out, os.W_OK):
        raise OSError(f"cannot write into the --out directory {out}: permission denied")
    return new


def discard_failed_start(out: Path, created: bool) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (and ``out`` itself if it made it)."""
    for name in ("config.json", HISTORY):
        (out / name).unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


def duration(seconds: float) -> str:
    """``seconds`` as a person reads a time estimate: "40 s", "12 min", "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def epoch_line(row: dict, cfg: TrainConfig, seconds_left: float) -> str:
    """The log line of a finished epoch: losses, val scores in percent, the time the remaining epochs need."""
    values = " ".join(f"{k}={v:.4f}" if k.startswith("loss") else f"{k}={v:.2f}%" if k in METRIC_NAMES else f"{k}={v}"
                      for k, v in row.items() if k != "epoch")
    left = f"; about {duration(seconds_left)} left" if row["epoch"] < cfg.epochs else ""
    return f"epoch {row['epoch']}/{cfg.epochs}: {values} ({cfg.eval_source.name} labels){left}"


def train(cfg: TrainConfig, out: str | Path, log: Callable[[str], None] = print) -> Trainer:
    """Train for ``cfg.epochs`` epochs, evaluating on val after each; resumable from ``out``.

    The data are checked before ``out`` is touched: a bad file stops the run with nothing written.
    A run that stops (error, Ctrl-C) before its first checkpoint removes what it wrote; a later
    stop keeps the last checkpoint. A NaN or infinite loss stops the run with :class:`DivergedError`."""
    out = Path(out)
    cfg = resolve_data(cfg)
    if cfg.data != "synthetic":
        log(f"training on {cfg.data} split {cfg.train_split!r} of {cfg.root}")
    train_set, val_set = checked_split(cfg, "train", log), checked_split(cfg, "val", log)
    val_loader = make_loader(cfg, val_set, shuffle=False)
    trainer = Trainer(cfg)
    created = dist.is_main() and make_out_dir(out)
    if dist.is_main():
        remove_torn_files(out, (CHECKPOINT, HISTORY, "config.json"))
    resume_or_start(trainer, out)
    main = dist.is_main()
    if trainer.epoch >= cfg.epochs:
        if main:
            log(f"{out} already holds {trainer.epoch} epochs of this run: nothing to train (raise --epochs "
                "to train on)")
        return trainer
    if main and trainer.epoch:
        log(f"resuming from epoch {trainer.epoch} of {out}")
    first, began = trainer.epoch, time.perf_counter()
    try:
        if main:
            write_json(out / "config.json", asdict(cfg))
        while trainer.epoch < cfg.epochs:
            start = time.perf_counter()
            torch.manual_seed(cfg.seed + 1000 * (trainer.epoch + 1))
            trainer.label_stream = replace(cfg.train_source, seed=cfg.seed + 1000 * (trainer.epoch + 1)).generator()
            losses = trainer.train_epoch(make_loader(cfg, train_set, shuffle=True, epoch=trainer.epoch + 1))
            losses = dist.mean_over_ranks(losses, trainer.device)
            dist.broadcast_buffers(trainer.model)  # every rank evaluates the BN statistics rank 0 saves
            result = evaluate(trainer.model, val_loader, cfg.eval_source, trainer.device,
                              progress=cfg.progress and main)
            trainer.epoch += 1
            row = {"epoch": trainer.epoch, "updates": trainer.updates, **losses,
                   **{k: round(100 * result[k], 4) for k in METRIC_NAMES},
                   "seconds": round(time.perf_counter() - start, 2)}
            if main:  # history first: a kill in between leaves a row the resume truncates
                append_history(out / HISTORY, row)
                save_atomic(trainer.state(), out / CHECKPOINT)
                per_epoch = (time.perf_counter() - began) / (trainer.epoch - first)
                log(epoch_line(row, cfg, per_epoch * (cfg.epochs - trainer.epoch)))
    except BaseException:
        if main and not (out / CHECKPOINT).exists():
            discard_failed_start(out, created)
        raise
    if main:
        log(f"wrote {out / CHECKPOINT} and {out / HISTORY}")
    return trainer
