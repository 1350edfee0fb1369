"""Constants and the one normalisation shared by every dataset."""

from __future__ import annotations

import torch
from torch import Tensor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)


def normalize(image: Tensor) -> Tensor:
    """RGB in [0, 1], ``[3,H,W]`` or ``[B,3,H,W]`` -> ImageNet-normalised ``(x - MEAN) / STD`` (new tensor)."""
    mean, std = _stats(image)
    return (image - mean) / std


def denormalize(image: Tensor) -> Tensor:
    """Inverse of the ImageNet normalisation: ``[3,H,W]`` or ``[B,3,H,W]`` -> RGB in ~[0, 1]."""
    mean, std = _stats(image)
    return image * std + mean


def _stats(image: Tensor) -> tuple[Tensor, Tensor]:
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image must have shape [3,H,W] or [B,3,H,W], got {tuple(image.shape)}")
    dtype = image.dtype if image.is_floating_point() else torch.float32
    mean = torch.tensor(MEAN, dtype=dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=dtype, device=image.device).view(3, 1, 1)
    return mean, std
