#!/usr/bin/env python
"""The paper's ablations (Tables 1-3) on synthetic scenes: every row trained to the same number of
segmenter updates, several seeds, paired tests against each row's reference, the paper beside us
(see imgpix.experiments.ablation and validation/README.md).

    python validation/ablation.py                 # the default run: 3 seeds
    python validation/ablation.py --quick         # smoke test
    python validation/ablation.py --seeds 5 --out results/ablation/five

An interrupted run resumes when the same command is run again; trained models are cached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from imgpix.experiments import ablation
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix.experiments import ablation

from imgpix.experiments.cli import OneLineErrors, int_at_least  # noqa: E402
from imgpix.experiments.report import ExperimentError, splice  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    quick, default = ablation.PRESETS["quick"], ablation.PRESETS["default"]
    p = OneLineErrors(prog="ablation.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int_at_least(2), default=None,
                   help=f"seeds (models retrained per seed), >= 2 (default {ablation.DEFAULT_SEEDS['default']}; "
                        f"--quick {ablation.DEFAULT_SEEDS['quick']})")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    p.add_argument("--out", type=Path, default=None, help="output directory (default results/ablation/<timestamp>; "
                                                           "an unfinished run of the same settings is resumed)")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="trained-model cache (default $IMGPIX_CACHE or ~/.cache/imgpix)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (training included)")
    p.add_argument("--update-docs", action="store_true",
                   help="write the tables between the ablation markers of validation/README.md")
    p.add_argument("--jobs", type=int_at_least(1), default=2,
                   help="models trained at once, one process and one torch thread each (default 2: the two cores "
                        "the default run is sized for); with more than 1 the per-model bars are off")
    p.add_argument("--epochs", type=int_at_least(1), default=None,
                   help="epochs of the variants with a generator or discriminator (two segmenter updates per "
                        f"iteration); the others train twice as many (default {default['epochs']}; "
                        f"--quick {quick['epochs']})")
    p.add_argument("--num-train", type=int_at_least(1), default=None,
                   help=f"training images per epoch (default {default['num_train']}; --quick {quick['num_train']})")
    p.add_argument("--num-val", type=int_at_least(1), default=None,
                   help=f"validation images evaluated (default {default['num_val']}; --quick {quick['num_val']})")
    p.add_argument("--image-size", type=int_at_least(16), default=None,
                   help=f"image side in pixels (default {default['image_size']})")
    return p


def _timing(timings: dict) -> str:
    if not timings["cells_computed"]:
        return f"this command rewrote the outputs from the saved cells in {timings['wall_s']:.0f} s"
    return f"this command computed {timings['cells_computed']} cells in {timings['wall_s']:.0f} s wall"


def docs_markdown(summary: dict, argv: list[str] | None) -> str:
    """The tables, with how and where they were measured, for validation/README.md."""
    command = " ".join(argv if argv is not None else sys.argv[1:])
    versions = summary["versions"]
    updates = sorted({v["segmenter_updates"] for v in summary["variants"].values()})
    train = sum(sum(v["train_seconds"]) for v in summary["variants"].values())
    head = (f"Measured by `python validation/ablation.py {command}` ({summary['config']['seeds']} seeds, "
            f"{', '.join(map(str, updates))} segmenter updates for every row, {versions['platform']}, "
            f"{versions['cpu']}, torch {versions['torch']}; training took {train:.0f} s summed over the models; "
            f"{_timing(summary['timings'])}). {summary['paper_note']}")
    return head + "\n\n" + "\n".join(summary["markdown"].values())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        cfg = ablation.AblationConfig(seeds=args.seeds, quick=args.quick, epochs=args.epochs,
                                      num_train=args.num_train, num_val=args.num_val, image_size=args.image_size)
        summary = ablation.run(cfg, out=args.out, force=args.force, cache_dir=args.cache_dir,
                               progress=not args.no_progress, log=log, jobs=args.jobs)
        if args.update_docs:
            splice(Path(__file__).resolve().parent / "README.md", "ablation", docs_markdown(summary, argv))
    except (ExperimentError, ValueError, FileNotFoundError) as error:
        print(f"ablation.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nablation.py: interrupted; finished cells are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    print("\n".join(summary["markdown"].values()))
    print(f"wrote {summary['out']} ({summary['timings']['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
