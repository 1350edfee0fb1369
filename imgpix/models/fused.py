"""ImgPixNet: segmentation net + image labels (Eq. 1) + optional generator."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..fusion import fuse, fuse_log
from ..labels import threshold

FUSIONS = ("dot", "add", None)


class ImgPixOutput(NamedTuple):
    logits: Tensor  # [B,N,H,W] segmentation logits z
    log_probs: Tensor  # [B,N,H,W] log P' (log_softmax(z) when unfused)
    labels: Tensor | None  # [B,N] label vector used, None when unfused
    reconstruction: Tensor | None  # [B,3,H,W] generator output, None without generator


class ImgPixNet(nn.Module):
    """The paper's fused model: ``s(u)`` fused with labels ``L``, then ``g(P')``.

    ``labels`` per call: ``None`` (the labeler's scores thresholded at ``tau``
    when there is a labeler, else no fusion), ``"none"`` (plain FCN), or a
    [B,N] / [N] tensor (oracle labels from masks, or noisy labels).
    """

    def __init__(self, seg: nn.Module, labeler: nn.Module | None = None, generator: nn.Module | None = None,
                 fusion: str | None = "dot", tau: float = 0.25, discriminator: nn.Module | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must lie in [0, 1], got {tau}")
        self.seg, self.labeler, self.generator = seg, labeler, generator
        self.discriminator = discriminator  # Table 2 ablation; used by training only
        self.fusion, self.tau = fusion, tau

    def image_labels(self, image: Tensor, labels: Tensor | str | None) -> Tensor | None:
        """The label vector to fuse with, or None for the unfused prediction."""
        if self.fusion is None or (isinstance(labels, str) and labels == "none"):
            return None
        if isinstance(labels, str):
            raise ValueError(f"labels must be a tensor, None or 'none', got {labels!r}")
        if labels is not None:
            return labels
        if self.labeler is None:
            return None
        with torch.no_grad():
            return threshold(torch.sigmoid(self.labeler(image)), self.tau)

    def fuse_logits(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """log P' from logits: Eq. 1 in log space (dot) or the addition ablation."""
        if labels is None:
            return torch.log_softmax(logits.float(), dim=1)
        if self.fusion == "add":
            return fuse(torch.softmax(logits.float(), dim=1), labels, mode="add").log()
        return fuse_log(logits.float(), labels)

    def reconstruct(self, log_probs: Tensor) -> Tensor | None:
        """Eq. 3's ``g(P')``: the generator's image from the fused probabilities."""
        return None if self.generator is None else self.generator(log_probs.exp())

    def forward(self, image: Tensor, labels: Tensor | str | None = None) -> ImgPixOutput:
        logits = self.seg(image)
        used = self.image_labels(image, labels)
        log_probs = self.fuse_logits(logits, used)
        return ImgPixOutput(logits, log_probs, used, self.reconstruct(log_probs))
