#!/usr/bin/env python
"""The paper's ablations (Tables 1-3) on real photographs or synthetic scenes: every row trained to the same
number of segmenter updates (one generator arm to the same epochs), auxiliary weights and the addition's
learning rate tuned on the selection split, several seeds, each row against its reference decided over
seeds, collapsed runs flagged, the paper beside us (see imgpix.experiments.ablation and validation/README.md).
On real data every reported number comes from the test split and every choice from val.

    python validation/ablation.py --data folder --root ../shared/data/msrc21   # MSRC-21, 3 seeds
    python validation/ablation.py                 # synthetic scenes (one fixed training set), 3 seeds
    python validation/ablation.py --quick         # smoke test
    python validation/ablation.py --seeds 5 --out results/ablation/five

An interrupted run resumes when the same command is run again; trained models are cached.
Exit status: 0 for a completed run, 2 for bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROG = "ablation.py"
RESULTS = Path("results/ablation")


def build_parser():
    import argparse

    from imgpix.data import DATASETS
    from imgpix.data.synthetic import PRESETS as SCENE_PRESETS
    from imgpix.experiments import ablation
    from imgpix.experiments.cli import OneLineErrors, add_common_options, field_default, int_in_range

    p = OneLineErrors(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    seeds = ablation.DEFAULT_SEEDS
    add_common_options(p, ablation.AblationConfig, ablation.PRESETS, min_seeds=2, seeds_help=(
                           f"seeds (models retrained per seed), >= 2 (default {seeds['default']}; --quick "
                           f"{seeds['quick']})"), jobs=2,
                       jobs_help="models trained at once, one process each (default 2: the two cores the default "
                                 "run is sized for); with more than 1 the per-model bars are off",
                       results=str(RESULTS), epochs_help="epochs of the variants with a generator or discriminator "
                                                         "(two segmenter updates per iteration); the others train "
                                                         "twice as many")
    p.add_argument("--scene-preset", choices=sorted(SCENE_PRESETS),
                   default=field_default(ablation.AblationConfig, "scene_preset"),
                   help="synthetic scene statistics (default %(default)s)")
    p.add_argument("--data", choices=DATASETS, default=field_default(ablation.AblationConfig, "data"),
                   help="dataset (default %(default)s)")
    p.add_argument("--root", help="dataset folder for --data voc or folder")
    p.add_argument("--classes", help="class-list file of --data folder (default: found in --root)")
    p.add_argument("--background", default=field_default(ablation.AblationConfig, "background"),
                   help="class always kept: auto, none, a name or an id")
    p.add_argument("--resize", type=int_in_range(16), default=None,
                   help="real data: the images' longer side in pixels (default "
                        f"{ablation.PRESETS['real-default']['resize']}; --quick "
                        f"{ablation.PRESETS['real-quick']['resize']})")
    p.add_argument("--eval-split", default=None,
                   help="the split every reported number comes from (default: test on real data, where choices are "
                        "made on val; val on synthetic scenes, where they are made on a separate 'select' set)")
    p.add_argument("--fresh-scenes", dest="fixed_train", action="store_false",
                   help="synthetic: fresh training scenes every epoch (default: one fixed training set)")
    p.add_argument("--no-tune", dest="tune", action="store_false",
                   help="skip the sweep of the auxiliary weights and the addition's learning rate (use imgpix's "
                        "defaults)")
    p.add_argument("--update-docs", action="store_true",
                   help="write the tables into validation/README.md, between the markers of its dataset (ablation "
                        "for the synthetic scenes, ablation_<root folder name> for real data)")
    return p


def run(argv: list[str] | None) -> int:
    from imgpix.experiments import ablation
    from imgpix.experiments.cli import check_before_work
    from imgpix.experiments.report import splice

    args = build_parser().parse_args(argv)
    cfg = ablation.AblationConfig(seeds=args.seeds, quick=args.quick, epochs=args.epochs, num_train=args.num_train,
                                  num_val=args.num_val, image_size=args.image_size, scene_preset=args.scene_preset,
                                  fixed_train=args.fixed_train, data=args.data, root=args.root, classes=args.classes,
                                  background=args.background, resize=args.resize, eval_split=args.eval_split,
                                  tune=args.tune, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  model=args.model, labeler_model=args.labeler, device=args.device)
    check_before_work(args.device, args.out, RESULTS, args.cache_dir)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    summary = ablation.run(cfg, out=args.out, force=args.force, cache_dir=args.cache_dir, progress=args.progress,
                           log=log, jobs=args.jobs, threads=args.threads, results_root=RESULTS)
    if args.update_docs:
        command = " ".join(argv if argv is not None else sys.argv[1:])
        marker = "ablation" if cfg.data == "synthetic" else f"ablation_{Path(cfg.root).resolve().name}"
        splice(Path(__file__).resolve().parent / "README.md", marker, ablation.docs_markdown(summary, command))
    print("\n".join(summary["markdown"].values()))
    print(f"wrote {summary['out']} ({summary['timings']['wall_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        import imgpix  # noqa: F401  (light: its submodules load on first use)
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix.experiments.cli import script_main

    return script_main(PROG, run, argv, "finished cells are saved, rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
