"""Image-level multi-label classifiers: which classes appear in an image."""

from __future__ import annotations

import math
from os import PathLike

import torch
import torchvision
from torch import Tensor, nn

from .fcn import conv_bn_relu, load_backbone_weights

LABELER_BACKBONES = ("tiny", "vgg16", "resnet18")
_HEADS = {"vgg16": "classifier.6.", "resnet18": "fc."}
LSE_SHARPNESS = 5.0


class TinyClassifier(nn.Module):
    """Class score maps pooled by log-sum-exp, symmetric under a 180-degree rotation of the image.

    The image is averaged to half resolution (outlines stay, fine texture fades); a 5x5 conv-bn-relu
    (32 channels), a conv-bn-relu (64), 2x2 max pool, two conv-bn-relu (128), max pool and two more
    (128) give features on a grid of stride 8 with a 68 px receptive field; a linear layer ``fc`` scores
    each class c at each cell i, ``s_c(i)``, pooled as
    ``q_c = (1/r) log((1/|I|) sum_i exp(r s_c(i)))`` with r = ``LSE_SHARPNESS`` (mean at r -> 0,
    max at r -> inf). The logits are the mean of ``q`` over the image and its 180-degree rotation.
    """

    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(3, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            *conv_bn_relu(32, 64), nn.MaxPool2d(2),
            *conv_bn_relu(64, 128), *conv_bn_relu(128, 128), nn.MaxPool2d(2),
            *conv_bn_relu(128, 128), *conv_bn_relu(128, 128),
        )
        self.fc = nn.Linear(128, num_classes)  # applied at every cell: a 1x1 convolution

    def pooled(self, x: Tensor) -> Tensor:
        """``q`` [B,N] of one orientation."""
        s = self.fc(self.features(x).flatten(2).transpose(1, 2))  # [B, cells, N]
        return (torch.logsumexp(LSE_SHARPNESS * s, dim=1) - math.log(s.shape[1])) / LSE_SHARPNESS

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (self.pooled(x) + self.pooled(x.flip(-1, -2)))


class Labeler(nn.Module):
    """Multi-label classifier: ``forward`` gives logits [B,N], ``scores`` their sigmoid.

    ``vgg16``/``resnet18`` are torchvision's (``weights=None``) with an N-way head;
    ``backbone_weights`` is a local torchvision state dict (its ImageNet head ignored).
    """

    def __init__(self, num_classes: int = 21, backbone: str = "tiny",
                 backbone_weights: str | PathLike | None = None):
        super().__init__()
        if backbone not in LABELER_BACKBONES:
            raise ValueError(f"backbone must be one of {LABELER_BACKBONES}, got {backbone!r}")
        if backbone == "tiny":
            if backbone_weights is not None:
                raise ValueError("backbone_weights needs backbone 'vgg16' or 'resnet18'")
            self.net: nn.Module = TinyClassifier(num_classes)
        else:
            self.net = getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes)
            if backbone_weights is not None:
                load_backbone_weights(self.net, backbone_weights, head_prefix=_HEADS[backbone])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def scores(self, x: Tensor) -> Tensor:
        """Per-class presence probabilities [B,N]."""
        return torch.sigmoid(self(x))


def build_labeler(name: str, num_classes: int = 21, backbone_weights: str | PathLike | None = None) -> Labeler:
    """A :class:`Labeler` with backbone ``name`` (``tiny``, ``vgg16`` or ``resnet18``)."""
    if name not in LABELER_BACKBONES:
        raise ValueError(f"unknown labeler {name!r}; valid names: {list(LABELER_BACKBONES)}")
    return Labeler(num_classes, name, backbone_weights)

