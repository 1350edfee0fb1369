"""The networks of a training configuration, sized by its dataset's number of classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .discriminator import Discriminator
from .fcn import build_segmenter
from .fused import ImgPixNet
from .generator import Generator
from .labeler import build_labeler

if TYPE_CHECKING:
    from ..config import TrainConfig


def build_model(cfg: TrainConfig) -> ImgPixNet:
    """Segmenter, labeler, generator or discriminator of ``cfg``, joined in an :class:`ImgPixNet`."""
    n = cfg.info.num_classes
    seg = build_segmenter(cfg.model, n, backbone_weights=cfg.backbone_weights)
    labeler = build_labeler(cfg.labeler, n) if cfg.labeler else None
    generator = Generator(n) if cfg.generator else None
    discriminator = Discriminator(n) if cfg.discriminator else None
    return ImgPixNet(seg, labeler, generator, fusion=cfg.fusion, discriminator=discriminator)
