"""Full model and training-step benchmarks: what fusion and the generator cost.

``model``: one forward + backward of plain FCN vs fused FCN vs fused + generator.
``step``: one training iteration, plain (unfused FCN) vs the paper's 3-step
iteration vs joint-only. ``extra_info`` holds images/s, the ratio to the
plain variant of the same group timed in this session, and the peak memory
(and its ratio to plain). Workloads are defined in ``model_cases.py``.
"""

from __future__ import annotations

import pytest
from model_cases import ARCHS, CASES, MODEL_VARIANTS, STEP_VARIANTS, peak_memory, workload
from timing import DEVICES, benchmark_median, measure, pedantic_args, require_device, synced

PARAMS = [("model", v) for v in MODEL_VARIANTS] + [("step", v) for v in STEP_VARIANTS]


@pytest.fixture(scope="session")
def plain_cost():
    """``plain_cost(kind, arch, device)`` -> (median seconds, peak bytes) of the plain variant, measured once."""
    cache: dict[tuple, tuple[float, float]] = {}

    def get(kind: str, arch: str, device) -> tuple[float, float]:
        key = (kind, arch, str(device))
        if key not in cache:
            args = pedantic_args(device)
            run = CASES[kind](arch, "plain", device)
            seconds = measure(run, device, warmup=args["warmup_rounds"], repeats=args["rounds"])
            cache[key] = (seconds, peak_memory(kind, arch, "plain", device))
        return cache[key]

    return get


@pytest.mark.parametrize("kind,variant", PARAMS, ids=[f"{k}-{v}" for k, v in PARAMS])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("device", DEVICES)
def test_model(benchmark, plain_cost, device, arch, kind, variant):
    dev = require_device(device)
    shape = workload(arch, dev)
    benchmark.group = f"{kind}-{dev.type}-{arch}-{shape['batch']}x{shape['size']}px"
    run = CASES[kind](arch, variant, dev)
    benchmark.pedantic(synced(run, dev), **pedantic_args(dev))
    plain_s, plain_bytes = plain_cost(kind, arch, dev)
    peak = peak_memory(kind, arch, variant, dev)
    median = benchmark_median(benchmark)
    benchmark.extra_info.update(workload=shape, peak_MiB=round(peak / 2**20, 1),
                                memory_ratio_to_plain=round(peak / plain_bytes, 3))
    if median is not None:
        benchmark.extra_info.update(images_per_s=round(shape["batch"] / median, 2),
                                    ratio_to_plain=round(median / plain_s, 3))
