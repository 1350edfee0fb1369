"""Networks: FCN segmenters, image-level labelers, the generator and the discriminator."""

from .discriminator import Discriminator
from .fcn import FCN, build_segmenter
from .generator import Generator
from .labeler import Labeler, build_labeler

__all__ = ["FCN", "Discriminator", "Generator", "Labeler", "build_labeler", "build_segmenter"]
