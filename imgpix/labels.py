"""Image-level labels: from masks, by threshold, and corrupted as in Cases 1-3."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

IGNORE_INDEX = 255


def from_masks(masks: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Presence of each class in each mask: [B,H,W] (or [H,W]) -> [B,N] bool."""
    if masks.dim() == 2:
        masks = masks.unsqueeze(0)
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape [B, H, W], got {tuple(masks.shape)}")
    if masks.is_floating_point():
        raise ValueError("masks must hold integer class ids")
    flat = masks.reshape(masks.shape[0], -1).long()
    valid = flat != ignore_index
    if bool(((flat < 0) | (flat >= num_classes))[valid].any()):
        raise ValueError(f"mask values must lie in [0, {num_classes}) or equal {ignore_index}")
    presence = torch.zeros(masks.shape[0], num_classes + 1, dtype=torch.bool, device=masks.device)
    presence.scatter_(1, torch.where(valid, flat, num_classes), True)
    return presence[:, :num_classes]


def threshold(scores: Tensor, tau: float) -> Tensor:
    """Binary labels ``scores >= tau`` for classifier scores in [0, 1]."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    return scores >= tau


def corrupt(
    labels: Tensor,
    m: int = 0,
    k: int | None = None,
    generator: torch.Generator | None = None,
    protected: Iterable[int] = (),
) -> Tensor:
    """Cases 1-3: keep ``min(k, n)`` of each row's n true classes, add ``min(m, N - n)`` outliers.

    ``k=None`` keeps all true classes (Case 1), ``m=0`` adds none (Case 2);
    both at once is Case 3. Classes in ``protected`` (e.g. background) that
    are present are always kept and count toward k. Returns a new bool tensor;
    the input is untouched. Deterministic for a seeded ``generator``.
    """
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 (or None to keep all), got {k}")
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, N], got {tuple(labels.shape)}")
    source = labels.bool().cpu()
    protected_mask = torch.zeros(source.shape[1], dtype=torch.bool)
    protected_mask[list(protected)] = True
    noisy = torch.zeros_like(source)
    for row, present in enumerate(source):
        noisy[row] = _corrupt_row(present, m, k, generator, protected_mask)
    return noisy.to(labels.device)


def _corrupt_row(present: Tensor, m: int, k, generator, protected_mask: Tensor) -> Tensor:
    true_ids = present.nonzero().flatten()
    keep_first = true_ids[protected_mask[true_ids]]
    others = true_ids[~protected_mask[true_ids]]
    others = others[torch.randperm(len(others), generator=generator)]
    n_keep = len(true_ids) if k is None else max(min(k, len(true_ids)), len(keep_first))
    kept = torch.cat([keep_first, others])[:n_keep]
    absent = (~present).nonzero().flatten()
    added = absent[torch.randperm(len(absent), generator=generator)[:m]]
    row = torch.zeros_like(present)
    row[kept] = True
    row[added] = True
    return row
