"""Networks by name: imgpix's FCNs and labelers, torchvision's architectures, or a user's factory; and the
:class:`ImgPixNet` of a training configuration, sized by its dataset's number of classes."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from torch import nn

from . import zoo
from .discriminator import Discriminator
from .fcn import SEGMENTERS, build_segmenter
from .fused import ImgPixNet
from .generator import Generator
from .labeler import LABELER_BACKBONES, build_labeler

if TYPE_CHECKING:
    from ..config import TrainConfig

SEGMENTER_NAMES = (*SEGMENTERS, *zoo.SEGMENTERS)
LABELER_NAMES = (*LABELER_BACKBONES, *zoo.CLASSIFIERS)
FACTORY_HELP = "or a factory 'package.module:function' returning an nn.Module"


def is_factory(name: str) -> bool:
    """A user's network factory ``package.module:function`` rather than an architecture name."""
    return ":" in name


def check_segmenter_name(name: str) -> str:
    if name not in SEGMENTER_NAMES and not is_factory(name):
        raise ValueError(f"unknown segmenter {name!r}: use one of {', '.join(SEGMENTER_NAMES)}, {FACTORY_HELP}")
    return name


def check_labeler_name(name: str) -> str:
    if name not in LABELER_NAMES:
        raise ValueError(f"unknown labeler {name!r}: use one of {', '.join(LABELER_BACKBONES)} or a torchvision "
                         "classification architecture (torchvision.models.list_models())")
    return name


def segmenter(name: str, num_classes: int, *, weights: str | PathLike | None = None,
              backbone_weights: str | PathLike | None = None, image_size: int = 64) -> nn.Module:
    """The segmentation net ``name`` for ``num_classes``, mapping [B,3,H,W] to logits [B,N,H,W]: imgpix's
    FCNs, torchvision's segmentation architectures (built with ``weights=None``; their auxiliary head is
    left out) or a user's factory, whose output is checked on an ``image_size`` image. ``weights``: a local
    state dict of the whole net."""
    check_segmenter_name(name)
    if name in SEGMENTERS:
        net = build_segmenter(name, num_classes, backbone_weights=backbone_weights)
    elif is_factory(name):
        net = zoo.factory_segmenter(name, num_classes, (image_size, image_size))
    else:
        net = zoo.build_torchvision_segmenter(name, num_classes)
    return zoo.load_weights(net, weights) if weights else net


def labeler(name: str, num_classes: int, *, weights: str | PathLike | None = None) -> nn.Module:
    """The image labeler ``name``: imgpix's (``tiny``, ``vgg16``, ``resnet18``) or any torchvision classifier,
    logits [B,N]; ``weights``: a local state dict."""
    check_labeler_name(name)
    net = build_labeler(name, num_classes) if name in LABELER_BACKBONES else zoo.build_torchvision_labeler(
        name, num_classes)
    return zoo.load_weights(net, weights) if weights else net


def build_model(cfg: TrainConfig) -> ImgPixNet:
    """Segmenter, labeler, generator or discriminator of ``cfg``, joined in an :class:`ImgPixNet`."""
    n = cfg.info.num_classes
    seg = segmenter(cfg.model, n, weights=cfg.weights, backbone_weights=cfg.backbone_weights,
                    image_size=cfg.image_size)
    label_net = labeler(cfg.labeler, n, weights=cfg.labeler_weights) if cfg.labeler else None
    generator = Generator(n) if cfg.generator else None
    discriminator = Discriminator(n) if cfg.discriminator else None
    return ImgPixNet(seg, label_net, generator, fusion=cfg.fusion, discriminator=discriminator)
