"""Throughput of the synthetic data: generating 64 x 64 ``SyntheticScenes`` train items.

One round renders the first ``ITEMS`` items (``dataset[i]``: scene sampling,
drawing, noise, normalisation; the same items every round and run, so the work
is fixed); ``extra_info["images_per_s"]`` is ``ITEMS`` over the median round.

Run: ``python -m pytest benchmarks/test_data_bench.py -q``; on a shared machine add
``--benchmark-timer time.thread_time`` (rendering is single-threaded, so its CPU time is
exact and the other processes' load drops out).
"""

from __future__ import annotations

from timing import benchmark_median, pedantic_args

from imgpix.data import SyntheticScenes

SIZE = 64
ITEMS = 64


def test_synthetic_scenes_64px(benchmark):
    dataset = SyntheticScenes(split="train", size=SIZE)

    def render() -> None:
        for i in range(ITEMS):
            dataset[i]

    benchmark.group = "data-cpu"
    benchmark.pedantic(render, **pedantic_args("cpu"))
    image, mask = dataset[0]
    assert image.shape == (3, SIZE, SIZE) and mask.shape == (SIZE, SIZE)
    benchmark.extra_info.update(size=SIZE, items_per_round=ITEMS)
    median = benchmark_median(benchmark)
    if median is not None:
        benchmark.extra_info.update(images_per_s=round(ITEMS / median, 1), ms_per_image=round(median / ITEMS * 1e3, 3))
