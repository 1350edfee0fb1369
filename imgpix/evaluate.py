"""Evaluation: run the networks once per batch, fuse the logits with any number of label sources,
accumulate one :class:`~imgpix.metrics.ConfusionMatrix` (and optional per-image records) per source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from .labels import LabelSource, from_masks
from .metrics import ConfusionMatrix, labeler_scores, per_image_confusion
from .models.fused import ImgPixNet


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
                weights = presence.double().cpu() @ affinity[source.name].double().cpu() if source.name in affinity else None
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
