"""Command-line pieces shared by the experiments' scripts (validation/*.py): one-line argument errors, the
integer-range type, the options every experiment takes, and the checks that run before any work.

Nothing here imports torch: a script imports it, and the experiment, inside its ``main``, so that Ctrl-C
during start-up is an interruption like any other (exit 130, one line).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
INTERRUPTED = 130


class OneLineErrors(argparse.ArgumentParser):
    """An argument error is one line naming the problem (and the help flag), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_in_range(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def field_default(config: type, name: str):
    """The default of field ``name`` of the dataclass ``config``."""
    return next(f.default for f in fields(config) if f.name == name)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _budget_help(what: str, presets: dict, name: str) -> str:
    return f"{what} (default {presets['default'][name]}; --quick {presets['quick'][name]})"


def add_common_options(parser: argparse.ArgumentParser, config: type, presets: dict, *, min_seeds: int,
                       seeds_help: str, jobs: int, jobs_help: str, results: str, epochs_help: str) -> None:
    """The options both experiments take, with defaults read from their ``config`` class and budget ``presets``."""
    parser.add_argument("--device", default=field_default(config, "device"),
                        help="cpu, cuda, cuda:N or mps (default %(default)s)")
    parser.add_argument("--threads", type=int_in_range(1), default=1, help="torch threads per process (default 1)")
    parser.add_argument("--model", default=field_default(config, "model"),
                        help="segmenter: tiny, fcn8s, a torchvision segmentation architecture (e.g. "
                             "lraspp_mobilenet_v3_large) or package.module:factory (default %(default)s)")
    parser.add_argument("--labeler", default=field_default(config, "labeler_model"),
                        help="image labeler: tiny, resnet18 or any torchvision classifier (default %(default)s)")
    parser.add_argument("--jobs", type=int_in_range(1), default=jobs, help=jobs_help)
    parser.add_argument("--seeds", type=int_in_range(min_seeds), default=None, help=seeds_help)
    parser.add_argument("--quick", action="store_true", help="small budget: the smoke test of CI")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output directory (default {results}/<time>; an unfinished run of the same settings "
                             "is resumed)")
    parser.add_argument("--force", action="store_true", help="replace the files of an earlier run in --out")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="trained-model cache (default $IMGPIX_CACHE, else ~/.cache/imgpix)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--epochs", type=int_in_range(1), default=None,
                        help=_budget_help(epochs_help, presets, "epochs"))
    parser.add_argument("--num-train", type=int_in_range(1), default=None,
                        help=_budget_help("training images per epoch", presets, "num_train"))
    parser.add_argument("--num-val", type=int_in_range(1), default=None,
                        help=_budget_help("validation images evaluated", presets, "num_val"))
    parser.add_argument("--image-size", type=int_in_range(16), default=None,
                        help=_budget_help("image side in pixels", presets, "image_size"))
    parser.add_argument("--batch-size", type=int_in_range(1), default=None,
                        help=_budget_help("images per batch", presets, "batch_size"))
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="the segmenter's peak SGD learning rate (default: imgpix train's)")
    parser.add_argument("--seed", type=int_in_range(0), default=field_default(config, "seed"),
                        help="base seed: the run's seed i trains with seed + i (default %(default)s)")


def check_writable(path: Path, option: str) -> None:
    """ValueError (one line) unless ``path`` is, or can be made as, a directory this process can write into:
    tried for real (a file created and removed in it or its nearest existing parent), as permissions alone
    do not tell for a read-only file system or the superuser."""
    path = Path(path).absolute()
    target = path
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if target.exists() and not target.is_dir():
        what = "is not a directory" if target == path else f"lies under {target}, which is not a directory"
        raise ValueError(f"{option} {path} {what}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".imgpix-write-test.", suffix=".tmp", dir=target)
    except OSError as error:
        where = "" if target == path else f" ({target}, where it would be created)"
        raise ValueError(f"{option} {path}: cannot write there{where}: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(probe)


def check_before_work(device: str, out: Path | None, results: Path, cache_dir: Path | None) -> None:
    """The checks a run makes before any work: the device exists, the output and cache folders are writable."""
    from ..device import check_device
    from .cache import default_cache_dir

    check_device(device)
    check_writable(out if out is not None else results, "--out")
    check_writable(cache_dir if cache_dir is not None else default_cache_dir(), "--cache-dir")


def shard(text: str) -> tuple[int, int]:
    """An argparse type: ``i/n`` with integers ``0 <= i < n``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n with integers 0 <= i < n (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard i/n must satisfy 0 <= i < n, got {text!r}")
    return index, count


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run stops its worker processes on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated


def script_main(prog: str, run, argv: list[str] | None, interrupted: str = "rerun the same command to resume") -> int:
    """A validation script's ``main``: ``run(argv)``; a user's error (bad arguments, data, output) is one line
    and exit 2, Ctrl-C one line and exit 130, SIGTERM likewise and exit 143 (``interrupted`` says what to do
    next); either signal stops the run's worker processes."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, _terminate)
    try:
        from .runner import ExperimentError

        try:
            return run(argv)
        except (ExperimentError, OSError, ValueError) as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
    except KeyboardInterrupt as stop:
        print(f"{prog}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; {interrupted}",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
