"""Training losses: Eq. 2 (segmentation) and Eq. 3 (reconstruction), plus the GAN ablation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.common import IGNORE_INDEX

# A pixel whose true class was excluded by the image labels has log P' = -inf.
# Its loss is clamped to this constant: it stays finite and, as Eq. 12 says,
# nothing can be learned from it (its gradient is zero).
MIN_LOG_PROB = -100.0


def segmentation_loss(log_probs: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Eq. 2: mean cross-entropy of fused log-probabilities [B,N,H,W] against masks [B,H,W]."""
    return F.nll_loss(log_probs.clamp_min(MIN_LOG_PROB), target, ignore_index=ignore_index)


def reconstruction_loss(reconstruction: Tensor, image: Tensor) -> Tensor:
    """Eq. 3: Euclidean loss ``||u_hat - u||^2`` divided by the number of elements (B*3*H*W)."""
    if reconstruction.shape != image.shape:
        raise ValueError(f"reconstruction shape {tuple(reconstruction.shape)} != image shape {tuple(image.shape)}")
    return F.mse_loss(reconstruction, image)


def adversarial_loss(patch_logits: Tensor, real: bool) -> Tensor:
    """Binary cross-entropy of discriminator patch logits against all-real or all-fake."""
    target = torch.full_like(patch_logits, 1.0 if real else 0.0)
    return F.binary_cross_entropy_with_logits(patch_logits, target)
