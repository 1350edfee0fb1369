"""What the experiments' CPU settings buy: channels_last and kept freed memory (``imgpix.runtime``).

Trains the noise experiment's models (``unfused``: segmenter + labeler; ``fused``: segmenter alone) for
a few epochs, each in a fresh process of one torch thread (the allocator setting is process-wide), the
four settings interleaved round by round. Prints each setting's median CPU time (``time.process_time``:
user + system, so page faults count and other processes' load does not) as a ratio to ``plain``
(contiguous tensors, glibc's default allocator), with the range over rounds.

    python benchmarks/cpu_settings.py [--epochs 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

SETTINGS = {"plain": (False, False), "channels_last": (True, False), "kept memory": (False, True),
            "channels_last + kept memory": (True, True)}
MODELS = ("unfused", "fused")


def child(model: str, channels_last: bool, keep: bool, epochs: int) -> float:
    """CPU seconds of training ``model`` for ``epochs`` epochs in this process."""
    import torch

    from imgpix.experiments.noisy_labels import NoiseConfig, train_config
    from imgpix.runtime import keep_freed_memory
    from imgpix.train import train

    if keep and not keep_freed_memory():
        raise SystemExit("this C library is not glibc: the kept-memory setting does not apply")
    torch.set_num_threads(1)
    cfg = replace(train_config(NoiseConfig(), model, seed=0, ambiguity=1.0), epochs=epochs,
                  labeler_epochs=epochs, channels_last=channels_last)
    with tempfile.TemporaryDirectory() as out:
        start = time.process_time()
        train(cfg, out, log=lambda text: None)
        return time.process_time() - start


def measure(model: str, setting: str, epochs: int) -> float:
    channels_last, keep = SETTINGS[setting]
    command = [sys.executable, __file__, "--child", model, str(int(channels_last)), str(int(keep)),
               "--epochs", str(epochs)]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, channels_last, keep = args.child
        print(child(model, channels_last == "1", keep == "1", args.epochs))
        return 0
    seconds = {(m, s): [] for m in MODELS for s in SETTINGS}
    for round_ in range(args.rounds):
        for model in MODELS:
            order = list(SETTINGS) if round_ % 2 == 0 else list(SETTINGS)[::-1]
            for setting in order:
                seconds[model, setting].append(measure(model, setting, args.epochs))
    print(f"| model | setting | median CPU s ({args.epochs} epochs) | ratio to plain | "
          f"range over {args.rounds} rounds |")
    print("|---|---|---:|---:|---|")
    for (model, setting), times in seconds.items():
        plain = seconds[model, "plain"]
        ratios = [t / p for t, p in zip(times, plain)]
        print(f"| {model} | {setting} | {statistics.median(times):.1f} | {statistics.median(ratios):.2f} | "
              f"{min(ratios):.2f}-{max(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
