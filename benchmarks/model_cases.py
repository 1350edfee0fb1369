"""Workloads shared by the model benchmarks and the gate: fwd+bwd passes and training steps.

Each ``*_case`` returns a zero-argument callable doing one unit of work, so the
same callables are timed by pytest-benchmark (``test_model_bench.py``), by the
gate (``gate.py``), measured for peak memory (``peak_memory``) and counted in
FLOPs (``flops``: the gate's expected ratios).

Workloads: ``fcn8s`` (VGG16 FCN-8s: 8 x 3 x 512 x 512 on GPU, 1 x 3 x 128 x 128
on CPU, where one VGG16 step takes about a second) and ``tiny`` (the tiny FCN,
8 x 3 x 128 x 128). The paper's bounds are about FCN-8s; the tiny net is so
small that the generator alone is a third of its FLOPs, so its ratios show
the worst case, not the paper's setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES
from imgpix.labels import from_masks
from imgpix.losses import reconstruction_loss, segmentation_loss
from imgpix.models import Generator, build_segmenter
from imgpix.models.fused import ImgPixNet
from imgpix.train import Trainer

ARCHS = ("fcn8s", "tiny")
MODEL_VARIANTS = ("plain", "fused", "fused+generator")
STEP_VARIANTS = ("plain", "3step", "joint")


def workload(arch: str, device: torch.device | str) -> dict:
    """Model name and input shape of an architecture on a device type."""
    if arch == "tiny":
        return {"model": "tiny", "batch": 8, "size": 128}
    if torch.device(device).type == "cuda":
        return {"model": "fcn8s", "batch": 8, "size": 512}
    return {"model": "fcn8s", "batch": 1, "size": 128}


def batch(arch: str, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed image batch and masks holding background + 2 object classes per image."""
    shape = workload(arch, device)
    gen = torch.Generator().manual_seed(seed)
    b, s = shape["batch"], shape["size"]
    image = torch.randn(b, 3, s, s, generator=gen)
    mask = torch.zeros(b, s, s, dtype=torch.long)
    for i in range(b):
        a, c = (1 + torch.randperm(NUM_CLASSES - 1, generator=gen)[:2]).tolist()
        mask[i, : s // 2, : s // 2] = a
        mask[i, s // 2 :, s // 2 :] = c
    return image.to(device), mask.to(device)


def model_case(arch: str, variant: str, device) -> Callable[[], None]:
    """One forward + backward of the segmentation loss (plus Eq. 3 for ``fused+generator``)."""
    if variant not in MODEL_VARIANTS:
        raise ValueError(f"variant must be one of {MODEL_VARIANTS}")
    torch.manual_seed(0)
    seg = build_segmenter(workload(arch, device)["model"], NUM_CLASSES)
    generator = Generator(NUM_CLASSES) if variant == "fused+generator" else None
    model = ImgPixNet(seg, generator=generator, fusion=None if variant == "plain" else "dot").to(device)
    image, mask = batch(arch, device)
    labels = from_masks(mask, NUM_CLASSES) if variant != "plain" else None

    def run() -> None:
        out = model(image, labels)
        loss = segmentation_loss(out.log_probs, mask)
        if out.reconstruction is not None:
            loss = loss + reconstruction_loss(out.reconstruction, image)
        model.zero_grad(set_to_none=True)
        loss.backward()

    return run


def step_case(arch: str, variant: str, device) -> Callable[[], None]:
    """One training iteration: ``plain`` (unfused FCN, step 1 only), ``3step`` or ``joint`` (fused + generator)."""
    if variant not in STEP_VARIANTS:
        raise ValueError(f"variant must be one of {STEP_VARIANTS}")
    plain = variant == "plain"
    cfg = TrainConfig(model=workload(arch, device)["model"], labeler=None, fusion=None if plain else "dot",
                      train_labels="none" if plain else "oracle", generator=not plain,
                      procedure="joint" if variant == "joint" else "3step", device=str(device))
    trainer = Trainer(cfg)
    image, mask = batch(arch, device)
    return lambda: trainer.iteration(image, mask)


CASES = {"model": model_case, "step": step_case}


def flops(kind: str, arch: str, variant: str, device) -> int:
    """FLOPs of one call as ``torch.utils.flop_counter`` counts them (convolutions, matrix products)."""
    run = CASES[kind](arch, variant, device)
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def peak_memory(kind: str, arch: str, variant: str, device) -> float:
    """Peak bytes of one call: ``max_memory_allocated`` on GPU; on CPU the peak RSS (VmHWM) of a
    fresh subprocess that builds the workload and runs it twice (torch and the weights included;
    ``ru_maxrss`` is not used because it carries the parent's peak over from fork)."""
    return peak_memories(kind, arch, (variant,), device)[0]


def peak_memories(kind: str, arch: str, variants, device) -> list[float]:
    """``peak_memory`` of each variant; on CPU their subprocesses run at once (a peak RSS is per process, so
    they do not disturb each other's, and the interpreter and torch start-up of each overlap)."""
    device = torch.device(device)
    if device.type == "cuda":
        peaks = []
        for variant in variants:
            run = CASES[kind](arch, variant, device)
            run()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            run()
            torch.cuda.synchronize()
            peaks.append(float(torch.cuda.max_memory_allocated()))
        return peaks
    here = str(Path(__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's default trimming
    procs = []
    for variant in variants:
        code = (f"import sys; sys.path.insert(0, {here!r}); import model_cases as m; "
                f"run = m.CASES[{kind!r}]({arch!r}, {variant!r}, 'cpu'); run(); run(); "
                "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')))")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outputs = [proc.communicate() for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, stdout, stderr)
    return [float(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
