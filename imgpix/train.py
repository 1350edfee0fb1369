"""Training: the Trainer (the paper's 3-step iteration, §2.3, and all its seeding) and train().

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

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import CHECKPOINT, HISTORY, append_history, discard_failed_start, make_out_dir, resume_or_start
from .config import TrainConfig, epoch_seed, resolve_data
from .data import IGNORE_INDEX
from .data.loaders import checked_split, make_loader, set_epoch
from .evaluate import evaluate
from .files import remove_torn_files, save_atomic, write_json
from .labels import from_masks
from .lock import OutputInUse, OutputLock
from .losses import adversarial_loss, reconstruction_loss, segmentation_loss
from .metrics import METRIC_NAMES
from .models import ImgPixNet, build_model


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
        # fused: one kernel per step instead of a loop over the parameter tensors
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

    def start_epoch(self, dataset) -> DataLoader:
        """Seed the next epoch (weights' random draws, label noise, fresh images, shuffle); its loader."""
        epoch = self.epoch + 1
        torch.manual_seed(epoch_seed(self.cfg, epoch))
        self.label_stream = replace(self.cfg.train_source, seed=epoch_seed(self.cfg, epoch)).generator()
        set_epoch(dataset, epoch)
        return make_loader(self.cfg, dataset, shuffle=True, epoch=epoch)

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
        return {"config": asdict(self.cfg), "epoch": self.epoch, "updates": self.updates,
                "model": self.model.state_dict(),
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
    One live run per ``out`` (:class:`~imgpix.lock.OutputLock`): a second is refused with
    :class:`~imgpix.lock.OutputInUse`. A run that stops (error, Ctrl-C) before its first checkpoint
    removes what it wrote; a later stop keeps the last checkpoint. A NaN or infinite loss stops the run
    with :class:`DivergedError`."""
    out = Path(out)
    cfg = resolve_data(cfg)
    if cfg.data != "synthetic":
        log(f"training on {cfg.data} split {cfg.train_split!r} of {cfg.root}")
    train_set, val_set = checked_split(cfg, "train", log), checked_split(cfg, cfg.eval_split, log)
    make_loader(cfg, train_set, shuffle=True)  # refuses a batch larger than the training set, before out is touched
    trainer = Trainer(cfg)
    main = dist.is_main()
    created = main and make_out_dir(out)
    try:
        with OutputLock(out) if main else nullcontext():
            _train_epochs(trainer, train_set, make_loader(cfg, val_set, shuffle=False), out, log)
    except OutputInUse:
        raise  # the other run's files are its own
    except BaseException:
        if main and not (out / CHECKPOINT).exists():
            discard_failed_start(out, created)
        raise
    return trainer


def _train_epochs(trainer: Trainer, train_set, val_loader: DataLoader, out: Path, log: Callable[[str], None]) -> None:
    """The epochs of :func:`train` that ``out`` does not hold yet; rank 0 writes history and checkpoints."""
    cfg, main = trainer.cfg, dist.is_main()
    if main:
        remove_torn_files(out, (CHECKPOINT, HISTORY, "config.json"))
    resume_or_start(trainer, out)
    if trainer.epoch >= cfg.epochs:
        if main:
            log(f"{out} already holds {trainer.epoch} epochs of this run: nothing to train (raise --epochs "
                "to train on)")
        return
    if main and trainer.epoch:
        log(f"resuming from epoch {trainer.epoch} of {out}")
    first, began = trainer.epoch, time.perf_counter()
    if main:
        write_json(out / "config.json", asdict(cfg))
    while trainer.epoch < cfg.epochs:
        start = time.perf_counter()
        losses = trainer.train_epoch(trainer.start_epoch(train_set))
        losses = dist.mean_over_ranks(losses, trainer.device)
        dist.broadcast_buffers(trainer.model)  # every rank evaluates the BN statistics rank 0 saves
        result = evaluate(trainer.model, val_loader, cfg.eval_source, trainer.device, progress=cfg.progress and main)
        trainer.epoch += 1
        row = {"epoch": trainer.epoch, "updates": trainer.updates, **losses,
               **{k: round(100 * result[k], 4) for k in METRIC_NAMES},
               "seconds": round(time.perf_counter() - start, 2)}
        if main:  # history first: a kill in between leaves a row the resume truncates
            append_history(out / HISTORY, row)
            save_atomic(trainer.state(), out / CHECKPOINT)
            per_epoch = (time.perf_counter() - began) / (trainer.epoch - first)
            log(epoch_line(row, cfg, per_epoch * (cfg.epochs - trainer.epoch)))
    if main:
        log(f"wrote {out / CHECKPOINT} and {out / HISTORY}")
