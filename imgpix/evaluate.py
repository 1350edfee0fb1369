"""Evaluation: run the networks once per batch, fuse the logits with any number of label sources,
accumulate one :class:`~imgpix.metrics.ConfusionMatrix` (and optional per-image records) per source."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from .labels import LabelSource, from_masks
from .metrics import METRIC_NAMES, ConfusionMatrix, labeler_scores, per_image_confusion
from .models.fused import ImgPixNet

if TYPE_CHECKING:
    from .config import TrainConfig


@dataclass
class SourceResult:
    """What one label source gave over a split: the confusion matrix and, if asked, per-image records."""

    source: LabelSource
    confusion: ConfusionMatrix
    images: list[dict] = field(default_factory=list)
    image_confusion: list[Tensor] = field(default_factory=list)

    @property
    def scores(self) -> dict:
        """PA, MPA, FWAA, MIOU (fractions) and per-class IoU."""
        return self.confusion.compute()


class Evaluator:
    """Runs ``model`` once per batch of ``loader``; fuses the same logits with every label source.

    ``keep=True`` keeps logits, labeler scores and masks in memory after the first pass, so later
    calls of :meth:`run` re-fuse without running the networks (for a model that no longer changes).
    """

    def __init__(self, model: ImgPixNet, loader: DataLoader, device="cpu", progress: bool = False,
                 keep: bool = False):
        self.model, self.loader = model, loader
        self.device = torch.device(device)
        self.progress, self.keep = progress, keep
        self._kept: list[tuple[Tensor, Tensor | None, Tensor]] | None = None

    @torch.no_grad()
    def batches(self, desc: str = "evaluate") -> Iterator[tuple[Tensor, Tensor | None, Tensor, Tensor]]:
        """``(logits, labeler scores or None, mask, true-class presence)`` per batch, on ``device``."""
        if self._kept is not None:
            yield from self._kept
            return
        self.model.eval()
        kept = []
        for image, mask in tqdm(self.loader, desc=desc, leave=False, disable=not self.progress):
            image, mask = image.to(self.device), mask.to(self.device)
            batch = (self.model.seg(image).float(), self.model.label_scores(image), mask,
                     from_masks(mask, self.model.num_classes))
            if self.keep:
                kept.append(batch)
            yield batch
        if self.keep:
            self._kept = kept

    @torch.no_grad()
    def run(self, sources: Sequence[LabelSource], per_image: bool = False,
            affinity: dict[str, Tensor] | None = None, desc: str = "evaluate") -> dict[str, SourceResult]:
        """One :class:`SourceResult` per source, keyed by ``source.name`` (names must be distinct).

        ``per_image``: also record :func:`imgpix.information.audit` and a confusion matrix per image.
        ``affinity[name]`` [N, N]: the outliers of that noisy source are drawn with weights
        ``presence @ affinity`` (row c: how strongly class c draws each other class). Counts are
        summed over the processes of a distributed run.
        """
        from .information import Audit

        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"label sources must have distinct names, got {names}")
        num_classes = self.model.num_classes
        results = {s.name: SourceResult(s, ConfusionMatrix(num_classes, device=self.device)) for s in sources}
        streams = {s.name: s.generator() for s in sources}
        affinity = affinity or {}
        if set(affinity) - set(names):
            raise ValueError(f"affinity names no source: {sorted(set(affinity) - set(names))}")
        for logits, scores, mask, presence in self.batches(desc):
            audit = Audit(logits, mask) if per_image else None
            seen: dict = {}
            for source in sources:
                result = results[source.name]
                weights = (presence.double().cpu() @ affinity[source.name].double().cpu()
                           if source.name in affinity else None)
                labels = source.resolve(num_classes, mask, scores, streams[source.name], weights, presence)
                record = pred = None
                if per_image:
                    record, over_kept = audit.fused(labels if labels is not None else torch.ones(num_classes))
                    if labels is None or self.model.predicts_over_kept(labels):
                        pred = over_kept  # the same argmax predict() would compute
                if pred is None:
                    counts = self._counts(logits, labels, mask, seen)
                else:
                    counts = per_image_confusion(pred, mask, num_classes)
                result.confusion.add_counts(counts.sum(0))
                if per_image:
                    result.images.extend(_rows(record))
                    result.image_confusion.append(counts.cpu())
        for result in results.values():
            result.confusion.all_reduce()
        return results

    def _counts(self, logits: Tensor, labels: Tensor | None, mask: Tensor, seen: dict) -> Tensor:
        """[B, N, N] confusion counts of ``predict(logits, labels)`` per image; an image whose label row
        ``seen`` already holds (another source of this batch gave it the same labels) reuses its counts."""
        batch = logits.shape[0]
        rows = None if labels is None else labels.to(logits.device).expand(batch, -1)
        keys = [(i, None if rows is None else tuple(rows[i].tolist())) for i in range(batch)]
        todo = [i for i, key in enumerate(keys) if key not in seen]
        if todo:
            part = slice(None) if len(todo) == batch else todo
            pred = self.model.predict(logits[part], None if rows is None else rows[part])
            seen.update(zip([keys[i] for i in todo], per_image_confusion(pred, mask[part], self.model.num_classes)))
        return torch.stack([seen[key] for key in keys])

    @torch.no_grad()
    def labeler(self, tau: float, objects: Sequence[int] | None = None) -> dict:
        """The labeler's mAP over ``objects`` classes and its precision / recall at ``tau`` (see
        :func:`imgpix.metrics.labeler_scores`)."""
        if self.model.labeler is None:
            raise ValueError("the model has no labeler")
        scores, present = [], []
        for _, batch_scores, _, presence in self.batches("labeler"):
            scores.append(batch_scores.cpu())
            present.append(presence.cpu())
        return labeler_scores(torch.cat(scores), torch.cat(present), tau, objects)


def _rows(record: dict[str, Tensor]) -> list[dict]:
    columns = {key: value.detach().cpu().tolist() for key, value in record.items()}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def evaluate(model: ImgPixNet, loader: DataLoader, source: LabelSource, device="cpu", progress=False) -> dict:
    """PA, MPA, FWAA, MIOU (fractions) of ``model`` on ``loader`` with labels from ``source``."""
    return Evaluator(model, loader, device, progress).run([source])[source.name].scores


@dataclass
class Evaluation:
    """What ``imgpix evaluate`` prints: one row per label source (scores in percent, beside the nats its labels
    remove, mean over images), the per-image records behind them, and the labeler's quality."""

    sources: list[LabelSource]
    table: pd.DataFrame
    images: pd.DataFrame
    labeler: dict | None
    where: str  # what was evaluated, in words

    def markdown(self) -> str:
        return self.table.to_markdown(index=False, floatfmt=".2f")


def evaluate_model(model: ImgPixNet, loader: DataLoader, sources: Sequence[LabelSource], *, device="cpu",
                   progress: bool = False, tau: float | None = None, objects: Sequence[int] | None = None,
                   where: str = "") -> Evaluation:
    """Every source fused into one pass of ``model`` over ``loader``, with the information audit per image
    (:func:`imgpix.information.audit`); the labeler's mAP over ``objects`` and precision / recall at ``tau``."""
    evaluator = Evaluator(model, loader, device, progress=progress, keep=model.labeler is not None)
    results = evaluator.run(sources, per_image=True)
    rows, images = [], []
    for name, result in results.items():
        records = pd.DataFrame(result.images)
        posthoc = " (post-hoc)" if model.fusion is None and result.source.fused else ""
        rows.append({"labels": name + posthoc, **{k: 100 * result.scores[k] for k in METRIC_NAMES},
                     "nats removed": records["removed"].mean(), "images": len(records)})
        images.append(records.assign(labels=name, image=range(len(records))))
    quality = None if model.labeler is None or tau is None else evaluator.labeler(tau, objects)
    return Evaluation(list(sources), pd.DataFrame(rows), pd.concat(images, ignore_index=True), quality, where)


def _split_loader(cfg: TrainConfig, log=None) -> DataLoader:
    from .data.loaders import checked_split, make_loader

    return make_loader(cfg, checked_split(cfg, cfg.eval_split, log or (lambda text: None)), shuffle=False)


def resolution(cfg: TrainConfig) -> str:
    """The resolution at which ``cfg``'s images are scored, in words."""
    if cfg.data == "synthetic":
        return f"{cfg.image_size} x {cfg.image_size} px"
    return f"scaled to a longer side of {cfg.resize} px" if cfg.resize else "at the files' resolution"


def _where(cfg: TrainConfig, images: int) -> str:
    root = f" of {cfg.root}" if cfg.root else ""
    return f"{images} {cfg.data} {cfg.eval_split} images{root}, {resolution(cfg)}"


def _sources(model: ImgPixNet, cfg: TrainConfig, texts: Sequence[str] | None) -> list[LabelSource]:
    """The label sources of ``texts`` (default: unfused, oracle and, with a labeler, labeler@tau)."""
    texts = list(texts or ["none", "oracle", *(["labeler"] if model.labeler is not None else [])])
    sources = [LabelSource.parse(text, tau=cfg.tau, protected=cfg.protected) for text in texts]
    if any(s.kind == "labeler" for s in sources) and model.labeler is None:
        raise ValueError("label source 'labeler' needs an image labeler (a checkpoint trained with one, or "
                         "--labeler NAME)")
    return sources


def evaluate_module(module: torch.nn.Module, cfg: TrainConfig, sources: Sequence[str] | None = None, *,
                    labeler: torch.nn.Module | None = None, progress: bool = False, log=None) -> Evaluation:
    """Any segmentation net (``[B,3,H,W] -> logits [B,N,H',W']``, a dict with ``out`` allowed; lower-resolution
    logits are upsampled) on ``cfg``'s data and ``cfg.eval_split``, with label ``sources`` fused post hoc
    (texts as in ``imgpix evaluate --label-source``); ``labeler`` [B,3,H,W] -> [B,N] logits for ``labeler@tau``."""
    from .models.zoo import LabelerAdapter, SegmenterAdapter

    n = cfg.info.num_classes
    seg = module if isinstance(module, SegmenterAdapter) else SegmenterAdapter(module, n)
    if labeler is not None and not hasattr(labeler, "scores"):
        labeler = LabelerAdapter(labeler, n)
    model = ImgPixNet(seg, labeler, fusion=None).to(cfg.device)
    return _evaluate(model, cfg, sources, progress, log)


def evaluate_checkpoint(path: str | Path, sources: Sequence[str] | None = None, *, progress: bool = False,
                        log=None, **overrides) -> Evaluation:
    """An imgpix checkpoint on its own data (or on ``overrides``: data, root, eval_split, resize, device, ...)."""
    from .checkpoint import load_checkpoint

    model, cfg, state = load_checkpoint(path, overrides.get("device", "cpu"))
    cfg = replace(cfg, **overrides)
    if cfg.info.num_classes != model.num_classes:
        where = f" in {cfg.root}" if cfg.root else ""
        raise ValueError(f"{path} was trained on {model.num_classes} classes, but the {cfg.data} data{where} has "
                         f"{cfg.info.num_classes}: evaluate it on data with the classes it was trained on")
    trained = "unfused" if model.fusion is None else f"{model.fusion}-fused"
    evaluation = _evaluate(model, cfg, sources, progress, log)
    evaluation.where = f"{path} (epoch {state['epoch']}, trained {trained}) on {evaluation.where}"
    return evaluation


def _evaluate(model: ImgPixNet, cfg: TrainConfig, sources, progress: bool, log) -> Evaluation:
    loader = _split_loader(cfg, log)
    objects = [c for c in range(model.num_classes) if c not in cfg.protected]
    return evaluate_model(model, loader, _sources(model, cfg, sources), device=cfg.device, progress=progress,
                          tau=cfg.tau, objects=objects, where=_where(cfg, len(loader.dataset)))
