#!/usr/bin/env python
"""CPU seconds per segmenter update per megapixel of a batch: one epoch of the same model (TrainConfig's
defaults: the 3-step iteration with the generator, plus the labeler; batch 16 of 64 x 64 px) on synthetic
scenes and on a real folder dataset (resized to 96 px, 64 px crops), one after the other in this process.

    python benchmarks/update_cost.py --root ../shared/data/msrc21
"""

from __future__ import annotations

import argparse
import tempfile
import time

SIDE, BATCH = 64, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a real dataset in the folder layout")
    args = parser.parse_args()

    from imgpix.config import TrainConfig
    from imgpix.runtime import cpu_worker
    from imgpix.train import train

    cpu_worker(1)
    common = {"fusion": None, "train_labels": "none", "labeler": "tiny", "epochs": 1, "labeler_epochs": 1,
              "batch_size": BATCH, "lr_schedule": "cosine", "channels_last": True, "progress": False, "num_val": 16}
    cases = {"synthetic, 64 px": TrainConfig(**common, num_train=272, image_size=SIDE, scene_preset="voc"),
             "real, resize 96 / crop 64": TrainConfig(**common, data="folder", root=args.root, resize=96,
                                                       crop_size=SIDE)}
    megapixels = BATCH * SIDE * SIDE / 1e6
    for name, cfg in cases.items():
        with tempfile.TemporaryDirectory() as out:
            start = time.process_time()
            trainer = train(cfg, out, log=lambda text: None)
            seconds = time.process_time() - start
        print(f"{name}: {trainer.updates} updates, {seconds:.1f} CPU s, "
              f"{seconds / trainer.updates / megapixels:.1f} CPU s per update per megapixel")


if __name__ == "__main__":
    main()
