"""Fully convolutional networks (Long et al., CVPR 2015) on VGG16 or a tiny CPU backbone."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor, nn
from torch.nn.utils import skip_init

VARIANTS = ("32s", "16s", "8s")
FCN_BACKBONES = ("vgg16", "tiny")
SEGMENTERS = {  # name -> (variant, backbone)
    "fcn32s": ("32s", "vgg16"), "fcn16s": ("16s", "vgg16"), "fcn8s": ("8s", "vgg16"), "tiny": ("8s", "tiny"),
}


def load_backbone_weights(net: nn.Module, path: str | PathLike, head_prefix: str) -> None:
    """Load a local torchvision state dict into ``net``, skipping the classifier head.

    Keys under ``head_prefix`` are ignored; every other key of ``net`` must be in
    the file with the same shape, and the file may hold no other key. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` for a bad one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read a state dict from {path}: {err}") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.startswith(head_prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    problems = []
    if missing := sorted(expected.keys() - state.keys()):
        problems.append(f"missing keys {missing[:5]}")
    if unexpected := sorted(state.keys() - expected.keys()):
        problems.append(f"unexpected keys {unexpected[:5]}")
    bad = [k for k in expected.keys() & state.keys()
           if not isinstance(state[k], Tensor) or state[k].shape != expected[k]]
    if bad:
        k = sorted(bad)[0]
        got = tuple(state[k].shape) if isinstance(state[k], Tensor) else type(state[k]).__name__
        problems.append(f"{len(bad)} shape mismatches, e.g. {k}: expected {tuple(expected[k])}, got {got}")
    if problems:
        raise ValueError(f"bad backbone state dict {path}: " + "; ".join(problems))
    net.load_state_dict(state, strict=False, assign=True)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """3x3 convolution (padding 1), batch norm and ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class Level(NamedTuple):
    """A feature map's channels and grid: index ``i`` is centred on pixel ``stride * i + center``."""

    channels: int
    stride: int
    center: float


def _track(stage: nn.Module, level: Level) -> Level:
    """The grid after ``stage``, following its (square, undilated) convolutions and max pools."""
    channels, stride, center = level
    for m in stage.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
            center += stride * ((k - 1) / 2 - p)
            stride *= s
            channels = m.out_channels if isinstance(m, nn.Conv2d) else channels
    return Level(channels, stride, center)


class Backbone(nn.Module):
    """Three stages returning the pool3-, pool4- and top-level features; ``levels`` holds their grids."""

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        levels, level = [], Level(3, 1, 0.0)
        for stage in stages:
            level = _track(stage, level)
            levels.append(level)
        self.levels: tuple[Level, ...] = tuple(levels)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _linear_as_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """A convolution computing ``linear`` on each ``in_channels x k x k`` window."""
    conv = skip_init(nn.Conv2d, in_channels, linear.out_features, kernel_size, device=linear.weight.device)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
        conv.bias.copy_(linear.bias)
    return conv


def vgg16_backbone(weights: str | PathLike | None = None) -> Backbone:
    """torchvision's VGG16 with fc6/fc7 as 7x7/1x1 convolutions, Caffe-FCN style.

    conv1_1 gets padding 100 and the pools use ceil mode, so any input size
    leaves a non-empty fc7 map; FCN crops the outputs back into alignment.
    ``weights``: a local ``torchvision.models.vgg16()`` state dict (fc8 ignored).
    """
    if weights is None:
        vgg = torchvision.models.vgg16(weights=None)
    else:
        with torch.device("meta"):  # no random init: every tensor kept is loaded
            vgg = torchvision.models.vgg16(weights=None)
        load_backbone_weights(vgg, weights, head_prefix="classifier.6.")
    features = vgg.features
    features[0].padding = (100, 100)
    for m in features:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
    top = nn.Sequential(OrderedDict(
        conv5=features[24:],
        fc6=_linear_as_conv(vgg.classifier[0], 512, 7), relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(),
        fc7=_linear_as_conv(vgg.classifier[3], 4096, 1), relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(),
    ))
    return Backbone([features[:17], features[17:24], top])


def tiny_backbone() -> Backbone:
    """Three conv-bn-relu x2 + max-pool stages (16/32/64 channels) and a 1x1 conv to 128.

    Levels at strides 2/4/8 play VGG's pool3/pool4/fc7 (8/16/32); the top
    level's receptive field is 36 pixels.
    """
    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout), nn.MaxPool2d(2, ceil_mode=True)]

    return Backbone([
        nn.Sequential(*stage(3, 16)),
        nn.Sequential(*stage(16, 32)),
        nn.Sequential(*stage(32, 64), nn.Conv2d(64, 128, 1), nn.ReLU(inplace=True)),
    ])


def bilinear_kernel(factor: int) -> Tensor:
    """The ``2f x 2f`` bilinear interpolation kernel for upsampling by ``f``."""
    x = torch.arange(2 * factor, dtype=torch.float32)
    w = 1 - (x - (factor - 0.5)).abs() / factor
    return w[:, None] * w[None, :]


def _upsampler(num_classes: int, factor: int) -> nn.ConvTranspose2d:
    """Class-wise bilinear upsampling by ``factor`` (kernel 2f, stride f), learnable."""
    up = nn.ConvTranspose2d(num_classes, num_classes, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        up.weight.copy_(torch.eye(num_classes)[:, :, None, None] * bilinear_kernel(factor))
    return up


def _score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """Zero-initialised 1x1 class scorer, as in the FCN paper."""
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _skip_offset(coarse: Level, fine: Level) -> tuple[int, float]:
    """Crop offset aligning ``coarse`` upsampled to ``fine``, and the fused grid's center.

    Positive: crop the upsampled map; negative: crop the skip scores.
    """
    up_center = coarse.center - coarse.stride + fine.stride / 2
    offset = (fine.center - up_center) / fine.stride
    if not offset.is_integer():
        raise ValueError(f"grids of strides {coarse.stride} and {fine.stride} cannot be aligned")
    return int(offset), max(up_center, fine.center)


def _fuse(up: Tensor, skip: Tensor, offset: int) -> Tensor:
    """Sum upsampled and skip scores after cropping the larger one by ``|offset|``."""
    if offset >= 0:
        up = up[:, :, offset:offset + skip.shape[2], offset:offset + skip.shape[3]]
    else:
        skip = skip[:, :, -offset:-offset + up.shape[2], -offset:-offset + up.shape[3]]
    return up + skip


class FCN(nn.Module):
    """FCN-32s/16s/8s: class scores from the top level, fused with pool4/pool3 skips.

    Alignment follows the Caffe FCN: transposed convolutions initialised to
    bilinear kernels, then crops whose offsets are derived from each level's
    grid (``crop_offsets``; VGG16 gives the classic 5, 9 and 19/27/31).
    Logits come out at the input size for any H, W.

    Parameters for 21 classes: VGG16 32s 136,152,917; 16s 134,815,994;
    8s 134,489,759 (backbone 134,260,544). ``backbone="tiny"``: 32s 196,229;
    16s 119,306; 8s 105,551 (levels at strides 2/4/8, receptive field 36 px).
    """

    def __init__(self, num_classes: int = 21, variant: str = "8s", backbone: str = "vgg16",
                 backbone_weights: str | PathLike | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if backbone not in FCN_BACKBONES:
            raise ValueError(f"backbone must be one of {FCN_BACKBONES}, got {backbone!r}")
        if backbone == "tiny" and backbone_weights is not None:
            raise ValueError("backbone_weights needs backbone='vgg16'")
        self.variant, self.num_classes = variant, num_classes
        self.backbone = vgg16_backbone(backbone_weights) if backbone == "vgg16" else tiny_backbone()
        pool3, pool4, top = self.backbone.levels
        self.score_fr = _score_layer(top.channels, num_classes)
        self.crop_offsets: dict[str, int] = {}
        if variant != "32s":
            self.score_pool4 = _score_layer(pool4.channels, num_classes)
            self.upscore2 = _upsampler(num_classes, top.stride // pool4.stride)
            self.crop_offsets["pool4"], center = _skip_offset(top, pool4)
            top = Level(num_classes, pool4.stride, center)
        if variant == "8s":
            self.score_pool3 = _score_layer(pool3.channels, num_classes)
            self.upscore_pool4 = _upsampler(num_classes, top.stride // pool3.stride)
            self.crop_offsets["pool3"], center = _skip_offset(top, pool3)
            top = Level(num_classes, pool3.stride, center)
        self.upscore = _upsampler(num_classes, top.stride)
        self.crop_offsets["final"], _ = _skip_offset(top, Level(num_classes, 1, 0.0))

    def forward(self, x: Tensor) -> Tensor:
        pool3, pool4, top = self.backbone(x)
        score = self.score_fr(top)
        if self.variant != "32s":
            score = _fuse(self.upscore2(score), self.score_pool4(pool4), self.crop_offsets["pool4"])
        if self.variant == "8s":
            score = _fuse(self.upscore_pool4(score), self.score_pool3(pool3), self.crop_offsets["pool3"])
        o = self.crop_offsets["final"]
        return self.upscore(score)[:, :, o:o + x.shape[2], o:o + x.shape[3]]


def build_segmenter(name: str, num_classes: int = 21, backbone_weights: str | PathLike | None = None) -> FCN:
    """``fcn32s``/``fcn16s``/``fcn8s`` (VGG16) or ``tiny`` (tiny backbone, 8s skips)."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; valid names: {sorted(SEGMENTERS)}")
    variant, backbone = SEGMENTERS[name]
    return FCN(num_classes, variant, backbone, backbone_weights)
