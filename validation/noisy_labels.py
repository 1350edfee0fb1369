#!/usr/bin/env python
"""Noisy image-level labels (the paper's §3.2, Cases 1-3): measured vs predicted degradation.

Trains (or loads from the cache) the fused segmentation model and its labeler,
then evaluates the validation split unfused (baseline), with exact labels
(oracle), with m outlier labels (case1), with only k true classes (case2) and
with both (case3); see validation/README.md.

    python validation/noisy_labels.py --m 3 --k 1
    python validation/noisy_labels.py --quick            # < 90 s, the CI gate
    python validation/noisy_labels.py --sweep --tau-sweep
    python validation/noisy_labels.py --sweep --out DIR --shard 0/2 &   # shard the sweep over
    python validation/noisy_labels.py --sweep --out DIR --shard 1/2 &   # processes, then merge
    wait; python validation/noisy_labels.py --sweep --out DIR --merge
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from imgpix import noise_experiment as nx
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgpix import noise_experiment as nx


def _bounded(check, convert):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _k_value(text: str):
    return None if text.strip().lower() in ("all", "none") else int(text)


def _grid(check, convert):
    item = _bounded(check, convert)

    def parse(text: str):
        values = [item(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return tuple(dict.fromkeys(values))

    return parse


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n with integers 0 <= i < n (e.g. 0/2), got {text!r}") from None
    try:
        return nx.check_shard(index, count)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="noisy_labels.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=_bounded(nx.check_m, int), default=3,
                   help=f"outlier labels added per image, 0 <= m <= {nx.M_MAX} (default 3)")
    p.add_argument("--k", type=_bounded(nx.check_k, int), default=1,
                   help=f"true classes kept per image, 1 <= k <= {nx.K_MAX} (default 1)")
    p.add_argument("--tau", type=_bounded(nx.check_tau, float), default=None,
                   help="labeler threshold of the 'labeler' row, 0 <= tau <= 1 (default: the model's, 0.25)")
    p.add_argument("--data", choices=["synthetic", "voc"], default="synthetic")
    p.add_argument("--root", help="dataset root for --data voc (VOCdevkit/ and SBD/ inside)")
    p.add_argument("--checkpoint", help="evaluate this checkpoint.pt (or its directory) instead of training")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="training and noise seed (default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default results/noisy_labels/<timestamp>)")
    p.add_argument("--force", action="store_true", help="overwrite the results in an existing --out")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="trained-model cache (default $IMGPIX_CACHE or ~/.cache/imgpix)")
    p.add_argument("--quick", action="store_true", help="tiny configuration (< 90 s on 2 CPU cores; CI)")
    p.add_argument("--sweep", action="store_true", help="grid over m and k; heatmaps and Spearman correlation")
    p.add_argument("--m-grid", type=_grid(nx.check_m, int), default=None,
                   help="sweep values of m, comma-separated (default 0,1,2,3,5,8,13; --quick 0,2,5)")
    p.add_argument("--k-grid", type=_grid(nx.check_k, _k_value), default=None,
                   help="sweep values of k, comma-separated, 'all' keeps every class (default 1,2,3,all)")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="with --sweep and --out: compute only cells I, I+N, I+2N, ... of the grid (0 <= I < N) "
                        "into OUT/cells/; every shard and the merge take the same other arguments and --out")
    p.add_argument("--merge", action="store_true",
                   help="with --sweep and --out: compute no cell, merge the shards' cell files into the table, "
                        "heatmaps and summary of an unsharded run (exit 2 listing any missing cell)")
    p.add_argument("--tau-sweep", action="store_true", help="MIOU against the labeler threshold (Fig. 4)")
    p.add_argument("--protect-background", action="store_true",
                   help="always keep background (class 0) when present; it counts toward k")
    p.add_argument("--generator", action="store_true", help="train with the generator (Eq. 3), ~3.6x slower per step")
    p.add_argument("--epochs", type=_positive, default=None, help="training epochs (default 12; --quick 2)")
    p.add_argument("--num-train", type=_positive, default=None,
                   help="synthetic training images (default 1024; --quick 64)")
    p.add_argument("--num-val", type=_positive, default=None,
                   help="synthetic validation images evaluated (default 256; --quick 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv[:-1]):  # "--shard -1/2" would read as an option: make it "--shard=-1/2"
        if arg == "--shard" and argv[i + 1].startswith("-") and "/" in argv[i + 1]:
            argv[i:i + 2] = [f"--shard={argv[i + 1]}"]
            break
    args = parser.parse_args(argv)
    if args.data == "voc" and not args.root and not args.checkpoint:
        parser.error("--data voc needs --root DIR; " + _voc_layout())
    if args.checkpoint and (args.epochs or args.num_train or args.generator):
        parser.error("--epochs, --num-train and --generator configure training: not with --checkpoint")
    if args.data == "voc" and (args.num_train or args.num_val):
        parser.error("--num-train and --num-val size the synthetic data: not with --data voc")
    if args.shard is not None or args.merge:
        try:
            nx.check_sweep_mode(nx.ExperimentConfig(sweep=args.sweep), args.out, args.force, args.shard, args.merge)
        except nx.ExperimentError as error:
            parser.error(str(error))
    try:
        cfg = nx.ExperimentConfig(
            m=args.m, k=args.k, tau=args.tau, data=args.data, root=args.root, checkpoint=args.checkpoint,
            device=args.device, seed=args.seed, quick=args.quick, sweep=args.sweep, tau_sweep=args.tau_sweep,
            m_grid=args.m_grid, k_grid=args.k_grid, protect_background=args.protect_background,
            generator=args.generator, epochs=args.epochs, num_train=args.num_train, num_val=args.num_val)
        summary = nx.run(cfg, out=args.out, force=args.force, cache_dir=args.cache_dir,
                         progress=False if args.no_progress else None, shard=args.shard, merge=args.merge)
    except (nx.ExperimentError, FileNotFoundError, ValueError) as error:
        print(f"noisy_labels.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnoisy_labels.py: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    if "shard" in summary:
        s = summary["shard"]
        print(f"shard {s['index']}/{s['count']}: {len(s['cells'])} cells ({s['computed']} computed, "
              f"{len(s['cells']) - s['computed']} already there): {', '.join(s['cells']) or 'none'}\n"
              f"wrote {summary['out']}/cells ({summary['timings']['total_s']:.1f} s); when every shard has "
              "finished, rerun with --merge instead of --shard")
        return 0
    print(summary["table_md"], end="")
    if "sweep" in summary:
        s = summary["sweep"]
        print(f"\nsweep: Spearman rho(theory_degradation_nats, MIOU drop) = {s['spearman']:.3f} "
              f"(p = {s['p_value']:.2g}, {s['cells']} cells)")
    if "tau_sweep" in summary:
        t = summary["tau_sweep"]
        span = t["beats_baseline_range"]
        print(f"tau sweep: best tau = {t['best_tau']} (MIOU {t['best_MIOU']:.2f} vs baseline "
              f"{t['baseline_MIOU']:.2f}); fusion beats the baseline for tau in "
              + (f"[{span[0]}, {span[1]}]" if span else "no tau")
              + (f" (intervals {t['beats_baseline_intervals']})" if len(t["beats_baseline_intervals"]) > 1 else ""))
    print(f"\nwrote {summary['out']} ({summary['timings']['total_s']:.1f} s)")
    failed = [name for name, ok in summary["checks"].items() if not ok]
    if failed:
        print(f"noisy_labels.py: expected ordering violated: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _voc_layout() -> str:
    from imgpix.data.voc import LAYOUT

    return LAYOUT


if __name__ == "__main__":
    sys.exit(main())
