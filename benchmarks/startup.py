"""Start-up time of the ``imgpix`` command with and without torch.

``imgpix theory`` and the help never import torch; ``imgpix train --help`` builds the train parser, whose
choices come from the model and data modules, and so imports torch. Each command runs in a fresh process,
the two interleaved round by round; prints the median wall time of each and their ratio (one run, one machine).

    python benchmarks/startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {"imgpix theory (no torch)": ["theory"], "imgpix --help (no torch)": ["--help"],
            "imgpix train --help (torch)": ["train", "--help"]}


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgpix.cli", *argv], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    wall(["theory"])  # warm the file cache
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            times[name].append(wall(command))
    base = statistics.median(times["imgpix train --help (torch)"])
    print("| command | median wall s | ratio to train --help | range s |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / base:.2f} | {min(values):.2f}-{max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
