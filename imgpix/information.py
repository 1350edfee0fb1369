"""Measured information on predictions: the nats image labels remove, per pixel and per image.

At a pixel whose true class y is kept by the labels L, the Eq. 1 fusion ``P' = P*L / sum(P*L)`` obeys
the exact identity

    CE(P, y) - CE(P', y) = -log sum_{c in L} P_c        (the nats the labels remove).

For a uniform P (an uninformed network) this is ``log(N/|L|)``: Eq. 6 with |L| = n, Eq. 10 with
|L| = n + m; there ``CE(P) = log N`` (Eq. 4) and ``CE(P') = log |L|`` (Eqs. 5, 9, 11, 13), and Eqs.
12 and 14 are differences of those. For a trained network the same quantities are measurements
that the theory predicts.

Labels follow :mod:`imgpix.fusion`: shape [B, N] or [N], bool, {0, 1} or weights in [0, 1]. Here a
class is *kept* when its weight is > 0 (soft weights count as presence; their re-weighting is not
measured), and P' is the Eq. 1 "dot" fusion (``imgpix.fusion.fuse_log``), not the "add" or
"logit_add" ablations. An all-zero row keeps every class (the fallback rule: that image is unfused), so it
removes nothing. Float16/bfloat16 logits are computed in float32, float64 in float64.

**Logits, not probabilities.** Every function takes logits z (softmax(z) = P). Input that looks like
probabilities is refused with ``ValueError``: every value in [0, 1] and every pixel summing to 1 over
the classes (to :data:`imgpix.fusion.SUM_TOLERANCE`). The rule also refuses the few logits that look so:
one-hot logits and the constant logit 1/N at every class (whose softmax is uniform, as that of any
constant, e.g. the all-zero logits of an untrained net, which pass). Pass ``probs.log()`` instead
(``probs.clamp_min(1e-12).log()`` where some probability is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data.common import IGNORE_INDEX
from .fusion import SUM_TOLERANCE, check_labels, check_maps
from .labels import from_masks


def _logits(logits: Tensor) -> Tensor:
    """Checked logits [B,N,H,W] in the dtype the computation uses."""
    check_maps(logits, "logits")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or infinite values")
    if _looks_like_probabilities(logits):
        raise ValueError("logits look like probabilities (every value in [0, 1], every pixel summing to 1 over "
                         "the classes): pass logits, e.g. probs.log() (probs.clamp_min(1e-12).log() where a "
                         "probability is 0)")
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _looks_like_probabilities(z: Tensor) -> bool:
    """Every value of z [B,N,H,W] in [0, 1] and each pixel's sum over the classes within the tolerance of
    :func:`imgpix.fusion.fuse` of 1 (False for an empty tensor)."""
    if z.numel() == 0:
        return False
    low, high = torch.aminmax(z)
    if bool(low < 0) or bool(high > 1):
        return False
    tolerance = max(SUM_TOLERANCE, z.shape[1] * torch.finfo(z.dtype).eps)
    return bool(((z.sum(dim=1, dtype=torch.float64) - 1).abs() <= tolerance).all())


def _kept(labels: Tensor, logits: Tensor) -> Tensor:
    """[B, N] bool: the classes each image's labels keep (weight > 0; an empty row keeps all)."""
    keep = check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device) != 0
    return keep | ~keep.any(dim=1, keepdim=True)


class _LogSumExp:
    """``logsumexp`` over the classes of z [B,N,H,W] split as ``top + log_mass`` (``top`` the max, kept
    [B,1,H,W]; ``log_mass`` [B,H,W]), with ``argmax`` [B,H,W], ``shifted`` = z - top and its exponentials
    ``weights``."""

    def __init__(self, z: Tensor):
        self.top, argmax = z.max(dim=1, keepdim=True)
        self.argmax = argmax.squeeze(1)
        self.shifted = z - self.top
        self.weights = torch.exp(self.shifted)  # 0 where z = -inf
        self.mass = self.weights.sum(dim=1)
        self.log_mass = self.mass.log()

    def entropy(self) -> Tensor:
        """``-sum p log p`` of the softmax [B,H,W], as ``log_mass - sum w (z - top) / sum w`` with
        ``w = exp(z - top)`` (classes at -inf contribute 0)."""
        weighted = (self.weights * self.shifted).nan_to_num_(nan=0.0)  # 0 * -inf -> 0
        return self.log_mass - weighted.sum(dim=1) / self.mass


def _only(z: Tensor, keep: Tensor) -> Tensor:
    """z with the classes ``keep`` [B,N] leaves out set to -inf."""
    return z.masked_fill(~keep[:, :, None, None], float("-inf"))


def _removed(every: _LogSumExp, kept: _LogSumExp) -> Tensor:
    """``-log sum_{c in L} softmax(z)_c`` = logsumexp over all classes - logsumexp over kept ones.

    The maxima are subtracted first, so that large logits (±1e4) do not cost the precision of the
    small difference.
    """
    return ((every.top - kept.top).squeeze(1) + every.log_mass - kept.log_mass).clamp_min(0)  # >= 0 up to rounding


def removed_nats(logits: Tensor, labels: Tensor) -> Tensor:
    """Nats removed by the labels at each pixel, ``-log sum_{c in L} softmax(z)_c``: [B, H, W].

    Equals ``CE(P, y) - CE(P', y)`` at every pixel whose true class y is kept; ``log(N/|L|)``
    for uniform logits. Finite for any finite logits (±1e4 included). Raises ``ValueError`` on
    bad shapes, labels outside [0, 1], non-finite logits or probabilities passed as logits (see the
    module docstring).
    """
    z = _logits(logits)
    return _removed(_LogSumExp(z), _LogSumExp(_only(z, _kept(labels, z))))


def _image_mean(values: Tensor, where: Tensor) -> Tensor:
    """Mean of ``values`` [B,H,W] over the pixels where ``where`` holds, per image (float64; NaN if none)."""
    total = torch.where(where, values, torch.zeros_like(values)).sum(dim=(1, 2), dtype=torch.float64)
    return total / where.sum(dim=(1, 2))


class Audit:
    """:func:`audit` of one batch of ``logits`` [B,N,H,W] against ``target`` [B,H,W] for many label vectors:
    the terms that do not depend on the labels (log P, its entropy and accuracy) are computed once."""

    def __init__(self, logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX):
        self.z = z = _logits(logits)
        batch, num_classes, height, width = z.shape
        if target.shape != (batch, height, width):
            raise ValueError(f"target must have shape {(batch, height, width)}, got {tuple(target.shape)}")
        target = target.to(z.device)
        self.truth = from_masks(target, num_classes, ignore_index)
        self.valid = target != ignore_index
        self.y = torch.where(self.valid, target.long(), 0)
        self.every = _LogSumExp(z)
        self.removed_by_truth = _removed(self.every, _LogSumExp(_only(z, self.truth)))  # the oracle's, per pixel
        self.ce_unfused = self.every.log_mass - self.every.shifted.gather(1, self.y.unsqueeze(1)).squeeze(1)  # -log P_y
        self.unfused = {"pixels": self.valid.sum(dim=(1, 2)),
                        "entropy_unfused": _image_mean(self.every.entropy(), self.valid),
                        "accuracy_unfused": _image_mean((self.every.argmax == self.y).to(z.dtype), self.valid)}

    def __call__(self, labels: Tensor) -> dict[str, Tensor]:
        """The audit of ``labels`` (see :func:`audit`)."""
        return self.fused(labels)[0]

    def fused(self, labels: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The audit of ``labels`` and the fused prediction [B,H,W]: the argmax of the logits over the kept
        classes (= argmax P' under dot fusion)."""
        keep = _kept(labels, self.z)
        kept_pixel = self.valid & keep.gather(1, self.y.flatten(1)).view_as(self.y)
        kept_only = _only(self.z, keep)
        kept = _LogSumExp(kept_only)
        removed = _removed(self.every, kept)
        return {
            "n": self.truth.sum(1), "size": keep.sum(1), "kept": (keep & self.truth).sum(1),
            "outliers": (keep & ~self.truth).sum(1), "pixels": self.unfused["pixels"],
            "ce_unfused": _image_mean(self.ce_unfused, kept_pixel),
            "ce_fused": _image_mean(self.ce_unfused - removed, kept_pixel),
            "removed": _image_mean(removed, kept_pixel),
            "removed_truth": _image_mean(self.removed_by_truth, kept_pixel),
            "lost_fraction": _image_mean((self.valid & ~kept_pixel).to(self.z.dtype), self.valid),
            "removed_mass": _image_mean(-torch.expm1(-removed), self.valid),
            "entropy_unfused": self.unfused["entropy_unfused"],
            "entropy_fused": _image_mean(kept.entropy(), self.valid),
            "accuracy_unfused": self.unfused["accuracy_unfused"],
            "accuracy_fused": _image_mean((kept.argmax == self.y).to(self.z.dtype), self.valid),
        }, kept.argmax


def audit(logits: Tensor, labels: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Measured information per image of ``logits`` [B,N,H,W] fused with ``labels``, against ``target`` [B,H,W].

    Counts (int64 [B]): ``n`` true classes in the mask, ``size`` = |L|, ``kept`` = k' true classes
    in L, ``outliers`` = m' classes in L absent from the mask, ``pixels`` labelled
    (``target != ignore_index``).

    Means (float64 [B]), over the labelled pixels whose true class L keeps ("kept pixels"):
    ``ce_unfused`` = CE(P, y), ``ce_fused`` = CE(P', y) and ``removed`` (their difference, see
    :func:`removed_nats`), and ``removed_truth`` (what the true labels remove on those same pixels, so
    that two label sets are compared pixel for pixel). Over all labelled pixels: ``lost_fraction`` (share
    whose true class L excludes), ``removed_mass`` (``1 - sum_{c in L} P_c``: the mass P puts on the classes L removes,
    ``(N - |L|)/N`` for a uniform P, the theory's assumption), ``entropy_unfused`` / ``entropy_fused``
    (per-pixel entropies of P and P') and ``accuracy_unfused`` / ``accuracy_fused`` (pixel accuracy of
    argmax P and argmax P').

    An empty label row keeps every class (size = N, nothing removed). A mean over no pixel is NaN:
    an image with no kept pixel has NaN ``ce_*`` and ``removed``; one with no labelled pixel is
    NaN throughout the means. A batch of 0 images gives empty tensors. Raises ``ValueError`` as
    :func:`removed_nats` does (probabilities passed as logits included) and on a bad ``target``.
    """
    return Audit(logits, target, ignore_index)(labels)
