"""Where the time of a real-data epoch goes: the old setting (files' resolution, crop 320) against the new one.

Profiles a few training iterations of ``imgpix train --data folder`` (its defaults: the tiny FCN fused with
oracle labels, the generator's 3-step iteration, the tiny labeler, batch 16) on a VOC-layout folder, per
iteration and per component:

* ``data``: reading and decoding a batch's files (``dataset.load``) and the whole ``__getitem__``
  (decode + normalise + resize + crop + flip) of the training dataset, collation included;
* ``step 1``: the segmenter alone, forward + backward + update (one segmenter update);
* ``steps 2+3``: the generator's step on the frozen P' and the joint step (forward of the segmenter,
  generator, backward of both, updates: the second segmenter update);
* ``labeler``: its BCE step;
* ``evaluation``: one val image through ``evaluate_model`` with the label sources none, oracle and labeler
  (as ``imgpix evaluate`` does), per image;

plus the process's CPU user and system time and its peak RSS. Each setting runs in a fresh child process
(peak RSS is per process), one after the other, with one torch thread and the allocator setting of
``imgpix train`` (``imgpix.runtime.keep_freed_memory``). Times are CPU seconds of the process
(``time.process_time``, user + system: other processes' load does not count); one warm-up iteration
is left out. Prints a Markdown table: seconds per iteration per component, old, new, and old / new.

    python benchmarks/profile_real.py --root ../shared/data/msrc21 [--iterations 3] [--resize 128 --crop-size 96]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

COMPONENTS = ("decode", "getitem", "step1", "steps23", "labeler", "eval_image")
LABELS = {
    "decode": "read + decode a batch (`load`)",
    "getitem": "`__getitem__` of a batch (decode, resize, crop) + collate",
    "step1": "segmenter step 1: fwd + bwd + update",
    "steps23": "generator step 2 + joint step 3 (2nd segmenter fwd + bwd)",
    "labeler": "labeler step",
    "train": "training iteration (step 1 + steps 2-3 + labeler)",
    "eval_image": "evaluation, per val image (3 label sources)",
}


def cpu() -> float:
    return time.process_time()


def child(root: str, resize: int | None, crop: int, iterations: int, eval_images: int) -> dict:
    """Per-iteration CPU seconds of each component in this process (one thread), usage and peak RSS."""
    import torch
    from torch.utils.data import default_collate

    from imgpix.config import TrainConfig
    from imgpix.data.loaders import build_split, make_loader, set_epoch
    from imgpix.evaluate import evaluate_model
    from imgpix.labels import LabelSource
    from imgpix.losses import segmentation_loss
    from imgpix.runtime import keep_freed_memory
    from imgpix.train import Trainer, step

    torch.set_num_threads(1)
    keep_freed_memory()
    cfg = TrainConfig(data="folder", root=root, resize=resize, crop_size=crop, epochs=1, progress=False)
    train_set, val_set = build_split(cfg, "train"), build_split(cfg, "val")
    trainer = Trainer(cfg)
    set_epoch(train_set, 1)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0)).tolist()
    times: dict[str, list[float]] = {name: [] for name in (*COMPONENTS, "train")}
    shapes = set()
    for it in range(iterations + 1):  # the first is a warm-up
        batch = order[it * cfg.batch_size: (it + 1) * cfg.batch_size]
        start = cpu()
        raw = [train_set.load(i) for i in batch]
        decode = cpu() - start
        shapes.update(rgb.shape[:2] for rgb, _ in raw)
        start = cpu()
        image, mask = default_collate([train_set[i] for i in batch])
        getitem = cpu() - start
        trainer.model.train()
        source = cfg.train_source
        labels = source.resolve(trainer.model.num_classes, mask, None, trainer.label_stream)
        start = cpu()
        trainer.seg_step(segmentation_loss(trainer.fused(image, labels), mask))
        step1 = cpu() - start
        start = cpu()
        log_probs = trainer.fused(image, labels)
        step(trainer.aux_step_loss(log_probs, image, mask), trainer.aux_opt)
        joint = segmentation_loss(log_probs, mask) + cfg.aux_weight * trainer.aux_joint_loss(log_probs, image)
        trainer.seg_step(joint, trainer.aux_opt)
        steps23 = cpu() - start
        start = cpu()
        trainer.labeler_iteration(image, mask)
        labeler = cpu() - start
        if it:
            for name, value in zip(COMPONENTS, (decode, getitem, step1, steps23, labeler)):
                times[name].append(value)
            times["train"].append(step1 + steps23 + labeler)
    loader = make_loader(cfg, val_set.subset(eval_images), shuffle=False)
    sources = [LabelSource.parse(text, tau=cfg.tau) for text in ("none", "oracle", "labeler")]
    evaluate_model(trainer.model, make_loader(cfg, val_set.subset(1, seed=1), shuffle=False), sources)  # warm-up
    start = cpu()
    evaluate_model(trainer.model, loader, sources, tau=cfg.tau)
    times["eval_image"].append((cpu() - start) / eval_images)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"median": {name: statistics.median(values) for name, values in times.items()},
            "user": usage.ru_utime, "system": usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "iterations": iterations, "train_images": len(train_set), "val_images": len(val_set),
            "batch": cfg.batch_size, "file_shapes": sorted(shapes), "crop": crop, "resize": resize,
            "threads": torch.get_num_threads()}


def run_child(args, resize: int | None, crop: int) -> dict:
    command = [sys.executable, __file__, "--root", args.root, "--iterations", str(args.iterations),
               "--eval-images", str(args.eval_images), "--crop-size", str(crop), "--resize", str(resize or 0),
               "--child"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result


def epoch_estimate(r: dict) -> float:
    """CPU seconds of one epoch: its full batches' iterations (data included) and the val images once."""
    iterations = r["train_images"] // r["batch"]
    return iterations * (r["median"]["getitem"] + r["median"]["train"]) + r["val_images"] * r["median"]["eval_image"]


def table(old: dict, new: dict) -> str:
    def size(r):
        scale = "files' size" if r["resize"] is None else f"resize {r['resize']}"
        return f"{scale} / crop {r['crop']}"

    lines = [f"| CPU s per iteration (batch {old['batch']}) | old: {size(old)} | new: {size(new)} | old / new |",
             "|---|---:|---:|---:|"]
    for name in (*COMPONENTS[:-1], "train", "eval_image"):
        a, b = old["median"][name], new["median"][name]
        lines.append(f"| {LABELS[name]} | {a:.3f} | {b:.3f} | {a / b:.1f} |")
    a, b = epoch_estimate(old), epoch_estimate(new)
    lines.append(f"| one epoch, estimated ({old['train_images'] // old['batch']} iterations + "
                 f"{old['val_images']} val images) | {a:.0f} | {b:.0f} | {a / b:.1f} |")
    for key, label in (("user", "process CPU user s (whole child)"), ("system", "process CPU system s (whole child)"),
                       ("peak_rss_mib", "peak RSS, MiB"), ("wall", "child's wall s")):
        lines.append(f"| {label} | {old[key]:.1f} | {new[key]:.1f} | {old[key] / max(new[key], 1e-9):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a dataset in the folder layout (e.g. ../shared/data/msrc21)")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per setting (default 3)")
    parser.add_argument("--resize", type=int, default=128, help="longer side of the new setting (default 128)")
    parser.add_argument("--crop-size", type=int, default=96, help="crop of the new setting (default 96)")
    parser.add_argument("--old-crop-size", type=int, default=320, help="crop of the old setting (default 320)")
    parser.add_argument("--eval-images", type=int, default=8, help="val images timed (default 8)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.root, args.resize or None, args.crop_size, args.iterations, args.eval_images)))
        return 0
    old = run_child(args, None, args.old_crop_size)
    new = run_child(args, args.resize, args.crop_size)
    print(f"file sizes (H, W) seen: {old['file_shapes']}; torch threads {old['threads']}; "
          f"median of {args.iterations} iterations after one warm-up\n")
    print(table(old, new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
