#!/usr/bin/env python
"""Noisy image-level labels (the paper's §3.2), against a fair baseline and against the theory.

Trains, per seed and on the same budget of segmenter updates, a network without labels (the
baseline), one with oracle labels fused (the paper's training) and one with the labeler's labels fused
(the paper's protocol), then evaluates each with no labels, oracle labels, Cases 1-3 (m outliers, k kept
classes) and the image labeler at tau. Writes tables, claims decided over seeds, the theory's verdicts
and plots; see validation/README.md. On real data (--data folder --root DIR) every reported number comes
from the test split and every choice from val.

    python validation/noisy_labels.py --m 3 --k 1
    python validation/noisy_labels.py --quick                    # 1 seed, small budget (CI)
    python validation/noisy_labels.py --data folder --root ../shared/data/msrc21 --models unfused,fused
    python validation/noisy_labels.py --ambiguity-sweep          # gains against scene ambiguity
    python validation/noisy_labels.py --out DIR --shard 0/2 &    # seeds 0, 2, ... in one process,
    python validation/noisy_labels.py --out DIR --shard 1/2 &    # seeds 1, 3, ... in another,
    wait; python validation/noisy_labels.py --out DIR --merge    # then the outputs

Exit status: 0 for a completed run (whatever the science says), 2 for bad arguments or data,
130 when interrupted (rerun the same command to resume), 1 when a --require'd claim is not supported.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROG = "noisy_labels.py"
RESULTS = Path("results/noisy_labels")


def build_parser():
    import argparse

    from imgpix.data import DATASETS
    from imgpix.data.synthetic import PRESETS as SCENE_PRESETS
    from imgpix.experiments import noisy_labels as nl
    from imgpix.experiments.cli import CORES, OneLineErrors, add_common_options, field_default, int_in_range, shard

    def default(name):
        return field_default(nl.NoiseConfig, name)

    p = OneLineErrors(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(p, nl.NoiseConfig, nl.PRESETS, min_seeds=1, seeds_help=(
                           f"models retrained per seed (default {default('seeds')}; --quick 1)"), jobs=CORES,
                       jobs_help=f"models trained, then seeds evaluated, in parallel processes (default: the {CORES} "
                                 "cores)", results=str(RESULTS), epochs_help="training epochs of every model")
    p.add_argument("--m", type=int_in_range(0), default=default("m"), help="outlier object labels per image "
                   "(default %(default)s)")
    p.add_argument("--k", type=int_in_range(1), default=default("k"), help="true object classes kept per image "
                   "(default %(default)s)")
    p.add_argument("--tau", type=float, default=default("tau"), help="labeler threshold (default %(default)s)")
    p.add_argument("--models", default=",".join(default("models")),
                   help=f"comma-separated, from {','.join(nl.MODELS)}; {nl.BASELINE!r} is the baseline "
                        "(default %(default)s)")
    p.add_argument("--data", choices=DATASETS, default=default("data"), help="dataset (default %(default)s)")
    p.add_argument("--root", help="dataset folder for --data voc or folder")
    p.add_argument("--classes", help="class-list file of --data folder (default: found in --root)")
    p.add_argument("--background", default=default("background"), help="class always kept: auto, none, a name or an id")
    p.add_argument("--scene-preset", choices=sorted(SCENE_PRESETS), default=default("scene_preset"),
                   help="synthetic scene statistics (default %(default)s)")
    p.add_argument("--ambiguity", type=float, default=default("ambiguity"),
                   help="scene ambiguity in [0, 1] (default %(default)s)")
    p.add_argument("--ambiguity-sweep", action="store_true", help=f"also train at ambiguity {nl.AMBIGUITIES}")
    p.add_argument("--no-protect-background", dest="protect_background", action="store_false",
                   help="let k drop and m add background like any class (default: background always kept)")
    p.add_argument("--generator", action="store_true", help="train with the generator (Eq. 3)")
    p.add_argument("--resize", type=int_in_range(16), default=None,
                   help="real data: the images' longer side in pixels (default "
                        f"{nl.PRESETS['real-default']['resize']}; --quick {nl.PRESETS['real-quick']['resize']})")
    p.add_argument("--eval-split", default=None,
                   help="the split every reported number comes from (default: test on real data, where choices are "
                        "made on val; val on synthetic scenes, where they are made on a separate 'select' set)")
    p.add_argument("--budget-check", action="store_true",
                   help=f"also train seed 0 of every model at {nl.BUDGET_FACTOR}x the epochs and compare (convergence)")
    p.add_argument("--shard", type=shard, default=None, metavar="I/N", help="compute seeds I, I+N, ... only")
    p.add_argument("--merge", action="store_true", help="compute nothing; write the outputs from the seed files")
    p.add_argument("--require", default="", metavar="CLAIM[,CLAIM]",
                   help="exit 1 unless each named claim (see claims.csv) is supported at 95%%")
    p.add_argument("--update-docs", action="store_true",
                   help="write the report into validation/README.md, between the markers of its dataset "
                        "(noisy_labels for the synthetic scenes, noisy_labels_<root folder name> for real data)")
    p.add_argument("--headline", action="store_true",
                   help="with --update-docs: also write this run's headline into README.md (the real-data run's)")
    return p


def run(argv: list[str] | None) -> int:
    from imgpix.experiments import noisy_labels as nl
    from imgpix.experiments.cli import check_before_work
    from imgpix.experiments.report import splice

    args = build_parser().parse_args(argv)
    cfg = nl.NoiseConfig(m=args.m, k=args.k, tau=args.tau, seeds=args.seeds or (1 if args.quick else 3),
                         quick=args.quick, models=tuple(args.models.split(",")), data=args.data, root=args.root,
                         classes=args.classes, background=args.background, scene_preset=args.scene_preset,
                         ambiguity=args.ambiguity, ambiguity_sweep=args.ambiguity_sweep,
                         protect_background=args.protect_background, generator=args.generator,
                         model=args.model, labeler_model=args.labeler,
                         epochs=args.epochs, num_train=args.num_train, num_val=args.num_val,
                         image_size=args.image_size, resize=args.resize, eval_split=args.eval_split,
                         budget_check=args.budget_check, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device)
    required = [c for c in args.require.split(",") if c]
    unknown = set(required) - set(nl.CLAIMS)
    if unknown:
        raise ValueError(f"--require: unknown claims {sorted(unknown)}; known: {', '.join(nl.CLAIMS)}")
    check_before_work(args.device, args.out, RESULTS, args.cache_dir)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    command = " ".join(argv if argv is not None else sys.argv[1:])
    summary = nl.run(cfg, args.out, args.force, args.cache_dir, args.shard, args.merge, args.progress,
                     args.jobs, args.threads, log, results_root=RESULTS, command=command)
    if summary is None:
        return 0
    if args.update_docs:
        repo = Path(__file__).resolve().parents[1]
        marker = "noisy_labels" if cfg.data == "synthetic" else f"noisy_labels_{Path(cfg.root).resolve().name}"
        splice(repo / "validation" / "README.md", marker, nl.report_markdown(summary))
        if args.headline:
            splice(repo / "README.md", "noisy_labels_headline", nl.headline_markdown(summary))
    print(summary["markdown"]["table"])
    print(summary["markdown"]["claims"])
    print(summary["markdown"]["verdicts"])
    print(f"results: {summary['out']}")
    failed = [c["claim"] for c in summary["claims"] if c["claim"] in required and not c["supported"]]
    if failed:
        print(f"{PROG}: required claims not supported: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        import imgpix  # noqa: F401  (light: its submodules load on first use)
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix.experiments.cli import script_main

    return script_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
