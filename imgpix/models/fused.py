"""ImgPixNet: segmentation net + image labels (Eq. 1) + optional generator."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..fusion import LOG_FUSION_MODES, check_labels, fused_log_probs
from ..labels import LabelSource

FUSIONS = (*LOG_FUSION_MODES, None)


class ImgPixOutput(NamedTuple):
    logits: Tensor  # [B,N,H,W] segmentation logits z
    log_probs: Tensor  # [B,N,H,W] log P' (log_softmax(z) when unfused)
    labels: Tensor | None  # [B,N] label vector used, None when unfused
    reconstruction: Tensor | None  # [B,3,H,W] generator output, None without generator


class ImgPixNet(nn.Module):
    """The paper's fused model: ``s(u)`` fused with labels ``L``, then ``g(P')``.

    ``fusion`` is how labels are fused ("dot", Eq. 1, or the "add" ablation); a model
    trained with ``fusion=None`` learned without labels, and labels given to it are
    fused with Eq. 1 after training ("post-hoc fusion").
    """

    def __init__(self, seg: nn.Module, labeler: nn.Module | None = None, generator: nn.Module | None = None,
                 fusion: str | None = "dot", discriminator: nn.Module | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.seg, self.labeler, self.generator = seg, labeler, generator
        self.discriminator = discriminator  # Table 2 ablation; used by training only
        self.fusion = fusion

    @property
    def num_classes(self) -> int:
        return self.seg.num_classes

    @torch.no_grad()
    def label_scores(self, image: Tensor) -> Tensor | None:
        """The labeler's presence probabilities [B,N] (no gradient), None without a labeler."""
        return None if self.labeler is None else torch.sigmoid(self.labeler(image).float())

    def resolve(self, source: LabelSource, image: Tensor, mask: Tensor | None = None) -> Tensor | None:
        """The label vector ``source`` gives for ``image`` (oracle and noisy sources need ``mask``)."""
        scores = self.label_scores(image) if source.kind == "labeler" else None
        return source.resolve(self.num_classes, mask, scores, source.generator())

    def fuse_logits(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """log P' from logits with this model's fusion mode (Eq. 1 for a model trained unfused)."""
        return fused_log_probs(logits, labels, self.fusion or "dot")

    def predicts_over_kept(self, labels: Tensor) -> bool:
        """True when ``argmax P'`` is the argmax of the logits over the classes ``labels`` keep: dot fusion
        (or none) with binary labels."""
        binary = labels.dtype == torch.bool or bool(((labels == 0) | (labels == 1)).all())
        return self.fusion in (None, "dot") and binary

    def predict(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """Class ids [B,H,W]: ``argmax P'``. For dot fusion (and unfused) that is the argmax of the logits
        over the kept classes, so the renormalisation is skipped."""
        if labels is None or not self.predicts_over_kept(labels):
            source = logits if labels is None else self.fuse_logits(logits, labels)
            return source.max(1).indices  # max().indices: about 2x faster than argmax on CPU
        keep = check_labels(labels, *logits.shape[:2]).to(logits.device).bool()
        keep = (keep | ~keep.any(1, keepdim=True))[:, :, None, None]  # an empty row keeps all (the fallback)
        return logits.masked_fill(~keep, float("-inf")).max(1).indices

    def reconstruct(self, log_probs: Tensor) -> Tensor | None:
        """Eq. 3's ``g(P')``: the generator's image from the fused probabilities."""
        return None if self.generator is None else self.generator(log_probs.exp())

    def forward(self, image: Tensor, labels: Tensor | LabelSource | None = None,
                mask: Tensor | None = None) -> ImgPixOutput:
        """Segment ``image`` and fuse with ``labels``: a [B,N]/[N] tensor, a :class:`LabelSource`, or None (unfused)."""
        if isinstance(labels, LabelSource):
            labels = self.resolve(labels, image, mask)
        logits = self.seg(image)
        log_probs = self.fuse_logits(logits, labels)
        return ImgPixOutput(logits, log_probs, labels, self.reconstruct(log_probs))
