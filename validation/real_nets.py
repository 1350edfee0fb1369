#!/usr/bin/env python
"""Which nets learn from MSRC-21's training photographs from scratch on one CPU core: a selection on ``val``.

Trains each candidate (:data:`CANDIDATES`) with the noise experiment's baseline recipe (no fusion, no labels
in training, no generator, a labeler trained beside it in the first quarter of the epochs; SGD with a cosine
schedule, batch 16, channels_last) on the ``train`` split through ``imgpix.train.train``, then evaluates it
on ``val`` (never ``test``: this script chooses settings, so it only ever reads the selection split):
unfused MIOU, MIOU with oracle labels fused post hoc, the labeler's mAP, segmenter updates, CPU seconds per
update, and the change of val MIOU over the last quarter of the epochs (is it still rising?). Writes
``real_nets.md`` in ``--out`` (and, for the default run, ``validation/real_nets.md``): the table and the
choice, made by :func:`choose` from the measured numbers.

Why these candidates: imgpix's ``tiny`` FCN sees at most 36 px around a pixel at the resolution it is
trained at (its receptive field). On MSRC's 320 px photographs that is a texture classifier; scaling the
photographs down (``--resize``) makes the same 36 px cover a larger part of the scene, and is what makes a
CPU epoch affordable (``benchmarks/profile_real.py``). A torchvision segmenter (LR-ASPP on MobileNetV3,
``weights=None``) sees the whole crop. Nothing is downloaded: every net starts from random weights.

    python validation/real_nets.py [--root ../shared/data/msrc21] [--out results/real_nets]
    python validation/real_nets.py --quick --root DIR --out DIR    # 1 epoch on a few images (tests, CI)

Run it in a process of one torch thread (``OMP_NUM_THREADS=1``): the CPU seconds it reports are one core's.
Rerunning the same command resumes: finished candidates are evaluated again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_ROOT = "../shared/data/msrc21"
RESULTS = Path("results/real_nets")
DOC = Path(__file__).with_name("real_nets.md")
EVAL_SPLIT = "val"  # the selection split; test is for the final numbers, read once elsewhere
BUDGET_CPU_S = 9 * 60  # one core's seconds per model: 3 seeds x 2 models on 2 cores in <= 30 min, evaluation aside
TIE = 1.0  # MIOU points: within this of the best, the cheaper candidate is chosen
RISING = 1.0  # MIOU points gained over the last quarter of the epochs: still rising


@dataclass(frozen=True)
class Candidate:
    """A net and the scale it trains at: segmenter, labeler, longer side of the scaled photographs, crop, epochs."""

    name: str
    model: str
    labeler: str
    resize: int
    crop: int
    epochs: int
    why: str


CANDIDATES = (
    Candidate("tiny-128", "tiny", "tiny", 128, 96, 32, "imgpix's tiny FCN at the new default scale"),
    Candidate("tiny-96", "tiny", "tiny", 96, 64, 60, "the same net at a cheaper scale"),
    Candidate("lraspp-128", "lraspp_mobilenet_v3_large", "mobilenet_v3_small", 128, 96, 34,
              "torchvision's LR-ASPP (MobileNetV3-large, random init), MobileNetV3-small labeler"),
)


def train_config(c: Candidate, root: str, quick: bool = False, epochs: int | None = None):
    """The baseline recipe of the noise experiment for candidate ``c`` (``quick``: 1 epoch of a few images)."""
    from imgpix.config import TrainConfig
    from imgpix.experiments.noisy_labels.design import LR_SCHEDULE

    epochs = epochs or (1 if quick else c.epochs)
    cfg = TrainConfig(data="folder", root=root, model=c.model, labeler=c.labeler, fusion=None, train_labels="none",
                      generator=False, lr_schedule=LR_SCHEDULE, batch_size=16, epochs=epochs,
                      labeler_epochs=max(1, round(epochs / 4)), resize=c.resize, crop_size=c.crop,
                      eval_split=EVAL_SPLIT, channels_last=True, progress=False)
    if quick:
        from imgpix.data.loaders import build_split

        train_images = len(build_split(cfg, "train"))
        cfg = replace(cfg, batch_size=min(4, train_images), num_train=min(8, train_images),
                      num_val=min(4, len(build_split(cfg, EVAL_SPLIT))))
    return cfg


def run_candidate(c: Candidate, args, log) -> dict:
    """Train ``c`` (or resume: a finished run trains nothing), evaluate on val; one row of the table."""
    import pandas as pd

    from imgpix.evaluate import evaluate_checkpoint
    from imgpix.train import train

    out = Path(args.out) / c.name
    cfg = train_config(c, args.root, args.quick, args.epochs)
    timing_file = out / "timing.json"
    if not (timing_file.exists() and json.loads(timing_file.read_text())["epochs"] == cfg.epochs):
        load, cpu, wall = os.getloadavg()[0], time.process_time(), time.perf_counter()
        train(cfg, out, log=log)
        timing = {"epochs": cfg.epochs, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                  "load_start": load, "load_end": os.getloadavg()[0]}
        timing_file.write_text(json.dumps(timing, indent=1))
    timing = json.loads(timing_file.read_text())
    evaluation = evaluate_checkpoint(out / "checkpoint.pt", ["none", "oracle", "labeler"], eval_split=EVAL_SPLIT)
    miou = evaluation.table["MIOU"].tolist()
    history = pd.read_csv(out / "metrics.csv")
    quarter = history.iloc[max(0, (3 * len(history)) // 4 - 1)]
    half = history.iloc[max(0, len(history) // 2 - 1)]
    last = history.iloc[-1]
    updates = int(last["updates"])
    return {"candidate": c.name, "segmenter": c.model, "labeler": c.labeler, "resize": c.resize, "crop": c.crop,
            "epochs": cfg.epochs, "updates": updates, "unfused MIOU": miou[0], "oracle MIOU (post-hoc)": miou[1],
            "labeler mAP": 100 * evaluation.labeler["mAP"], "PA": evaluation.table["PA"].iloc[0],
            "CPU s / update": timing["cpu_s"] / updates, "train CPU min": timing["cpu_s"] / 60,
            "train wall min": timing["wall_s"] / 60, "load": f"{timing['load_start']:.1f}-{timing['load_end']:.1f}",
            "last-quarter MIOU change": float(last["MIOU"] - quarter["MIOU"]),
            "second-half MIOU change": float(last["MIOU"] - half["MIOU"]),
            "num_classes": cfg.info.num_classes}


def choose(rows: list[dict]) -> str:
    """The choice, in words, from the measured rows: among the candidates that learned (unfused val MIOU above
    ``100 / N``, what one class everywhere scores at most) and fit :data:`BUDGET_CPU_S`, the best unfused
    MIOU; within :data:`TIE` points of it, the cheapest per update."""
    n = rows[0]["num_classes"]
    learned = [r for r in rows if r["unfused MIOU"] > 100 / n]
    failed = [r["candidate"] for r in rows if r not in learned]
    fits = [r for r in learned if r["train CPU min"] * 60 <= BUDGET_CPU_S * 1.1]
    text = []
    if failed:
        text.append(f"{', '.join(failed)}: did not learn (unfused MIOU at most {100 / n:.1f}, what one class "
                    "everywhere can score): a failed training, not a result.")
    if not fits:
        return " ".join(text + ["No candidate both learned and fits the budget: nothing is chosen."])
    best = max(r["unfused MIOU"] for r in fits)
    chosen = min((r for r in fits if r["unfused MIOU"] >= best - TIE), key=lambda r: r["CPU s / update"])
    cold = 3 * 2 * chosen["train CPU min"] / 2
    text.append(
        f"Chosen: **{chosen['candidate']}** ({chosen['segmenter']} with the {chosen['labeler']} labeler), photographs "
        f"scaled to a longer side of {chosen['resize']} px, random crops of {chosen['crop']} px, {chosen['epochs']} "
        f"epochs = {chosen['updates']} segmenter updates at batch 16. On val it reaches {chosen['unfused MIOU']:.1f} "
        f"unfused MIOU, {chosen['oracle MIOU (post-hoc)']:.1f} with oracle labels fused post hoc, and a labeler mAP "
        f"of {chosen['labeler mAP']:.1f}. Rule: of the candidates that learned and fit {BUDGET_CPU_S // 60} CPU "
        f"minutes per model, the best unfused MIOU, or the cheapest per update within {TIE:g} point of it. One model "
        f"took {chosen['train CPU min']:.1f} CPU minutes, so the noise experiment's 3 seeds x (unfused baseline with "
        f"labeler, oracle-fused model) at matched updates need at most about {cold:.0f} minutes on 2 cores (the fused "
        "model, without a labeler, costs less; evaluation aside).")
    rising = [r for r in rows if r["last-quarter MIOU change"] > RISING]
    if rising:
        gains = ", ".join(f"{r['candidate']} (+{r['last-quarter MIOU change']:.1f}; doubling its updates: about "
                          f"+{max(r['second-half MIOU change'], 0):.0f})" for r in rising)
        text.append(f"Still rising at the end (more than {RISING:g} MIOU point over the last quarter of the epochs): "
                    f"{gains}. The estimate assumes val MIOU grows linearly in log(updates), so that a doubling adds "
                    "what the second half of this run added; the cosine schedule anneals the learning rate in that "
                    "half, so part of its gain is the annealing and the estimate is an upper one.")
    return " ".join(text)


COLUMNS = ("candidate", "segmenter", "labeler", "resize", "crop", "epochs", "updates", "unfused MIOU",
           "oracle MIOU (post-hoc)", "labeler mAP", "CPU s / update", "train CPU min", "train wall min", "load",
           "last-quarter MIOU change")


def report(rows: list[dict], args) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)[list(COLUMNS)].to_markdown(index=False, floatfmt=".2f")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
    return "\n".join([
        f"# Nets that learn from {Path(args.root).name} on one CPU core ({EVAL_SPLIT} split)", "",
        f"`python validation/real_nets.py{' --quick' if args.quick else ''}`, one torch thread, {cpu}; "
        "`load`: the 1-minute load average at the start and end of each training. "
        "Every net starts from random weights; trained on `train`, scored on `val` at the training scale (the "
        "photographs' longer side = `resize`; a smaller scale is scored on coarser masks, so MIOU across scales "
        "compares what each setting delivers, not the nets at one resolution). "
        "Recipe: the noise experiment's baseline (unfused, no labels in "
        "training, no generator, labeler in the first quarter of the epochs, SGD lr 0.05 with a cosine schedule, "
        "batch 16). MIOU and mAP in percent; `last-quarter MIOU change`: val MIOU of the last epoch minus that "
        "three quarters through.", "", table, "", choose(rows), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="real_nets.py", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="dataset in the folder layout (default %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="runs and real_nets.md (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on at most 8 training images per candidate")
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--epochs", type=int, help="override every candidate's epochs (calibration)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no per-epoch log lines")
    args = parser.parse_args(argv)
    names = [c.name for c in CANDIDATES]
    only = args.only.split(",") if args.only else names
    if set(only) - set(names):
        parser.error(f"--only: unknown candidates {sorted(set(only) - set(names))}; choose from {names}")
    import torch

    from imgpix.runtime import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()

    def log(text: str) -> None:
        if args.progress:
            print(text, flush=True)

    rows = []
    for c in CANDIDATES:
        if c.name in only:
            log(f"== {c.name}: {c.why}")
            rows.append(run_candidate(c, args, log))
    text = report(rows, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "real_nets.md").write_text(text)
    if not args.quick and args.epochs is None and args.only is None and Path(args.out) == RESULTS:
        DOC.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
