"""Five-layer patch discriminator for the paper's adversarial ablation (Table 2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Discriminator(nn.Module):
    """Scores (label map, image) pairs per patch: real = one-hot ground truth, fake = fused prediction.

    Five 3x3 convolutions, the first three with stride 2, LeakyReLU(0.2) between;
    [B,N,H,W] + [B,3,H,W] -> logits [B,1,ceil(H/8),ceil(W/8)].
    """

    def __init__(self, num_classes: int = 21, width: int = 64):
        super().__init__()
        chans = [num_classes + 3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
            stride = 2 if i < 3 else 1
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.net = nn.Sequential(*layers, nn.Conv2d(chans[-1], 1, 3, padding=1))

    def forward(self, probs: Tensor, image: Tensor) -> Tensor:
        if probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[2:]:
            raise ValueError(f"label map {tuple(probs.shape)} and image {tuple(image.shape)} "
                             "differ in batch or size")
        return self.net(torch.cat([probs, image], dim=1))
