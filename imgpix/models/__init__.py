"""Networks: FCN segmenters, image-level labelers, the generator, the discriminator, ImgPixNet."""

from .build import build_model
from .discriminator import Discriminator
from .fcn import FCN, build_segmenter
from .fused import ImgPixNet, ImgPixOutput
from .generator import Generator
from .labeler import Labeler, build_labeler

__all__ = ["FCN", "Discriminator", "Generator", "ImgPixNet", "ImgPixOutput", "Labeler", "build_labeler",
           "build_model", "build_segmenter"]
