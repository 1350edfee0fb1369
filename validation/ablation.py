#!/usr/bin/env python
"""The paper's ablations (Tables 1-3) on synthetic scenes: every row trained to the same number of
segmenter updates, several seeds, paired tests against each row's reference, the paper beside us
(see imgpix.experiments.ablation and validation/README.md).

    python validation/ablation.py                 # the default run: 3 seeds
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

    from imgpix.data.synthetic import PRESETS as SCENE_PRESETS
    from imgpix.experiments import ablation
    from imgpix.experiments.cli import OneLineErrors, add_common_options, field_default

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
    p.add_argument("--update-docs", action="store_true",
                   help="write the tables between the ablation markers of validation/README.md")
    return p


def run(argv: list[str] | None) -> int:
    from imgpix.experiments import ablation
    from imgpix.experiments.cli import check_before_work
    from imgpix.experiments.report import splice

    args = build_parser().parse_args(argv)
    cfg = ablation.AblationConfig(seeds=args.seeds, quick=args.quick, epochs=args.epochs, num_train=args.num_train,
                                  num_val=args.num_val, image_size=args.image_size, scene_preset=args.scene_preset,
                                  model=args.model, labeler_model=args.labeler, device=args.device)
    check_before_work(args.device, args.out, RESULTS, args.cache_dir)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    summary = ablation.run(cfg, out=args.out, force=args.force, cache_dir=args.cache_dir, progress=args.progress,
                           log=log, jobs=args.jobs, threads=args.threads, results_root=RESULTS)
    if args.update_docs:
        command = " ".join(argv if argv is not None else sys.argv[1:])
        splice(Path(__file__).resolve().parent / "README.md", "ablation", ablation.docs_markdown(summary, command))
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
