"""FCN evaluation: one confusion matrix per dataset -> PA, MPA, FWAA, MIOU.

With ``cm[t, p]`` counting pixels of true class t predicted as p:
PA = trace/total; MPA = nanmean(diag/row); IoU_c = diag/(row + col - diag);
MIOU = nanmean(IoU) (a class absent from truth and prediction is left out, one
predicted but absent from truth counts 0); FWAA = sum over rows > 0 of
(row/total) * IoU_c, FCN's frequency-weighted IU. Scores are fractions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import distributed
from .data.common import IGNORE_INDEX

METRIC_NAMES = ("PA", "MPA", "FWAA", "MIOU")


def per_image_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """[B, N, N] int64 counts of each image of a batch [B, ...] (rows: truth, columns: prediction; ignored
    pixels skipped)."""
    check_prediction(pred, target, num_classes, ignore_index)
    batch = pred.shape[0]
    pred, target = pred.reshape(batch, -1).long(), target.reshape(batch, -1).long()
    valid = target != ignore_index
    index = (torch.arange(batch, device=pred.device)[:, None] * num_classes + target) * num_classes + pred
    counts = torch.bincount(index[valid], minlength=batch * num_classes * num_classes)
    return counts.view(batch, num_classes, num_classes)


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """[N, N] int64 counts over all pixels of ``pred`` / ``target`` (any one shape); ignored pixels skipped.

    Sum the matrices of all batches before calling :func:`scores`.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    return per_image_confusion(pred.reshape(1, -1), target.reshape(1, -1), num_classes, ignore_index)[0]


def check_prediction(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """ValueError unless ``pred`` and ``target`` have one shape and hold class ids (``target`` may be ignored)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    labelled = target != ignore_index
    if bool((labelled & ((target < 0) | (target >= num_classes))).any()):
        raise ValueError(f"target values must lie in [0, {num_classes}) or equal {ignore_index}")
    if bool((labelled & ((pred < 0) | (pred >= num_classes))).any()):  # ignored pixels: any prediction
        raise ValueError(f"pred values must lie in [0, {num_classes})")


def batched_scores(cm) -> dict:
    """PA, MPA, FWAA, MIOU (fractions) and per-class ``IoU`` of confusion matrices [..., N, N], one value
    (or IoU row) per matrix; NaN where a matrix is empty."""
    cm = np.asarray(cm.cpu() if isinstance(cm, Tensor) else cm, dtype=np.float64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion matrices must be square, got shape {cm.shape}")
    diag, rows, cols = np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), cm.sum(-2)
    total = rows.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = diag / (rows + cols - diag)
        return {"PA": diag.sum(-1) / total,
                "MPA": np.nanmean(diag / rows, -1),
                "FWAA": np.where(rows > 0, rows / total[..., None] * iou, 0.0).sum(-1),
                "MIOU": np.nanmean(iou, -1),
                "IoU": iou}


def scores(cm) -> dict:
    """PA, MPA, FWAA, MIOU (fractions in [0, 1]) and per-class ``IoU`` of one confusion matrix."""
    cm = np.asarray(cm.cpu() if isinstance(cm, Tensor) else cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if cm.sum() == 0:
        raise ValueError("confusion matrix is empty: no labelled pixels")
    values = batched_scores(cm)
    return {**{name: float(values[name]) for name in METRIC_NAMES}, "IoU": values["IoU"]}


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches (and processes); ``compute`` gives :func:`scores`."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device="cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> "ConfusionMatrix":
        """Add the pixels of predicted class ids ``pred`` against ``target`` (same shape)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.matrix.device)
        return self

    def add_counts(self, counts: Tensor) -> "ConfusionMatrix":
        """Add an [N, N] count matrix computed elsewhere (e.g. summed per-image matrices)."""
        if counts.shape != self.matrix.shape:
            raise ValueError(f"counts must have shape {tuple(self.matrix.shape)}, got {tuple(counts.shape)}")
        self.matrix += counts.to(self.matrix.device, torch.int64)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class ones")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts of every process of a distributed run (no-op in a single process)."""
        self.matrix = distributed.all_reduce_sum(self.matrix)
        return self

    def compute(self) -> dict:
        return scores(self.matrix)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """``AP = sum_t (R_t - R_t') P_t`` over the distinct scores t, high to low (t' the previous one;
    predicted: score >= t), as sklearn and torchmetrics define it. ``positive`` needs a True."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(positive[order])
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    hits, predicted = hits[last_of_tie], np.flatnonzero(last_of_tie) + 1
    recall = hits / hits[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * hits / predicted))


def labeler_scores(scores: Tensor, present: Tensor, tau: float, classes=None) -> dict:
    """Image labeler quality: ``mAP`` (mean over ``classes`` with a positive image of the average
    precision of ``scores`` [B,N] against ``present`` [B,N]), and micro ``precision`` / ``recall``
    of ``scores >= tau`` over those classes (all classes when ``classes`` is None)."""
    from .labels import check_tau

    tau = check_tau(tau)
    classes = list(range(scores.shape[1])) if classes is None else list(classes)
    scores, present = scores[:, classes].float(), present[:, classes].long()
    aps = [average_precision(scores[:, c].numpy(), present[:, c].bool().numpy()) for c in range(len(classes))
           if bool(present[:, c].any())]
    predicted = scores >= tau
    hits = int((predicted & present.bool()).sum())
    return {"mAP": float(np.mean(aps)) if aps else float("nan"), "tau": float(tau),
            "precision": hits / max(int(predicted.sum()), 1), "recall": hits / max(int(present.sum()), 1),
            "classes": len(aps)}

