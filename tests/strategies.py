"""Hypothesis strategies and float64 references shared by the core tests.

Fusion cases (``cases``): tensors are drawn from a seeded ``torch.Generator``
(fast) while the shape, scale, label sets and pattern are drawn by hypothesis
(shrinkable). Image-level label sets (``label_sets``, ``class_subsets``,
``outlier_weights``) are drawn element by element: they are small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

# logit scales, including the extreme ones the fusion contract names
SCALES = (1e-3, 1.0, 5.0, 30.0, 1e2, 1e4)
MODERATE_SCALES = (1e-3, 1.0, 5.0)


@dataclass
class Case:
    logits: torch.Tensor  # [B, N, H, W]
    labels: torch.Tensor  # [N] or [B, N]
    scale: float

    @property
    def shape(self):
        return tuple(self.logits.shape)


@st.composite
def label_rows(draw, rows: int, n: int, *, soft: bool = False, min_on: int = 1) -> torch.Tensor:
    """A [rows, n] float64 label matrix; each row has at least ``min_on`` classes on."""
    out = []
    for _ in range(rows):
        if soft:
            value = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.01, 1.0))
        else:
            value = st.sampled_from([0.0, 1.0])
        row = draw(st.lists(value, min_size=n, max_size=n))
        while sum(v > 0 for v in row) < min_on:
            row[draw(st.integers(0, n - 1))] = 1.0 if not soft else draw(st.floats(0.01, 1.0))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


@st.composite
def cases(
    draw,
    *,
    soft: bool | None = False,
    scales=SCALES,
    dtype: torch.dtype = torch.float32,
    min_on: int = 1,
    max_n: int = 25,
) -> Case:
    """Logits [B,N,H,W] (B 1..3, N 2..max_n, H,W 1..4) and labels in [N] or [B,N] form.

    ``soft=None`` lets hypothesis choose binary or soft labels.
    """
    b = draw(st.integers(1, 3))
    n = draw(st.integers(2, max_n))
    h = draw(st.integers(1, 4))
    w = draw(st.integers(1, 4))
    scale = draw(st.sampled_from(scales))
    seed = draw(st.integers(0, 2**31 - 1))
    pattern = draw(st.sampled_from(["randn", "ties", "constant", "saturated"]))
    gen = torch.Generator().manual_seed(seed)
    if pattern == "randn":
        z = torch.randn(b, n, h, w, generator=gen, dtype=torch.float64) * scale
    elif pattern == "ties":  # few distinct values -> many exact ties
        z = torch.randint(-2, 3, (b, n, h, w), generator=gen).double() * scale
    elif pattern == "constant":
        z = torch.full((b, n, h, w), scale, dtype=torch.float64)
    else:  # +-scale only
        z = (torch.randint(0, 2, (b, n, h, w), generator=gen).double() * 2 - 1) * scale
    if soft is None:
        soft = draw(st.booleans())
    one_d = draw(st.booleans())
    labels = draw(label_rows(1 if one_d else b, n, soft=soft, min_on=min_on))
    if one_d:
        labels = labels[0]
    if not soft:
        labels = labels.to(draw(st.sampled_from([torch.bool, torch.float32, torch.float64])))
    return Case(logits=z.to(dtype), labels=labels, scale=scale)


# ----------------------------------------------------------------- references
def full_labels(labels: torch.Tensor, batch: int) -> torch.Tensor:
    """Labels as a [B, N] float64 tensor (broadcasting the [N] form)."""
    lab = labels.double()
    if lab.dim() == 1:
        lab = lab.unsqueeze(0).expand(batch, -1)
    return lab


def filled(labels: torch.Tensor, batch: int) -> torch.Tensor:
    """[B, N] float64 labels with the empty-row rule applied (all-zero row -> ones)."""
    lab = full_labels(labels, batch)
    empty = lab.sum(1, keepdim=True) == 0
    return torch.where(empty, torch.ones_like(lab), lab)


def ref_fuse(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 ("dot") in float64: mask, renormalise; zero-mass pixels -> L / sum L."""
    p = probs.double()
    w = filled(labels, p.shape[0])[:, :, None, None]
    num = p * w
    tot = num.sum(1, keepdim=True)
    fallback = (w / w.sum(1, keepdim=True)).expand_as(num)
    return torch.where(tot > 0, num / torch.where(tot > 0, tot, torch.ones_like(tot)), fallback)


def ref_fuse_add(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Addition ablation in float64: (P + L) / (1 + sum L) (empty row -> P)."""
    p = probs.double()
    lab = full_labels(labels, p.shape[0])[:, :, None, None]
    return (p + lab) / (1 + lab.sum(1, keepdim=True))


def ref_log(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 in log space, float64: softmax, mask by L, renormalise, log."""
    z = logits.double()
    w = filled(labels, z.shape[0])[:, :, None, None]
    # independent of the library's log_softmax(z + log L) formulation:
    # explicit max-shifted softmax over the selected classes only.
    present = w > 0
    zmax = torch.where(present, z, torch.full_like(z, float("-inf"))).amax(1, keepdim=True).detach()
    shifted = torch.where(present, z, zmax) - zmax  # <= 0 on selected classes, 0 elsewhere
    e = torch.where(present, torch.exp(shifted) * w, torch.zeros_like(z))
    logp = shifted + torch.log(torch.where(present, w, torch.ones_like(w))) - torch.log(e.sum(1, keepdim=True))
    return torch.where(w > 0, logp, torch.full_like(z, float("-inf")))


# ----------------------------------------------------------------- image-level label sets
@st.composite
def label_sets(draw, *, max_b: int = 4, min_n: int = 1, max_n: int = 20) -> torch.Tensor:
    """A [B, N] bool matrix of the classes present in B images (rows may be empty or full)."""
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(min_n, max_n))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=b, max_size=b))
    return torch.tensor(rows, dtype=torch.bool)


def class_subsets(n: int, max_size: int = 3):
    """Distinct class ids of ``range(n)`` (e.g. the protected classes of a :func:`corrupt` call)."""
    return st.lists(st.integers(0, n - 1), unique=True, max_size=min(max_size, n))


@st.composite
def outlier_weights(draw, batch: int, n: int) -> torch.Tensor | None:
    """None (uniform), or float64 weights >= 0 of shape [N] or [B, N], some of them exactly 0."""
    form = draw(st.sampled_from(["uniform", "row", "per_image"]))
    if form == "uniform":
        return None
    value = st.one_of(st.just(0.0), st.floats(1e-3, 10.0))
    rows = 1 if form == "row" else batch
    weights = torch.tensor(draw(st.lists(st.lists(value, min_size=n, max_size=n), min_size=rows, max_size=rows)),
                           dtype=torch.float64)
    return weights[0] if form == "row" else weights


# ----------------------------------------------------------------- segmentations
@st.composite
def segmentations(draw, *, max_classes: int = 6, ignore_index: int = 255):
    """``(N, pred, target)``: [B,H,W] class ids, ~60 % of ``pred`` right, some ``target`` pixels
    ``ignore_index`` (never all of them)."""
    n = draw(st.integers(2, max_classes))
    b = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    target = torch.randint(0, n, (b, h, w), generator=gen)
    pred = torch.where(torch.rand(b, h, w, generator=gen) < 0.6, target, torch.randint(0, n, (b, h, w), generator=gen))
    ignore = torch.rand(b, h, w, generator=gen) < draw(st.sampled_from([0.0, 0.2]))
    target[ignore] = ignore_index
    if (target == ignore_index).all():
        target[0, 0, 0] = 0
    return n, pred, target
