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
import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .data import NUM_CLASSES, build_dataset
from .labels import IGNORE_INDEX, from_masks
from .losses import adversarial_loss, reconstruction_loss, segmentation_loss
from .metrics import confusion_matrix, scores
from .models import Discriminator, Generator, build_labeler, build_segmenter
from .models.fused import ImgPixNet

PROCEDURES = ("3step", "joint")
LABEL_SOURCES = ("none", "oracle", "labeler")
METRIC_NAMES = ("PA", "MPA", "FWAA", "MIOU")
CHECKPOINT = "checkpoint.pt"
HISTORY = "metrics.csv"
RUNTIME_ONLY = ("epochs", "workers", "compile", "channels_last")  # may change between a run and its resume


@dataclass
class TrainConfig:
    """Every setting of a run; saved in the checkpoint and ``config.json``."""

    data: str = "synthetic"
    root: str | None = None
    model: str = "tiny"
    labeler: str | None = "tiny"
    backbone_weights: str | None = None
    fusion: str | None = "dot"
    generator: bool = True
    discriminator: bool = False
    procedure: str = "3step"
    train_labels: str = "oracle"
    tau: float = 0.25
    epochs: int = 8
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    aux_lr: float = 1e-3
    aux_weight: float = 1.0
    num_train: int | None = None
    num_val: int | None = None
    image_size: int = 64
    crop_size: int = 320
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    amp: bool = False
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self):
        if self.procedure not in PROCEDURES:
            raise ValueError(f"procedure must be one of {PROCEDURES}, got {self.procedure!r}")
        if self.train_labels not in ("oracle", "none"):
            raise ValueError(f"train_labels must be 'oracle' or 'none', got {self.train_labels!r}")
        if self.generator and self.discriminator:
            raise ValueError("choose the generator or the discriminator, not both")
        if self.discriminator and self.procedure == "joint":
            raise ValueError("the discriminator learns in step 2 only: use procedure '3step' with it")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def build_model(cfg: TrainConfig) -> ImgPixNet:
    seg = build_segmenter(cfg.model, NUM_CLASSES, backbone_weights=cfg.backbone_weights)
    labeler = build_labeler(cfg.labeler, NUM_CLASSES) if cfg.labeler else None
    generator = Generator(NUM_CLASSES) if cfg.generator else None
    discriminator = Discriminator(NUM_CLASSES) if cfg.discriminator else None
    return ImgPixNet(seg, labeler, generator, fusion=cfg.fusion, tau=cfg.tau, discriminator=discriminator)


def dataset_kwargs(cfg: TrainConfig, split: str) -> dict:
    if cfg.data == "synthetic":
        count = cfg.num_train if split == "train" else cfg.num_val
        return {"size": cfg.image_size, **({"num_images": count} if count else {})}
    crop = cfg.crop_size if split != "val" else None
    return {"root": cfg.root, "crop_size": crop, "augment": split != "val"}


def build_loader(cfg: TrainConfig, split: str, shuffle: bool, epoch_seed: int = 0) -> DataLoader:
    dataset = build_dataset(cfg.data, "trainaug" if cfg.data == "voc" and split == "train" else split,
                            **dataset_kwargs(cfg, split))
    batch = 1 if cfg.data == "voc" and split == "val" else cfg.batch_size
    sampler = dist.sampler(dataset, shuffle=shuffle, seed=cfg.seed + epoch_seed)
    generator = torch.Generator().manual_seed(cfg.seed + epoch_seed)
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=generator, num_workers=cfg.workers, drop_last=shuffle)


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
        self.labeler_opt = (torch.optim.Adam(self.model.labeler.parameters(), lr=cfg.aux_lr, fused=True)
                            if self.model.labeler is not None else None)
        self.epoch = 0

    def autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def fused(self, image: Tensor, labels: Tensor | None) -> Tensor:
        with self.autocast():
            logits = self.seg(image)
        return self.model.fuse_logits(logits, labels)

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

    def iteration(self, image: Tensor, mask: Tensor) -> dict[str, float]:
        """One training iteration of ``cfg.procedure`` on a batch; returns the losses."""
        labels = from_masks(mask, NUM_CLASSES) if self.model.fusion and self.cfg.train_labels == "oracle" else None
        losses = {}
        if self.aux is None or self.cfg.procedure == "3step":
            seg_loss = segmentation_loss(self.fused(image, labels), mask)
            step(seg_loss, self.seg_opt)
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
        joint_opts = (self.seg_opt, self.aux_opt) if self.model.generator is not None else (self.seg_opt,)
        step(joint, *joint_opts)
        losses["joint"] = joint.item()
        losses.setdefault("seg", seg_loss.item())
        return losses

    def labeler_iteration(self, image: Tensor, mask: Tensor) -> float:
        """BCE step of the image labeler on labels from the masks (it stays frozen for L_seg)."""
        target = from_masks(mask, NUM_CLASSES).float()
        loss = F.binary_cross_entropy_with_logits(self.labeler_ddp(image), target)
        step(loss, self.labeler_opt)
        return loss.item()

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        self.model.train()
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not dist.is_main())
        for count, (image, mask) in enumerate(bar, start=1):
            image, mask = self.to_device(image, mask)
            losses = self.iteration(image, mask)
            if self.labeler_opt is not None:
                losses["labeler"] = self.labeler_iteration(image, mask)
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
        return {"config": asdict(self.cfg), "epoch": self.epoch, "model": self.model.state_dict(),
                "seg_opt": self.seg_opt.state_dict(),
                "aux_opt": self.aux_opt.state_dict() if self.aux_opt else None,
                "labeler_opt": self.labeler_opt.state_dict() if self.labeler_opt else None}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.seg_opt.load_state_dict(state["seg_opt"])
        for name in ("aux_opt", "labeler_opt"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])
        self.epoch = state["epoch"]


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


LabelFn = Callable[[Tensor, Tensor], "Tensor | str | None"]


def label_fn(source: str) -> LabelFn:
    """Labels for ``ImgPixNet.forward`` from a source name: none / oracle / labeler."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"label source must be one of {LABEL_SOURCES}, got {source!r}")
    if source == "oracle":
        return lambda image, mask: from_masks(mask, NUM_CLASSES)
    return lambda image, mask: "none" if source == "none" else None


@torch.no_grad()
def confusion(model: ImgPixNet, loader: DataLoader, labels: LabelFn, device="cpu", progress=False) -> Tensor:
    """One confusion matrix accumulated over the whole split (summed over ranks)."""
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64, device=device)
    for image, mask in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        image, mask = image.to(device), mask.to(device)
        out = model(image, labels(image, mask))
        cm += confusion_matrix(out.log_probs.argmax(1), mask, NUM_CLASSES)
    return dist.all_reduce_sum(cm).cpu()


def evaluate(model: ImgPixNet, loader: DataLoader, source: str | LabelFn = "labeler", device="cpu",
             progress=False) -> dict:
    """PA, MPA, FWAA, MIOU (fractions) of ``model`` on ``loader`` with labels from ``source``."""
    labels = label_fn(source) if isinstance(source, str) else source
    return scores(confusion(model, loader, labels, device, progress))


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device="cpu") -> tuple[ImgPixNet, TrainConfig, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=device, weights_only=False)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.to(device), cfg, state


def append_history(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
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
    tmp = path.with_name(path.name + ".tmp")  # rewrite atomically: a kill here leaves the old file
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(keep)
    os.replace(tmp, path)


def resume_or_start(trainer: Trainer, out: Path) -> None:
    """Continue from ``out/checkpoint.pt`` when it exists and was made by the same configuration."""
    ckpt = out / CHECKPOINT
    if not ckpt.exists():
        if dist.is_main():  # rows of an epoch killed before its first checkpoint
            truncate_history(out / HISTORY, 0)
        return
    state = torch.load(ckpt, map_location=trainer.device, weights_only=False)
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


def train(cfg: TrainConfig, out: str | Path, log: Callable[[str], None] = print) -> Trainer:
    """Train for ``cfg.epochs`` epochs, evaluating on val after each; resumable from ``out``."""
    out = Path(out)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    resume_or_start(trainer, out)
    if dist.is_main():
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(asdict(cfg), indent=2))
        os.replace(tmp, out / "config.json")
    val_loader = build_loader(cfg, "val", shuffle=False)
    source = "oracle" if cfg.fusion and cfg.train_labels == "oracle" else "none"
    while trainer.epoch < cfg.epochs:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed + 1000 * (trainer.epoch + 1))
        losses = trainer.train_epoch(build_loader(cfg, "train", shuffle=True, epoch_seed=trainer.epoch + 1))
        losses = dist.mean_over_ranks(losses, trainer.device)
        dist.broadcast_buffers(trainer.model)  # every rank evaluates the BN statistics rank 0 saves
        result = evaluate(trainer.model, val_loader, source, trainer.device)
        trainer.epoch += 1
        row = {"epoch": trainer.epoch, **losses, **{k: round(result[k], 6) for k in METRIC_NAMES},
               "seconds": round(time.perf_counter() - start, 2)}
        if dist.is_main():  # history first: a kill in between leaves a row the resume truncates
            append_history(out / HISTORY, row)
            save_atomic(trainer.state(), out / CHECKPOINT)
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return trainer
