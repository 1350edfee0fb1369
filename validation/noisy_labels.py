#!/usr/bin/env python
"""Noisy image-level labels (the paper's §3.2), against a fair baseline and against the theory.

Trains, per seed and on the same budget of segmenter updates, a network without labels (the
baseline) and one with oracle labels fused (the paper's setting), then evaluates both with no
labels, oracle labels, Cases 1-3 (m outliers, k kept classes) and the image labeler at tau.
Writes tables, paired claims, the theory's verdicts and plots; see validation/README.md.

    python validation/noisy_labels.py --m 3 --k 1
    python validation/noisy_labels.py --quick                    # 1 seed, small budget (CI)
    python validation/noisy_labels.py --ambiguity-sweep          # gains against scene ambiguity
    python validation/noisy_labels.py --out DIR --shard 0/2 &    # seeds 0, 2, ... in one process,
    python validation/noisy_labels.py --out DIR --shard 1/2 &    # seeds 1, 3, ... in another,
    wait; python validation/noisy_labels.py --out DIR --merge    # then the outputs

Exit status: 0 for a completed run (whatever the science says), 2 for bad arguments or data,
130 when interrupted (rerun the same command to resume), 1 when a --require'd claim is not supported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

try:
    from imgpix.experiments import noisy_labels as nl
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix.experiments import noisy_labels as nl

from imgpix.data import DATASETS
from imgpix.experiments.cli import OneLineErrors, int_at_least
from imgpix.experiments.report import ExperimentError, splice
from imgpix.labels import DEFAULT_TAU

CORES = len(os.sched_getaffinity(0))


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n with integers 0 <= i < n (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard i/n must satisfy 0 <= i < n, got {text!r}")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="noisy_labels.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int_at_least(0), default=3, help="outlier object labels per image (default 3)")
    p.add_argument("--k", type=int_at_least(1), default=1, help="true object classes kept per image (default 1)")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU, help=f"labeler threshold (default {DEFAULT_TAU})")
    p.add_argument("--seeds", type=int_at_least(1), default=None, help="models retrained per seed (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="small budget and one seed (the CI run)")
    p.add_argument("--models", default="unfused,fused",
                   help=f"comma-separated, from {','.join(nl.MODELS)}; 'unfused' is the baseline (default %(default)s)")
    p.add_argument("--data", choices=DATASETS, default="synthetic", help="dataset (default %(default)s)")
    p.add_argument("--root", help="dataset folder for --data voc or folder")
    p.add_argument("--classes", help="class-list file of --data folder (default: found in --root)")
    p.add_argument("--background", default="auto", help="class always kept: auto, none, a name or an id")
    p.add_argument("--scene-preset", default="voc", help="synthetic scene statistics (default %(default)s)")
    p.add_argument("--ambiguity", type=float, default=1.0, help="scene ambiguity in [0, 1] (default 1)")
    p.add_argument("--ambiguity-sweep", action="store_true", help=f"also train at ambiguity {nl.AMBIGUITIES}")
    p.add_argument("--no-protect-background", dest="protect_background", action="store_false",
                   help="let k drop and m add background like any class (default: background always kept)")
    p.add_argument("--generator", action="store_true", help="train with the generator (Eq. 3)")
    p.add_argument("--epochs", type=int_at_least(1), default=None, help="training epochs (overrides the budget)")
    p.add_argument("--num-train", type=int_at_least(1), default=None, help="training images per epoch")
    p.add_argument("--num-val", type=int_at_least(1), default=None, help="validation images evaluated")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int_at_least(1), default=CORES,
                   help=f"models trained, then seeds evaluated, in parallel processes (default: the {CORES} cores)")
    p.add_argument("--threads", type=int_at_least(1), default=1, help="torch threads per process (default 1)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default results/noisy_labels/<time>)")
    p.add_argument("--force", action="store_true", help="replace this command's files in an existing --out")
    p.add_argument("--cache-dir", type=Path, default=None, help="trained-model cache (default ~/.cache/imgpix)")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N", help="compute seeds I, I+N, ... only")
    p.add_argument("--merge", action="store_true", help="compute nothing; write the outputs from the seed files")
    p.add_argument("--require", default="", metavar="CLAIM[,CLAIM]",
                   help="exit 1 unless each named claim (see claims.csv) is supported at 95%%")
    p.add_argument("--update-docs", action="store_true",
                   help="write the report into validation/README.md and the headline into README.md (between markers)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = nl.NoiseConfig(m=args.m, k=args.k, tau=args.tau, seeds=args.seeds or (1 if args.quick else 3),
                             quick=args.quick, models=tuple(args.models.split(",")), data=args.data, root=args.root,
                             classes=args.classes, background=args.background, scene_preset=args.scene_preset,
                             ambiguity=args.ambiguity, ambiguity_sweep=args.ambiguity_sweep,
                             protect_background=args.protect_background, generator=args.generator,
                             epochs=args.epochs, num_train=args.num_train, num_val=args.num_val, device=args.device)
        required = [c for c in args.require.split(",") if c]
        unknown = set(required) - set(nl.CLAIMS)
        if unknown:
            raise ValueError(f"--require: unknown claims {sorted(unknown)}; known: {', '.join(nl.CLAIMS)}")
        log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        command = " ".join(argv if argv is not None else sys.argv[1:])
        summary = nl.run(cfg, args.out, args.force, args.cache_dir, args.shard, args.merge, args.progress,
                         args.jobs, args.threads, log, command=command)
        if summary is not None and args.update_docs:
            repo = Path(__file__).resolve().parents[1]
            splice(repo / "validation" / "README.md", "noisy_labels", nl.report_markdown(summary))
            splice(repo / "README.md", "noisy_labels_headline", nl.headline_markdown(summary))
    except KeyboardInterrupt:
        print("noisy_labels.py: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ExperimentError, OSError, ValueError) as error:
        print(f"noisy_labels.py: error: {error}", file=sys.stderr)
        return 2
    if summary is None:
        return 0
    print(summary["markdown"]["table"])
    print(summary["markdown"]["claims"])
    print(summary["markdown"]["verdicts"])
    failed = [c["claim"] for c in summary["claims"] if c["claim"] in required and not c["supported"]]
    if failed:
        print(f"noisy_labels.py: required claims not supported: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
