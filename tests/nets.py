"""Small networks shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

from imgpix.models import build_segmenter


def randomised_segmenter(seed: int = 0, num_classes: int = 21) -> nn.Module:
    """Tiny FCN whose (zero-initialised) score layers are random, so logits differ per class."""
    torch.manual_seed(seed)
    seg = build_segmenter("tiny", num_classes)
    with torch.no_grad():
        for name, p in seg.named_parameters():
            if name.startswith("score"):
                p.normal_(0.0, 0.5)
    return seg
