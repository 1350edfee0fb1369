"""Experiment outputs: the output-directory rules, run stamps, and CSV / Markdown / JSON / PNG writers.

Every file is written atomically (:mod:`imgpix.files`), so an interrupted run never leaves a torn table.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch

from ..files import write_atomic, write_json

__all__ = ["ExperimentError", "prepare_out", "run_stamp", "versions", "write_atomic", "write_json", "write_table",
           "pyplot", "save_figure", "is_finished", "splice"]

SUMMARY = "summary.json"
RUN = "run.json"


class ExperimentError(Exception):
    """A user-facing error (bad arguments, existing output, missing data): exit status 2."""


def run_stamp() -> str:
    """The default name of a new output directory: local time to the second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def is_finished(out: Path) -> bool:
    """A run is finished when its summary exists (written last)."""
    return (Path(out) / SUMMARY).is_file()


def _config_of(out: Path) -> dict | None:
    try:
        return json.loads((out / RUN).read_text()).get("config")
    except (OSError, ValueError):
        return None


def _entries(directory: Path) -> list[Path]:
    """Entries of ``directory``, less the temporary files of atomic writes."""
    return [p for p in directory.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]


def prepare_out(out: Path | None, identity: dict, force: bool, results_root: Path,
                owned: Iterable[str] = ()) -> tuple[Path, bool]:
    """The output directory and whether this run resumes an unfinished one of the same configuration.

    * ``out=None``: the newest unfinished run of ``identity`` under ``results_root`` is resumed,
      else a new ``results_root/<stamp>`` is made.
    * A run of the same configuration in ``out`` is resumed (a finished one only rewrites its outputs).
    * ``force``: ``owned`` files and folders of a previous run in ``out`` are removed first.
    * Any other non-empty ``out``: :class:`ExperimentError` (nothing is touched).
    """
    if out is None:
        if results_root.is_dir() and not force:
            for run in sorted((p for p in results_root.iterdir() if p.is_dir()), reverse=True):
                if not is_finished(run) and _config_of(run) == identity:
                    return run, True
        out, i = results_root / run_stamp(), 1
        while out.exists():
            out, i = results_root / f"{run_stamp()}-{i}", i + 1
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} exists and is not a directory")
    if out.is_dir() and _entries(out):
        if force:
            for name in (*owned, RUN, SUMMARY):
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        elif _config_of(out) == identity:  # unfinished: resumed; finished: its outputs are written again
            return out, True
        else:
            raise ExperimentError(f"output directory {out} already exists and is not empty; pass --force to "
                                  "overwrite it or choose another --out (an unfinished run of the same "
                                  "configuration is resumed instead)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN, {"config": identity, "started": datetime.now().isoformat(timespec="seconds")})
    return out, False


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :func:`platform.processor` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    """Python, platform, CPU, package versions, torch threads and the git commit: what a result was made with
    (float results differ between CPU kinds)."""
    found = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
             "torch_threads": torch.get_num_threads()}
    for name in ("imgpix", "torch", "numpy", "scipy", "pandas"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        found["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                                             capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found


def write_table(frame: pd.DataFrame, out: Path, name: str, floatfmt: str = ".2f") -> str:
    """``name.csv`` and ``name.md`` from ``frame``; returns the Markdown."""
    write_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    markdown = frame.to_markdown(index=False, floatfmt=floatfmt) + "\n"
    write_atomic(out / f"{name}.md", markdown)
    return markdown


def splice(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path`` (atomically)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    document = Path(path).read_text()
    if document.count(begin) != 1 or document.count(end) != 1:
        raise ExperimentError(f"{path} must hold the markers {begin} and {end} once each")
    head, rest = document.split(begin)
    write_atomic(Path(path), head + begin + "\n" + text.strip() + "\n" + end + rest.split(end)[1])


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    pyplot().close(fig)
    tmp.replace(path)
