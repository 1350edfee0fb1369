#!/usr/bin/env python
"""Measure the synthetic scenes: appearance ambiguity, label statistics, the labeler's mAP, the segmenter
(see imgpix.experiments.scene_stats). Each section is a Markdown table, printed and, with --out, written.

    python validation/scene_stats.py --out validation/scene_stats.md       # all sections
    python validation/scene_stats.py --sections appearance,presets --quick  # seconds
    python validation/scene_stats.py --update-docs                          # rewrite validation/README.md's tables

Exit status: 0 when done, 2 for bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROG = "scene_stats.py"


def build_parser():
    import argparse

    from imgpix.experiments.cli import OneLineErrors, int_in_range
    from imgpix.experiments.scene_stats import SECTIONS

    def sections(text: str) -> list[str]:
        chosen = [s for s in text.split(",") if s]
        unknown = sorted(set(chosen) - set(SECTIONS))
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
        return chosen

    p = OneLineErrors(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown report to this file")
    p.add_argument("--sections", type=sections, default=list(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--threads", type=int_in_range(1), default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--update-docs", action="store_true",
                   help="also rewrite the scene_stats section of validation/README.md")
    return p


def run(argv: list[str] | None) -> int:
    import platform
    from dataclasses import replace

    import torch

    from imgpix.experiments import scene_stats
    from imgpix.experiments.cli import check_writable
    from imgpix.experiments.report import splice
    from imgpix.files import write_atomic

    args = build_parser().parse_args(argv)
    if args.out is not None:
        if args.out.is_dir():
            raise ValueError(f"--out {args.out} is a directory; name a file")
        check_writable(args.out.parent, "--out")
    torch.set_num_threads(args.threads)
    sizes = replace(scene_stats.Sizes.quick() if args.quick else scene_stats.Sizes(), progress=args.progress)
    report = scene_stats.report(args.sections, sizes, log=lambda text: print(text, flush=True))
    if args.out:
        write_atomic(args.out, report)
    if args.update_docs:
        command = " ".join(["python validation/scene_stats.py", *(argv if argv is not None else sys.argv[1:])])
        header = (f"Measured by `{command}` ({args.threads} thread(s), {platform.platform()}, torch "
                  f"{torch.__version__}); section times in parentheses.\n\n")
        splice(Path(__file__).resolve().parent / "README.md", "scene_stats", header + report.replace("## ", "### "))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        import imgpix  # noqa: F401  (light: its submodules load on first use)
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix.experiments.cli import script_main

    return script_main(PROG, run, argv, "nothing is kept, rerun the same command")


if __name__ == "__main__":
    sys.exit(main())
