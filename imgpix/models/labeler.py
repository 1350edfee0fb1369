"""Image-level multi-label classifiers: which classes appear in an image."""

from __future__ import annotations

from os import PathLike

import torch
import torchvision
from torch import Tensor, nn

from .fcn import conv_bn_relu, load_backbone_weights

LABELER_BACKBONES = ("tiny", "vgg16", "resnet18")
_HEADS = {"vgg16": "classifier.6.", "resnet18": "fc."}


class TinyClassifier(nn.Module):
    """Four stages of (stride-2 conv-bn-relu, conv-bn-relu), 16/32/64/128 channels.

    The receptive field (91 px) covers a 64x64 image, so object shape is
    visible; global max and average pooling feed one linear layer.
    """

    def __init__(self, num_classes: int = 21):
        super().__init__()
        chans = [3, 16, 32, 64, 128]
        self.features = nn.Sequential(*(
            layer for cin, cout in zip(chans, chans[1:])
            for layer in (*conv_bn_relu(cin, cout, stride=2), *conv_bn_relu(cout, cout))
        ))
        self.fc = nn.Linear(2 * chans[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        return self.fc(torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1))


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

