"""The benchmarks' answers in one table: each case's median, its ratio to its baseline, throughput and memory;
and the machine-written tables of ``benchmarks/RESULTS.md``.

pytest-benchmark's own tables compare every row with the fastest one; the numbers that answer the questions
(the ratio of the fused model to the plain one, of the fusion op to a copy, images/s, GB/s, peak MiB) are in
each case's ``extra_info``. This prints them, under 120 columns: after ``pytest benchmarks/`` (the
conftest's terminal summary) or from a saved run:

    python benchmarks/report.py                    # the newest JSON under .benchmarks/
    python benchmarks/report.py .benchmarks/Linux-CPython-3.11-64bit/0001_x.json
    python benchmarks/report.py --write            # rewrite RESULTS.md's tables from the newest saved run

``--write`` rewrites each section of ``RESULTS.md`` between ``<!-- bench_NAME:begin -->`` and
``<!-- bench_NAME:end -->`` (``imgpix.experiments.report.splice``) that the saved run holds cases for, with
where the numbers come from (the JSON file, its date and commit, the machine, CPU and torch of its
``machine_info``); sections the run has no cases for (e.g. the GPU tables after a CPU-only run) and all text
outside the markers are left as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

RATIOS = ("ratio_to_plain", "ratio_to_copy")  # each case's baseline: the plain model, or a copy of its bytes
COLUMNS = ("case", "median ms", "ratio", "to", "images/s", "GB/s", "peak MiB")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DEVICES = ("cpu", "cuda")
ARCHS = {"fcn8s": "VGG16 FCN-8s", "tiny": "Tiny FCN"}
# the rows of the tables, in order, with what each case is
FUSION_OPS = {
    "copy": "copy (`x.clone()`, bandwidth limit)",
    "fuse_log": "`fuse_log` (channel-slab kernel)",
    "log_softmax": "`torch.log_softmax` (unfused baseline)",
    "reference": "masked `log_softmax` reference (the former `fuse_log`)",
    "fuse": "`fuse` (probability space, float64, validates its input)",
}
WORKLOADS = {
    ("model", "plain"): "fwd+bwd plain",
    ("model", "fused"): "fwd+bwd fused",
    ("model", "fused+generator"): "fwd+bwd fused + generator",
    ("step", "plain"): "training step, plain (unfused, step 1 only)",
    ("step", "joint"): "training step, joint-only (fused + generator)",
    ("step", "3step"): "training step, the paper's 3 steps",
}


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


def load(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a saved pytest-benchmark run (no 'benchmarks' list)")
    return data


def from_json(path: Path) -> str:
    """The table of a pytest-benchmark JSON file."""
    data = load(path)
    rows = [row(b["name"], b["stats"]["median"], b.get("extra_info", {})) for b in data["benchmarks"]]
    machine = data.get("machine_info", {})
    head = f"{path}: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))}".rstrip(": ")
    return head + "\n" + table(rows)


def newest(folder: Path = Path(".benchmarks")) -> Path:
    found = sorted(folder.rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no saved benchmark run under {folder}: run pytest benchmarks/ --benchmark-autosave")
    return found[-1]


# ----------------------------------------------------------------- RESULTS.md
def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A plain Markdown table; columns flagged in ``right`` are right-aligned (numbers)."""
    rule = ["---:" if r else "---" for r in right]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def seconds(value: float) -> str:
    """A median for people: ``1.23 s`` from a second up, else ``69.6 ms``."""
    return f"{value:.2f} s" if value >= 1 else f"{1e3 * value:.3g} ms" if value >= 1e-3 else f"{1e6 * value:.3g} us"


def number(extra: dict, key: str, fmt: str = ".2f") -> str:
    value = extra.get(key)
    return "" if value is None else format(value, fmt)


def group_parts(bench: dict) -> list[str]:
    return str(bench.get("group") or "").split("-")


def params(bench: dict) -> dict:
    return bench.get("params") or {}


def fusion_cases(benchmarks: list[dict], device: str) -> dict[str, dict[tuple[str, bool], dict]]:
    """dtype -> (variant, backward) -> case, for ``test_fusion``'s groups ``fusion-DEVICE-DTYPE-fwd|fwd_bwd``."""
    found: dict[str, dict[tuple[str, bool], dict]] = {}
    for bench in benchmarks:
        parts = group_parts(bench)
        if len(parts) == 4 and parts[0] == "fusion" and parts[1] == device and "variant" in params(bench):
            found.setdefault(parts[2], {})[(params(bench)["variant"], parts[3] == "fwd_bwd")] = bench
    return found


def fusion_section(benchmarks: list[dict], device: str) -> str | None:
    """Per dtype: each op's fwd and fwd+bwd medians, their ratios to a copy of the same tensor, fwd+bwd GB/s."""
    found = fusion_cases(benchmarks, device)
    if not found:
        return None
    parts = []
    for dtype, cases in found.items():
        shape = next((c.get("extra_info", {}).get("shape") for c in cases.values() if "shape" in c.get(
            "extra_info", {})), None)
        rows = []
        for variant in [*FUSION_OPS, *sorted({v for v, _ in cases} - set(FUSION_OPS))]:
            fwd, bwd = cases.get((variant, False)), cases.get((variant, True))
            if fwd is None and bwd is None:
                continue
            cells = [FUSION_OPS.get(variant, variant)]
            for case in (fwd, bwd):
                cells += ["", ""] if case is None else [seconds(case["stats"]["median"]),
                                                        number(case.get("extra_info", {}), "ratio_to_copy")]
            cells.append("" if bwd is None else number(bwd.get("extra_info", {}), "GB/s", ".1f"))
            rows.append(cells)
        shape_text = f" {list(shape)}" if shape else ""
        parts.append(f"**{dtype}{shape_text}**, ~3 of {shape[1] if shape else 'N'} classes on:\n\n" + markdown(
            ("op", "fwd median", "fwd / copy", "fwd+bwd median", "fwd+bwd / copy", "fwd+bwd GB/s"), rows,
            (False, True, True, True, True, True)))
    return "\n\n".join(parts)


def model_section(benchmarks: list[dict], device: str, arch: str) -> str | None:
    """fwd+bwd and training-step medians of one architecture, images/s, ratio and peak memory to plain."""
    cases = {}
    for bench in benchmarks:
        p = params(bench)
        if p.get("device") == device and p.get("arch") == arch and p.get("kind") in ("model", "step"):
            cases[(p["kind"], p.get("variant"))] = bench
    if not cases:
        return None
    rows = []
    for key in [*WORKLOADS, *sorted(set(cases) - set(WORKLOADS))]:
        if key not in cases:
            continue
        extra = cases[key].get("extra_info", {})
        label = WORKLOADS.get(key, " ".join(key))
        rows.append([label, seconds(cases[key]["stats"]["median"]), number(extra, "images_per_s", ".3g"),
                     number(extra, "ratio_to_plain"), number(extra, "peak_MiB", ".0f"),
                     number(extra, "memory_ratio_to_plain", ".3f")])
    shape = next((c.get("extra_info", {}).get("workload") for c in cases.values()), None) or {}
    size = shape.get("size", "?")
    head = f"{ARCHS.get(arch, arch)}, {shape.get('batch', '?')} x 3 x {size} x {size}"
    return head + ":\n\n" + markdown(("workload", "median", "images/s", "/ plain", "peak MiB", "peak / plain"), rows,
                                     (False, True, True, True, True, True))


def data_section(benchmarks: list[dict]) -> str | None:
    """Throughput of the synthetic data (``test_data_bench.py``)."""
    rows = []
    for bench in benchmarks:
        if bench.get("group") != "data-cpu":
            continue
        extra = bench.get("extra_info", {})
        rows.append([f"`{bench['name']}` ({extra.get('items_per_round', '?')} items of {extra.get('size', '?')} px "
                     "a round)", seconds(bench["stats"]["median"]), number(extra, "images_per_s", ".1f"),
                     number(extra, "ms_per_image", ".3f")])
    if not rows:
        return None
    return markdown(("case", "median round", "images/s", "ms per image"), rows, (False, True, True, True))


def provenance(data: dict, path: Path, device: str) -> str:
    """Which saved run a section comes from: the file, its date and commit, machine, CPU (or GPU), torch, load."""
    machine, commit = data.get("machine_info", {}), data.get("commit_info", {})
    cpu = machine.get("cpu", {})
    try:
        shown = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        shown = Path(path).name
    when = data.get("datetime", "")
    try:
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        pass
    rev = str(commit.get("id") or "unknown")[:7] + (" + uncommitted changes" if commit.get("dirty") else "")
    where = [cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"]
    if cpu.get("count"):
        where.append(f"{cpu['count']} logical CPUs")
    if device == "cuda":
        where.insert(0, machine.get("cuda_device") or "unknown GPU")
    where.append(f"torch {machine.get('torch', '?')}")
    if machine.get("torch_threads"):
        where.append(f"{machine['torch_threads']} intra-op threads")
    where.append(f"Python {machine.get('python_version', '?')}")
    load = machine.get("load_average")
    if load:
        where.append("load average " + " -> ".join(f"{value:.1f}" for value in load if value is not None)
                     + (" (start -> end)" if len(load) > 1 else ""))
    if machine.get("nice"):
        where.append(f"nice {machine['nice']}")
    return (f"*Written by `python benchmarks/report.py --write` from `{shown}` (saved {when}, commit {rev}): "
            + ", ".join(where) + ". Medians of pytest-benchmark rounds on the wall clock.*")


def sections(data: dict, path: Path) -> dict[str, str]:
    """Marker name -> Markdown, for every machine-written section this run holds cases for."""
    benchmarks = [b for b in data["benchmarks"] if b.get("stats")]
    made: dict[str, str | None] = {}
    for device in DEVICES:
        made[f"bench_fusion_{device}"] = fusion_section(benchmarks, device)
        for arch in ARCHS:
            made[f"bench_model_{arch}_{device}"] = model_section(benchmarks, device, arch)
    made["bench_data_cpu"] = data_section(benchmarks)
    return {name: provenance(data, path, name.rsplit("_", 1)[1]) + "\n\n" + text
            for name, text in made.items() if text is not None}


def write(results: Path, path: Path) -> list[str]:
    """Rewrite the sections of ``results`` that the saved run ``path`` holds cases for; their names.

    Every marker is checked before anything is written: a missing one changes nothing.
    """
    from imgpix.experiments.report import splice

    made = sections(load(path), path)
    if not made:
        raise ValueError(f"{path} holds no case of a RESULTS.md table")
    document = Path(results).read_text()
    missing = [name for name in made if document.count(f"<!-- {name}:begin -->") != 1
               or document.count(f"<!-- {name}:end -->") != 1]
    if missing:
        raise ValueError(f"{results} must hold the markers <!-- NAME:begin --> and <!-- NAME:end --> once each "
                         f"for {', '.join(missing)}: put them where those tables belong")
    for name, text in made.items():
        splice(Path(results), name, text)
    return list(made)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a saved pytest-benchmark JSON (default: the newest "
                        "under .benchmarks/)")
    parser.add_argument("--write", action="store_true", help="rewrite the machine-written sections of RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"the file --write rewrites (default {RESULTS})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = args.run or newest()
        if args.write:
            names = write(args.results, path)
            print(f"wrote {', '.join(names)} of {args.results} from {path}")
        else:
            print(from_json(path))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
