"""Ablation study on synthetic scenes, shaped like the paper's Tables 1-3.

Trains the tiny FCN-8s on :class:`imgpix.data.SyntheticScenes` in six
configurations (all through :func:`imgpix.train.train`, no second training
loop) and evaluates each on the validation split:

* Table 1 -- baseline (no fusion, no generator), + image label (dot fusion),
  + generator (no fusion), + image label + generator (the full model);
* Table 2 -- generator vs discriminator, both with dot fusion;
* Table 3 -- dot vs addition fusion, both with the generator.

Fused variants are trained and evaluated with *oracle* image labels (the
classes present in the ground-truth mask); unfused variants ignore labels.
The full model also trains the tiny image labeler and is evaluated again
with the labeler's thresholded labels (a realistic test-time setting) and
with no labels at all (how much it leans on them).

Writes ``table.md``, ``table.csv``, ``summary.json`` and ``miou.png`` to
``--out`` (default ``results/ablation/<timestamp>``), plus each variant's run
directory (checkpoint, metrics.csv) under ``runs/``. Usage::

    .venv/bin/python validation/ablation.py              # full run, a few minutes on 2 CPU cores
    .venv/bin/python validation/ablation.py --quick      # smoke test, well under a minute
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from imgpix.train import METRIC_NAMES, TrainConfig, build_loader, evaluate, train

# name -> (description, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "baseline": ("FCN, no fusion, no generator", {"fusion": None, "generator": False}),
    "label": ("+ image label (dot fusion)", {"fusion": "dot", "generator": False}),
    "generator": ("+ generator (no fusion)", {"fusion": None, "generator": True}),
    "full": ("+ image label + generator", {"fusion": "dot", "generator": True, "labeler": "tiny"}),
    "discriminator": ("dot fusion + discriminator", {"fusion": "dot", "generator": False, "discriminator": True}),
    "add": ("addition fusion + generator", {"fusion": "add", "generator": True}),
}

# (table title, [(row label, variant, test label source)])
TABLES = [
    ("Table 1: components (fused rows: oracle image labels at train and test)", [
        ("baseline (FCN)", "baseline", "none"),
        ("+ image label", "label", "oracle"),
        ("+ generator", "generator", "none"),
        ("+ image label + generator", "full", "oracle"),
        ("+ image label + generator, labeler labels at test", "full", "labeler"),
        ("+ image label + generator, no labels at test", "full", "none"),
    ]),
    ("Table 2: generator vs discriminator (both with dot fusion, oracle labels)", [
        ("generator", "full", "oracle"),
        ("discriminator", "discriminator", "oracle"),
    ]),
    ("Table 3: fusion operator (both with generator, oracle labels)", [
        ("dot (P * L)", "full", "oracle"),
        ("addition (P + L)", "add", "oracle"),
    ]),
]

FULL = {"epochs": 6, "num_train": 512, "num_val": 128, "image_size": 64, "batch_size": 16}
QUICK = {"epochs": 1, "num_train": 8, "num_val": 8, "image_size": 32, "batch_size": 8}
FUSION_GAIN_TARGET = 10.0  # MIOU points: oracle fusion vs plain model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default results/ablation/<timestamp>)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it holds an earlier ablation's output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per variant (default {FULL['epochs']})")
    parser.add_argument("--num-train", type=int, default=None, help=f"training images (default {FULL['num_train']})")
    parser.add_argument("--num-val", type=int, default=None, help=f"validation images (default {FULL['num_val']})")
    parser.add_argument("--image-size", type=int, default=None, help=f"image side (default {FULL['image_size']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"batch size (default {FULL['batch_size']})")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="train only these variants (tables then show only their rows)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the tiny model gains nothing from more, and on a "
                             "busy 2-core machine 2 threads made an iteration ~50x slower)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings (< 60 s)")
    args = parser.parse_args(argv)
    for name in ("epochs", "num_train", "num_val", "image_size", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def prepare_out(out: Path | None, force: bool) -> Path:
    """A fresh output directory; an existing non-empty one only with ``force`` (and only ours)."""
    if out is None:
        out = Path("results") / "ablation" / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"ablation: error: {out} exists and is not empty; pass --force to replace it")
        if not (out / "summary.json").exists() and not (out / "runs").is_dir():
            raise SystemExit(f"ablation: error: {out} does not look like an ablation output; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def base_config(args: argparse.Namespace) -> dict:
    settings = dict(QUICK if args.quick else FULL)
    for name in settings:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return {"data": "synthetic", "model": "tiny", "labeler": None, "procedure": "3step",
            "train_labels": "oracle", "seed": args.seed, "device": "cpu", **settings}


def run_variants(names: list[str], base: dict, out: Path) -> tuple[dict, dict]:
    """Train each variant; return {(variant, source): scores in %} and per-variant timings."""
    needed = {name: sorted({src for _, rows in TABLES for _, v, src in rows if v == name}) for name in names}
    results, timings = {}, {}
    bar = tqdm(names, desc="variants", unit="variant")
    for name in bar:
        bar.set_postfix_str(name)
        cfg = TrainConfig(**{**base, **VARIANTS[name][1]})
        run_dir = out / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "train.log"
        start, cpu = time.perf_counter(), time.process_time()
        with log_path.open("w") as log:
            trainer = train(cfg, run_dir, log=lambda line: print(line, file=log, flush=True))
        train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        loader = build_loader(cfg, "val", shuffle=False)
        for source in needed[name]:
            scores = evaluate(trainer.model, loader, source, cfg.device)
            results[(name, source)] = {k: 100.0 * scores[k] for k in METRIC_NAMES}
        timings[name] = {"train_s": round(train_s, 2), "train_cpu_s": round(train_cpu, 2),
                         "eval_s": round(time.perf_counter() - start, 2)}
        tqdm.write(f"{name:14s} {train_s:6.1f}s (cpu {train_cpu:6.1f}s)  " + "  ".join(
            f"[{src}] MIOU={results[(name, src)]['MIOU']:.2f}" for src in needed[name]))
    return results, timings


def table_rows(results: dict) -> list[dict]:
    rows = []
    for title, entries in TABLES:
        for label, variant, source in entries:
            if (variant, source) in results:
                rows.append({"table": title.split(":")[0], "row": label, "variant": variant,
                             "test_labels": source, **{k: round(v, 2) for k, v in results[(variant, source)].items()}})
    return rows


def write_markdown(path: Path, rows: list[dict], base: dict, timings: dict, wall_s: float) -> None:
    lines = ["# Ablation on synthetic scenes (tiny FCN-8s)", "",
             f"{base['num_train']} training / {base['num_val']} validation images of {base['image_size']}x"
             f"{base['image_size']} px, {base['epochs']} epochs, batch {base['batch_size']}, seed {base['seed']}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), wall time {wall_s:.0f} s. "
             "Scores in percent on the validation split.",
             "Fused variants are trained **and evaluated with oracle image labels** (classes present in the "
             "ground-truth mask) unless the row says otherwise; `test labels` = none means the plain "
             "softmax prediction.", ""]
    for title, _ in TABLES:
        key = title.split(":")[0]
        chosen = [r for r in rows if r["table"] == key]
        if not chosen:
            continue
        lines += [f"## {title}", "", f"| variant | test labels | {' | '.join(METRIC_NAMES)} | train s |",
                  f"|---|---|{'---:|' * len(METRIC_NAMES)}---:|"]
        for r in chosen:
            lines.append(f"| {r['row']} | {r['test_labels']} | "
                         + " | ".join(f"{r[k]:.2f}" for k in METRIC_NAMES)
                         + f" | {timings[r['variant']]['train_s']:.0f} |")
        lines.append("")
    path.write_text("\n".join(lines))


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["table", "row", "variant", "test_labels", *METRIC_NAMES])
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(v, s) for v in VARIANTS for s in ("none", "oracle", "labeler") if (v, s) in results]
    labels = [f"{v}\n({s})" for v, s in keys]
    values = [results[k]["MIOU"] for k in keys]
    colors = ["tab:gray" if s == "none" else "tab:blue" if s == "oracle" else "tab:orange" for _, s in keys]
    fig, ax = plt.subplots(figsize=(1.3 * len(keys) + 2, 4))
    bars = ax.bar(range(len(keys)), values, color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(keys)), labels, fontsize=8)
    ax.set_ylabel("MIOU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Synthetic ablation: MIOU per variant (test labels in brackets)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def checks(results: dict) -> dict:
    """The targets: oracle fusion beats the plain model by >= 10 MIOU points; dot beats addition."""
    out = {}
    if ("baseline", "none") in results and ("label", "oracle") in results:
        gain = results[("label", "oracle")]["MIOU"] - results[("baseline", "none")]["MIOU"]
        out["fusion_gain_miou"] = {"value": round(gain, 2), "target": FUSION_GAIN_TARGET,
                                   "passed": gain >= FUSION_GAIN_TARGET}
    if ("full", "oracle") in results and ("add", "oracle") in results:
        gap = results[("full", "oracle")]["MIOU"] - results[("add", "oracle")]["MIOU"]
        out["dot_minus_add_miou"] = {"value": round(gap, 2), "target": 0.0, "passed": gap > 0}
    return out


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (timings are noisy on a shared machine)."""
    try:
        import os

        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = prepare_out(args.out, args.force)
    base = base_config(args)
    start, cpu = time.perf_counter(), time.process_time()
    results, timings = run_variants(args.variants, base, out)
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    rows = table_rows(results)
    write_markdown(out / "table.md", rows, base, timings, wall_s)
    write_csv(out / "table.csv", rows)
    write_plot(out / "miou.png", results)
    verdict = checks(results)
    summary = {
        "config": {"base": asdict(TrainConfig(**base)),
                   "variants": {n: {"description": VARIANTS[n][0], "overrides": VARIANTS[n][1]} for n in args.variants},
                   "quick": args.quick, "argv": sys.argv[1:] if argv is None else list(argv)},
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "timings": {"wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "load_avg": load_average(),
                    "variants": timings},
        "results": {f"{v}/{s}": r for (v, s), r in results.items()},
        "checks": verdict,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print((out / "table.md").read_text())
    for name, check in verdict.items():
        print(f"{name}: {check['value']:+.2f} (target {check['target']}) {'PASS' if check['passed'] else 'FAIL'}")
    print(f"wrote {out}/table.md, table.csv, summary.json, miou.png ({wall_s:.0f} s)")
    failed = [name for name, check in verdict.items() if not check["passed"]]
    return 1 if failed and not args.quick else 0  # --quick trains too little to meet the targets


if __name__ == "__main__":
    sys.exit(main())
