"""What the experiments print: Markdown tables, the stamp of what a result was measured with, the README splice,
and matplotlib's pyplot. Files are written by :class:`imgpix.experiments.runner.Outputs` (atomically)."""

from __future__ import annotations

import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Sequence

from ..files import write_atomic

__all__ = ["cpu_name", "markdown_rows", "markdown_table", "pyplot", "splice", "versions"]


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
    """Python, platform, CPU, package versions and the git commit: what a result was made with (float results
    differ between CPU kinds). The worker processes' torch threads are in a summary's ``timings``."""
    found = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name()}
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


def markdown_table(frame, floatfmt: str = ".2f") -> str:
    """A DataFrame as a Markdown table (one line per row, a newline at the end)."""
    return frame.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence], floatfmt: str = ".3f") -> str:
    """Rows of values under ``header`` as a Markdown table (:func:`markdown_table`); an empty cell for None
    or NaN, never the text "nan"."""
    import pandas as pd

    def cell(value):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value

    return markdown_table(pd.DataFrame([[cell(v) for v in row] for row in rows], columns=list(header)), floatfmt)


def splice(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path`` (atomically)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    document = Path(path).read_text()
    if document.count(begin) != 1 or document.count(end) != 1:
        raise ValueError(f"{path} must hold the markers {begin} and {end} once each")
    head, rest = document.split(begin)
    write_atomic(Path(path), head + begin + "\n" + text.strip() + "\n" + end + rest.split(end)[1])


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
