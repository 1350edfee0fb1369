"""imgpix: image-level to pixel-wise labeling (IJCAI-18), reference implementation."""

from . import information, labels, metrics, theory
from .fusion import fuse, fuse_log

__all__ = ["fuse", "fuse_log", "information", "labels", "metrics", "theory"]
__version__ = "0.1.0"
