"""Image-level labels: where they come from (LabelSource), from masks, by threshold, corrupted (Cases 1-3)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from .data.common import IGNORE_INDEX

DEFAULT_TAU = 0.25
SOURCE_KINDS = ("none", "oracle", "labeler", "noisy")


def check_tau(tau) -> float:
    """``tau`` as a float in [0, 1], else ValueError."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must be a number in [0, 1], got {tau!r}")
    return float(tau)


def from_masks(masks: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Presence of each class in each mask: [B,H,W] (or [H,W]) -> [B,N] bool."""
    if masks.dim() == 2:
        masks = masks.unsqueeze(0)
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape [B, H, W], got {tuple(masks.shape)}")
    if masks.is_floating_point():
        raise ValueError("masks must hold integer class ids")
    flat = masks.flatten(1).long()  # [B, H*W], also for B = 0
    valid = flat != ignore_index
    if bool(((flat < 0) | (flat >= num_classes))[valid].any()):
        raise ValueError(f"mask values must lie in [0, {num_classes}) or equal {ignore_index}")
    presence = torch.zeros(masks.shape[0], num_classes + 1, dtype=torch.bool, device=masks.device)
    presence.scatter_(1, torch.where(valid, flat, num_classes), True)
    return presence[:, :num_classes]


def threshold(scores: Tensor, tau: float) -> Tensor:
    """Binary labels ``scores >= tau`` for classifier scores in [0, 1]."""
    return scores >= check_tau(tau)


class LabelClampWarning(UserWarning):
    """A non-strict :class:`LabelSource` clamped m or k on some images (see :func:`clamped`)."""


def corrupt(
    labels: Tensor,
    m: int = 0,
    k: int | None = None,
    generator: torch.Generator | None = None,
    protected: Iterable[int] = (),
    outlier_weights: Tensor | None = None,
    *,
    strict: bool = True,
) -> Tensor:
    """Cases 1-3: keep k of each row's n true classes and add m outliers.

    ``k=None`` keeps all true classes (Case 1), ``m=0`` adds none (Case 2); both at
    once is Case 3. Classes in ``protected`` (e.g. background) are outside the game:
    kept when present, never added, and not counted by n, k or m. Outliers are drawn
    without replacement among the absent unprotected classes, uniformly or with
    probability proportional to ``outlier_weights`` ([N] or [B, N], >= 0; classes of
    weight 0 are drawn last). Returns a new bool tensor; deterministic for a seeded
    ``generator``.

    Bounds per row, with U = N - |protected| and n the row's unprotected true classes:
    ``k <= n`` and ``m <= U - n``. ``strict=True`` raises ``ValueError`` naming the first
    row that breaks one; ``strict=False`` clamps that row (keeps ``min(k, n)``, adds
    ``min(m, U - n)``) and :func:`clamped` says which rows it clamped. ``m > U`` or
    ``k > U`` fits no row and raises either way.
    """
    _check_m_k(m, k)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, N], got {tuple(labels.shape)}")
    source = labels.bool().cpu()
    weights = _outlier_weights(outlier_weights, source.shape)
    protected_mask = _protected_mask(protected, source.shape[1])
    _check_bounds(source, m, k, protected_mask, strict)
    noisy = torch.zeros_like(source)
    for row, present in enumerate(source):
        noisy[row] = _corrupt_row(present, m, k, generator, protected_mask, weights[row])
    return noisy.to(labels.device)


def clamped(labels: Tensor, m: int = 0, k: int | None = None, protected: Iterable[int] = ()) -> Tensor:
    """[B] bool: the rows of ``labels`` [B, N] where :func:`corrupt` with ``strict=False`` clamps m or k.

    A row is clamped when ``k > n`` (it keeps its n true classes) or ``m > U - n`` (it gets
    every absent unprotected class), with n and U as in :func:`corrupt`.
    """
    _check_m_k(m, k)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, N], got {tuple(labels.shape)}")
    _, few, full = _clamps(labels.bool().cpu(), m, k, _protected_mask(protected, labels.shape[1]))
    return few | full


def _check_m_k(m: int, k: int | None) -> None:
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 (or None to keep all), got {k}")


def _clamps(present: Tensor, m: int, k: int | None, protected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row [B]: n (unprotected true classes), whether ``k > n`` and whether ``m > U - n``."""
    n, free = (present & ~protected).sum(dim=1), int((~protected).sum())
    return n, (n < k) if k is not None else torch.zeros_like(n, dtype=torch.bool), m > free - n


def _check_bounds(present: Tensor, m: int, k: int | None, protected: Tensor, strict: bool) -> None:
    """ValueError when m or k fits no row (``> U``) or, if ``strict``, the first row it does not fit."""
    free = int((~protected).sum())
    note = f"N={present.shape[1]} classes, {present.shape[1] - free} protected"
    if m > free:
        raise ValueError(f"m={m} outliers exceed the U={free} classes that can be outliers ({note}): "
                         "no image can get them (bound m <= U)")
    if k is not None and k > free:
        raise ValueError(f"k={k} exceeds the U={free} unprotected classes ({note}): no image has k true classes "
                         "to keep (bound k <= U; k=None keeps all)")
    if not strict:
        return
    n, few, full = _clamps(present, m, k, protected)
    if not bool((few | full).any()):
        return
    row = int((few | full).nonzero()[0])
    n = int(n[row])
    if few[row]:
        raise ValueError(f"k={k} exceeds the n={n} unprotected true classes of image {row} (bound k <= n); "
                         "strict=False keeps all n of them")
    raise ValueError(f"m={m} exceeds the {free - n} absent unprotected classes of image {row} "
                     f"(bound m <= U - n = {free} - {n}); strict=False adds all of them")


def _protected_mask(protected: Iterable[int], num_classes: int) -> Tensor:
    ids = [int(c) for c in protected]
    if any(not 0 <= c < num_classes for c in ids):
        raise ValueError(f"protected classes must lie in [0, {num_classes}), got {ids}")
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[ids] = True
    return mask


def _outlier_weights(weights: Tensor | None, shape: torch.Size) -> Tensor:
    if weights is None:
        return torch.ones(shape, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
    if weights.dim() not in (1, 2) or weights.shape[-1] != shape[1] or (
            weights.dim() == 2 and weights.shape[0] not in (1, shape[0])):
        raise ValueError(f"outlier_weights must have shape [N] or [B, N] = {tuple(shape)}, got {tuple(weights.shape)}")
    weights = weights.expand(shape)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("outlier_weights must be finite and >= 0")
    return weights


def _corrupt_row(present: Tensor, m: int, k, generator, protected: Tensor, weights: Tensor) -> Tensor:
    true_ids = present.nonzero().flatten()
    others = true_ids[~protected[true_ids]]
    others = others[torch.randperm(len(others), generator=generator)]
    kept = torch.cat([true_ids[protected[true_ids]], others if k is None else others[:k]])
    absent = (~present & ~protected).nonzero().flatten()
    added = absent[_weighted_order(weights[absent], generator)[:m]]
    row = torch.zeros_like(present)
    row[kept] = True
    row[added] = True
    return row


def _weighted_order(weights: Tensor, generator) -> Tensor:
    """A random order of the candidates: successive draws without replacement, probability ~ weight."""
    if len(weights) == 0:
        return torch.zeros(0, dtype=torch.long)
    if bool((weights == weights[0]).all()):
        return torch.randperm(len(weights), generator=generator)
    keys = torch.rand(len(weights), generator=generator, dtype=torch.float64).log() / weights  # Efraimidis-Spirakis
    return torch.argsort(keys, descending=True)


@dataclass(frozen=True)
class LabelSource:
    """Where an image's label vector comes from.

    ``none`` (unfused), ``oracle`` (from the masks), ``labeler`` (the labeler's scores
    thresholded at ``tau``), ``noisy`` (oracle labels corrupted by :func:`corrupt` with
    ``m``, ``k``, ``protected``; its noise stream is seeded by ``seed``). ``protected``
    classes (e.g. background) are always kept by ``labeler`` and ``noisy``.

    ``strict`` (noisy only): True refuses, in :meth:`resolve`, an image whose n true classes
    cannot give k kept or m outliers (``ValueError`` naming m or k, the image and the bound).
    False (the default, so that Cases 1-3 run on every image of a dataset) clamps such an image
    as :func:`corrupt` does, warns with :class:`LabelClampWarning`, and :meth:`clamped` says
    which images were clamped. An m or k that fits no image raises either way.
    """

    kind: str = "oracle"
    tau: float = DEFAULT_TAU
    m: int = 0
    k: int | None = None
    seed: int = 0
    protected: tuple[int, ...] = ()
    tag: str = ""  # appended to ``name``: tells apart sources that differ in what ``resolve`` is given
    strict: bool = False

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"label source must be one of {SOURCE_KINDS}, got {self.kind!r}")
        check_tau(self.tau)
        _check_m_k(self.m, self.k)
        object.__setattr__(self, "protected", tuple(int(c) for c in self.protected))

    @classmethod
    def parse(cls, text: str, **defaults) -> "LabelSource":
        """``none``, ``oracle``, ``labeler`` / ``labeler@0.3``, ``noisy:m=3,k=1`` (k=all keeps every class)."""
        if not isinstance(text, str):
            raise ValueError(f"a label source is a string: none, oracle, labeler[@tau] or noisy:m=M,k=K "
                             f"(e.g. 'noisy:m=3,k=1'), got {type(text).__name__} {text!r}")
        text = text.strip()
        labeler = re.fullmatch(r"labeler(?:@([0-9.]+))?", text)
        noisy = re.fullmatch(r"noisy:m=(\d+),k=(\d+|all)", text)
        if text in ("none", "oracle"):
            return cls(text, **defaults)
        if labeler:
            return cls("labeler", **{**defaults, **({"tau": float(labeler[1])} if labeler[1] else {})})
        if noisy:
            return cls("noisy", m=int(noisy[1]), k=None if noisy[2] == "all" else int(noisy[2]), **defaults)
        raise ValueError(f"label source {text!r} is not one of: none, oracle, labeler[@tau], noisy:m=M,k=K")

    @property
    def fused(self) -> bool:
        return self.kind != "none"

    @property
    def name(self) -> str:
        """Short display name, e.g. ``unfused``, ``oracle``, ``labeler@0.3``, ``noisy(m=3,k=1)``."""
        if self.kind == "labeler":
            name = f"labeler@{self.tau:g}"
        elif self.kind == "noisy":
            name = f"noisy(m={self.m},k={'all' if self.k is None else self.k})"
        else:
            name = "unfused" if self.kind == "none" else "oracle"
        return f"{name}[{self.tag}]" if self.tag else name

    def generator(self) -> torch.Generator | None:
        """A fresh noise stream for this source (None when it draws no noise)."""
        return torch.Generator().manual_seed(self.seed) if self.kind == "noisy" else None

    def resolve(self, num_classes: int, masks: Tensor | None = None, scores: Tensor | None = None,
                generator: torch.Generator | None = None, outlier_weights: Tensor | None = None,
                presence: Tensor | None = None) -> Tensor | None:
        """The [B, N] bool labels to fuse, or None for the unfused prediction.

        ``presence``: ``from_masks(masks, num_classes)`` when the caller has it already. A noisy
        source draws from ``generator``, or without one from a fresh stream seeded by ``seed`` (so the
        same call gives the same labels); it refuses or clamps the images m or k does not fit (see ``strict``)."""
        if self.kind == "none":
            return None
        if self.kind == "labeler":
            if scores is None:
                raise ValueError("label source 'labeler' needs labeler scores: the model has no labeler")
            labels = threshold(scores, self.tau)
            # e.g. background: not an image-level class, always kept
            labels[:, _protected_mask(self.protected, labels.shape[1]).to(labels.device)] = True
            return labels
        oracle = self._oracle(num_classes, masks, presence)
        if self.kind == "oracle":
            return oracle
        generator = self.generator() if generator is None else generator
        labels = corrupt(oracle, self.m, self.k, generator, self.protected, outlier_weights, strict=self.strict)
        self._warn_clamped(oracle)
        return labels

    def clamped(self, num_classes: int, masks: Tensor | None = None, presence: Tensor | None = None) -> Tensor:
        """[B] bool: the images whose m or k :meth:`resolve` clamps (all False but for a non-strict noisy source)."""
        oracle = self._oracle(num_classes, masks, presence)
        if self.kind != "noisy" or self.strict:
            return torch.zeros(oracle.shape[0], dtype=torch.bool)
        return clamped(oracle, self.m, self.k, self.protected)

    def _oracle(self, num_classes: int, masks: Tensor | None, presence: Tensor | None) -> Tensor:
        if masks is None and presence is None:
            raise ValueError(f"label source {self.name!r} needs the ground-truth masks")
        return from_masks(masks, num_classes) if presence is None else presence

    def _warn_clamped(self, oracle: Tensor) -> None:
        _, few, full = _clamps(oracle.bool().cpu(), self.m, self.k, _protected_mask(self.protected, oracle.shape[1]))
        reasons = ["k > n (they keep their n true classes)"] * bool(few.any())
        reasons += ["m > U - n (they get every absent unprotected class)"] * bool(full.any())
        if reasons and not self.strict:
            warnings.warn(f"label source {self.name}: clamped on the images where {' or '.join(reasons)}; "
                          "LabelSource.clamped says which, strict=True refuses them", LabelClampWarning, stacklevel=3)
