"""The benchmarks' answers in one table: each case's median, its ratio to its baseline, throughput and memory.

pytest-benchmark's own tables compare every row with the fastest one; the numbers that answer the questions
(the ratio of the fused model to the plain one, of the fusion op to a copy, images/s, GB/s, peak MiB) are in
each case's ``extra_info``. This prints them, under 120 columns: after ``pytest benchmarks/`` (the
conftest's terminal summary) or from a saved run:

    python benchmarks/report.py                    # the newest JSON under .benchmarks/
    python benchmarks/report.py .benchmarks/Linux-CPython-3.11-64bit/0001_x.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RATIOS = ("ratio_to_plain", "ratio_to_copy")  # each case's baseline: the plain model, or a copy of its bytes
COLUMNS = ("case", "median ms", "ratio", "to", "images/s", "GB/s", "peak MiB")


def row(name: str, median_s: float, extra: dict) -> list[str]:
    """One table row of a benchmark case from its median seconds and ``extra_info``."""
    ratio = next((key for key in RATIOS if key in extra), None)
    return [name, f"{1e3 * median_s:.2f}", f"{extra[ratio]:.2f}" if ratio else "",
            ratio.removeprefix("ratio_to_") if ratio else "", _value(extra, "images_per_s"),
            _value(extra, "GB/s"), _value(extra, "peak_MiB")]


def _value(extra: dict, key: str) -> str:
    return f"{extra[key]:g}" if key in extra else ""


def table(rows: list[list[str]], width: int = 52) -> str:
    """A Markdown table; long case names are shortened from the left to keep it under 120 columns."""
    rows = [[r[0] if len(r[0]) <= width else "…" + r[0][-(width - 1):], *r[1:]] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *map(line, rows)])


def from_json(path: Path) -> str:
    """The table of a pytest-benchmark JSON file."""
    data = json.loads(Path(path).read_text())
    rows = [row(b["name"], b["stats"]["median"], b.get("extra_info", {})) for b in data["benchmarks"]]
    machine = data.get("machine_info", {})
    head = f"{path}: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))}".rstrip(": ")
    return head + "\n" + table(rows)


def newest(folder: Path = Path(".benchmarks")) -> Path:
    found = sorted(folder.rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no saved benchmark run under {folder}: run pytest benchmarks/ --benchmark-autosave")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        print(from_json(Path(argv[0]) if argv else newest()))
    except (OSError, ValueError, KeyError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
