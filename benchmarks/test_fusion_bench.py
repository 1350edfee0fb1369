"""Eq. 1 fusion benchmarks: forward and forward+backward on VOC-like maps.

Variants, all on the same [B, 21, H, W] tensor and ~3 of 21 classes on:
``fuse`` (probability space), ``fuse_log``, its eager ``reference``
(``masked_log_softmax``), plain ``log_softmax`` (the unfused baseline) and
``copy`` (``x.clone()``, the bandwidth limit). ``extra_info``
holds ``GB/s`` -- nominal traffic (2 tensor passes forward, 4 forward+backward)
over the median time -- and ``ratio_to_copy`` against the copy of the same
size timed in this session.

Run: ``python -m pytest benchmarks/ --benchmark-autosave -q``.
"""

from __future__ import annotations

import pytest
import torch
from timing import DEVICES, copy_fwd, pedantic_args, record, require_device, synced, voc_labels

from imgpix import fuse, fuse_log
from imgpix.fusion import masked_log_softmax

NUM_CLASSES = 21
SHAPES = {"cpu": (8, NUM_CLASSES, 320, 320), "cuda": (8, NUM_CLASSES, 512, 512)}
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.bfloat16)}
VARIANTS = ("copy", "log_softmax", "fuse", "fuse_log", "reference")


def make_op(variant: str, labels: torch.Tensor):
    """``op(x)`` for a variant; ``fuse`` gets probabilities, the others logits."""
    return {
        "copy": lambda x: x.clone(),
        "log_softmax": lambda x: torch.log_softmax(x, dim=1),
        "fuse": lambda p: fuse(p, labels),
        "fuse_log": lambda z: fuse_log(z, labels),
        "reference": lambda z: masked_log_softmax(z, labels[:, :, None, None]),  # what fuse_log replaced
    }[variant]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd_bwd"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_fusion(benchmark, copy_seconds, device, dtype, variant, backward):
    dev = require_device(device)
    if dtype not in DTYPES[dev.type]:
        pytest.skip(f"{dtype} is benchmarked on GPU only")
    shape = SHAPES[dev.type]
    benchmark.group = f"fusion-{dev.type}-{str(dtype).removeprefix('torch.')}-{'fwd_bwd' if backward else 'fwd'}"
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=gen).mul_(4)
    x = (torch.softmax(logits, dim=1) if variant == "fuse" else logits).to(dev, dtype)
    op = make_op(variant, voc_labels(shape[0], NUM_CLASSES, dev))
    try:
        op(x)  # a warm-up; fuse may reject bf16 probabilities not summing to 1 within tolerance
    except ValueError as err:
        pytest.skip(f"{variant} rejects {dtype} input: {err}")

    if backward:
        x.requires_grad_(True)
        grad = torch.randn(shape, generator=gen).to(dev, dtype)

        def step():
            (g,) = torch.autograd.grad(op(x), x, grad)
            if variant == "copy":  # clone's backward passes grad through: copy it, as copy_fwd_bwd does
                g.clone()

    else:

        def step():
            with torch.no_grad():
                op(x)

    benchmark.pedantic(synced(step, dev), **pedantic_args(dev))
    nbytes = (4 if backward else 2) * x.numel() * x.element_size()
    record(benchmark, copy_seconds(x, backward), nbytes)
    benchmark.extra_info["shape"] = list(shape)


def test_copy_helper_is_a_copy():
    x = torch.arange(6.0)
    y = copy_fwd(x)()
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
