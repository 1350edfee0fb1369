"""The paper's generator ``g``: fused probabilities back to an image (Eq. 3)."""

from __future__ import annotations

from torch import Tensor, nn


class Generator(nn.Module):
    """Three 3x3 convolutions N -> 18 -> 9 -> 3 (the paper's kernels 21x3x3x18, 18x3x3x9, 9x3x3x3).

    Maps probabilities [B,N,H,W] to an image [B,3,H,W]; ReLU between layers, linear output.
    """

    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(num_classes, 18, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(18, 9, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(9, 3, 3, padding=1),
        )

    def forward(self, probs: Tensor) -> Tensor:
        return self.net(probs)
