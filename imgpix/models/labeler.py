"""Image-level multi-label classifiers: which classes appear in an image."""

from __future__ import annotations

from os import PathLike

import torch
import torchvision
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_average_precision

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


def _check_pair(scores: Tensor, labels: Tensor) -> None:
    if scores.dim() != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must share a shape [B, N], got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Per-class AP [N] of scores [B,N] against presence labels [B,N]; NaN for a class with no positive.

    ``AP_c = sum_k (R_k - R_{k-1}) P_k`` over the images ranked by decreasing score (torchmetrics'
    binary average precision per class); mAP is the ``nanmean`` over the classes of interest.
    """
    _check_pair(scores, labels)
    scores, labels = scores.detach().float().cpu(), labels.bool().cpu()
    ap = torch.full((scores.shape[1],), torch.nan)
    for c in labels.any(dim=0).nonzero().flatten().tolist():
        ap[c] = binary_average_precision(scores[:, c], labels[:, c].long())
    return ap


def precision_recall(scores: Tensor, labels: Tensor, tau: float) -> tuple[float, float]:
    """Micro precision TP/(TP+FP) and recall TP/(TP+FN) of the labels ``scores >= tau`` (NaN if undefined)."""
    _check_pair(scores, labels)
    predicted, truth = scores >= tau, labels.bool()
    hits = (predicted & truth).sum().item()
    count, positives = predicted.sum().item(), truth.sum().item()
    return (hits / count if count else float("nan"), hits / positives if positives else float("nan"))
