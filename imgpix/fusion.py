"""Eq. 1: fusing pixel-wise probabilities with image-level labels.

``P'_c = P_c * L_c / sum_j P_j * L_j`` per pixel ("dot" fusion), or the
paper's addition ablation ``P'_c = (P_c + L_c) / sum_j (P_j + L_j)``.

Rules shared by both functions:

* ``labels`` are weights in [0, 1], shape [B, N] or [N] (broadcast over the
  batch); binary labels select classes, soft labels re-weight them.
* **Empty label rows.** A label row that selects no class (all zeros, e.g.
  after a high threshold ``tau``) carries no information, so that image falls
  back to the unfused prediction ``P``. Never NaN.
* **Non-finite input.** NaN or infinite probabilities (``fuse``) or logits
  (``fuse_log``) raise ``ValueError``: one contract for one equation.
* In probability space a pixel whose probabilities are exactly 0 on every
  selected class (possible only for hand-made ``P``) gets ``L / sum(L)``.
* **Empty batches.** A batch of 0 images (or of 0 pixels) gives an empty
  result of the input's shape and dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from imgpix.fast_fusion import fast_masked_log_softmax

SUM_TOLERANCE = 1e-3
FUSION_MODES = ("dot", "add")
LOG_FUSION_MODES = (*FUSION_MODES, "logit_add")
LOGIT_ADD_BETA = 2.0  # logit boost of a labelled class in "logit_add": a prior odds factor of e^2 ~ 7.4


def check_labels(labels: Tensor, batch: int, num_classes: int) -> Tensor:
    """Validate labels and return them as a [B, N] float tensor."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() == 1:
        labels = labels.unsqueeze(0).expand(batch, -1)
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, N] or [N], got {tuple(labels.shape)}")
    if labels.shape[1] != num_classes:
        raise ValueError(f"label length {labels.shape[1]} != number of classes N={num_classes}")
    if labels.shape[0] != batch:
        raise ValueError(f"label batch size {labels.shape[0]} != prediction batch size {batch}")
    if labels.dtype != torch.bool:
        if labels.is_floating_point() and bool(torch.isnan(labels).any()):
            raise ValueError("labels contain NaN")
        if bool((labels < 0).any()) or bool((labels > 1).any()):
            raise ValueError("labels must lie in [0, 1]; got values outside that range")
    return labels


def check_maps(maps: Tensor, name: str) -> None:
    if not isinstance(maps, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 4:
        raise ValueError(f"{name} must have shape [B, N, H, W], got {tuple(maps.shape)}")


def _with_empty_rows_filled(labels: Tensor) -> Tensor:
    """Labels as float with each all-zero row replaced by ones (the fallback rule)."""
    weights = labels.double() if labels.dtype == torch.float64 else labels.float()
    empty = weights.sum(dim=1, keepdim=True) == 0
    return torch.where(empty, torch.ones_like(weights), weights)


def fuse(probs: Tensor, labels: Tensor, *, mode: str = "dot") -> Tensor:
    """Eq. 1: fuse probabilities ``probs`` [B,N,H,W] with image labels ``labels``.

    ``mode="dot"`` renormalises ``P * L`` per pixel; ``mode="add"`` renormalises
    ``P + L`` (the paper's Table 3 ablation). Returns a tensor with the shape
    and dtype of ``probs`` (computed in float64). Raises ``ValueError`` on bad shapes, labels outside
    [0, 1], NaN or infinite probabilities, or pixels that are negative or do not sum to 1.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}")
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point torch.Tensor, got {type(probs).__name__}"
                         f"{'' if not isinstance(probs, Tensor) else ' of ' + str(probs.dtype)}")
    check_maps(probs, "probs")
    batch, num_classes = probs.shape[:2]
    labels = check_labels(labels, batch, num_classes)
    work = probs.double()  # float32 products of tiny probabilities would round as subnormals
    if not bool(torch.isfinite(work).all()):
        raise ValueError("probs contain NaN or infinite values")
    if bool((work < 0).any()):
        raise ValueError("probs contain negative values")
    tolerance = max(SUM_TOLERANCE, num_classes * torch.finfo(probs.dtype).eps)
    if bool(((work.sum(dim=1) - 1).abs() > tolerance).any()):
        raise ValueError(f"probs must sum to 1 over the class dimension (tolerance {tolerance:.3g})")
    if mode == "add":  # an empty row adds nothing: P itself, as the fallback rule asks
        weights = labels.float().to(work.device)[:, :, None, None]
        fused = work + weights
    else:
        weights = _with_empty_rows_filled(labels).to(work.device)[:, :, None, None]
        fused = work * weights
    total = fused.sum(dim=1, keepdim=True)
    fallback = (weights / weights.sum(dim=1, keepdim=True)).expand_as(fused)
    fused = torch.where(total > 0, fused / torch.where(total > 0, total, torch.ones_like(total)), fallback)
    return fused.to(probs.dtype)


def fuse_log(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. 1 in log space: ``log P'`` from ``logits`` [B,N,H,W] and labels.

    Equals ``log(fuse(softmax(logits), labels))`` computed as the masked
    ``log_softmax(logits + log L)``: ``-inf`` where ``L = 0``, finite elsewhere,
    never NaN (also for logits of +-1e4 and in float16/bfloat16, which are
    computed in float32). The gradient w.r.t. logits of absent classes is 0.
    NaN or infinite logits raise ``ValueError``, as NaN probabilities do in :func:`fuse`.
    """
    check_maps(logits, "logits")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if not bool(torch.isfinite(logits.sum(dtype=torch.float32))):  # NaN/inf iff some logit is (or |sum| > 3e38)
        raise ValueError("logits contain NaN or infinite values")
    batch, num_classes = logits.shape[:2]
    labels = check_labels(labels, batch, num_classes)
    if logits.numel() == 0:  # nothing to fuse; the kernel's reductions need a non-empty tensor
        return logits.clone()
    weights = _with_empty_rows_filled(labels).to(logits.device)[:, :, None, None]
    return fast_masked_log_softmax(logits, weights)  # = masked_log_softmax, on present channels only


def masked_log_softmax(logits: Tensor, weights: Tensor) -> Tensor:
    """Reference form of Eq. 1 in log space: ``log_softmax(z + log L)`` over dim 1.

    ``weights`` [B,N,1,1] must have no all-zero row. The ``where`` (not an
    addition of ``-inf``) keeps the gradient of absent classes at exactly 0.
    """
    present = weights > 0
    shifted = torch.where(present, logits + weights.log().to(logits.dtype), float("-inf"))
    return torch.log_softmax(shifted, dim=1)


def fused_log_probs(logits: Tensor, labels: Tensor | None, mode: str = "dot") -> Tensor:
    """``log P'`` for ``mode``: "dot" (Eq. 1), "add" (the paper's ``P + L`` ablation) or "logit_add"
    (``log_softmax(z + LOGIT_ADD_BETA * L)``, addition in logit space); ``labels=None``: ``log_softmax(z)``."""
    if mode not in LOG_FUSION_MODES:
        raise ValueError(f"mode must be one of {LOG_FUSION_MODES}, got {mode!r}")
    logits = logits.float()
    if labels is None:
        return torch.log_softmax(logits, dim=1)
    if mode == "logit_add":
        weights = check_labels(labels, *logits.shape[:2]).to(logits.device, logits.dtype)
        return torch.log_softmax(logits + LOGIT_ADD_BETA * weights[:, :, None, None], dim=1)
    if mode == "add":  # log((P + L) / (1 + sum L)) in log space: float32 rounding of P + L would tie classes
        weights = check_labels(labels, *logits.shape[:2]).to(logits.device, logits.dtype)
        if not bool(torch.isfinite(logits.sum())):
            raise ValueError("logits contain NaN or infinite values")
        log_sum = torch.logaddexp(torch.log_softmax(logits, dim=1), weights.log()[:, :, None, None])
        return log_sum - torch.log1p(weights.sum(dim=1))[:, None, None, None]
    return fuse_log(logits, labels)

