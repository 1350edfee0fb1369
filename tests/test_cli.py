"""End to end through the real command (``python -m imgpix.cli``): train, evaluate, theory, errors.

Every subprocess pays the interpreter and the torch + torchvision import (~7 CPU-s on the 2-core CI VM), so
the real command runs once per command kind (train, evaluate, theory, an error exit) and those runs are
started together and awaited once (module fixtures). The other evaluations and bad arguments go through the
same entry point, ``imgpix.cli.main(argv)``, in this process (``in_process``: exit code, stdout and stderr as a
subprocess would give them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgpix.checkpoint import load_checkpoint
from imgpix.data import NUM_CLASSES
from imgpix.data.loaders import build_loader
from imgpix.labels import DEFAULT_TAU, from_masks
from imgpix.metrics import labeler_scores

METRICS = ("PA", "MPA", "FWAA", "MIOU")
TIMEOUT = 300
TRAIN_ARGS = ["--num-train", "8", "--num-val", "8", "--epochs", "1", "--batch-size", "4", "--image-size", "32",
              "--lr-schedule", "cosine"]


def start(*args: str, cwd: Path) -> subprocess.Popen:
    # several commands run at once: one intra-op thread each (2 threads on a busy 2-core box are ~50x slower)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "imgpix.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def in_process(*args: str) -> subprocess.CompletedProcess:
    """``imgpix ARGS`` through ``imgpix.cli.main`` in this process, on one intra-op thread (restored after):
    its exit code (argparse's ``SystemExit`` included), stdout and stderr, as ``finish`` gives a subprocess's."""
    from imgpix.cli import main

    stdout, stderr, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit_:
                code = exit_.code
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["imgpix", *args], code, stdout.getvalue(), stderr.getvalue())


SUBPROCESS_BAD = ("theory_domain",)  # the real command's error exit (theory imports no torch); the rest in_process
BAD = {  # name -> (argv, what stderr must say)
    "tau": (["train", "--tau", "1.5"], r"argument --tau: must be a number in \[0, 1\], got '1.5'"),
    "missing_checkpoint": (["evaluate", "--checkpoint", "{tmp}/nowhere/checkpoint.pt"], r"checkpoint not found"),
    "voc_missing_root": (["train", "--data", "voc", "--root", "{tmp}/no_voc_here", "--out", "{tmp}/voc_out",
                          "--model", "tiny", "--labeler", "none"],
                         r"(?s)VOC root .*no_voc_here.* is missing.*expected layout.*VOCdevkit/VOC2012/JPEGImages"),
    "theory_domain": (["theory", "--N", "3", "--n", "5"],  # was "undefined (...)" and exit 0
                      r"^imgpix theory: error: out of domain: 1 <= n <= N does not hold \(N=3, n=5\)\n$"),
}
USAGE_ERRORS = {  # parser errors, checked in-process through imgpix.cli.main (no torch import per case)
    "tau": (["train", "--tau", "-0.1"], r"argument --tau: must be a number in \[0, 1\]"),
    "epochs": (["train", "--epochs", "0"], r"argument --epochs: must be an integer >= 1, got '0'"),
    "batch": (["train", "--batch-size", "x"], r"argument --batch-size: must be an integer >= 1, got 'x'"),
    "model": (["train", "--model", "nope"], r"argument --model: unknown segmenter 'nope': use one of fcn32s, .*lraspp"),
    "lr_schedule": (["train", "--lr-schedule", "linear"], r"argument --lr-schedule: invalid choice: 'linear'"),
    "evaluate_no_checkpoint": (["evaluate"], r"one of the arguments --checkpoint --model is required"),
    "evaluate_bad_source": (["evaluate", "--checkpoint", "x", "--label-source", "gt"],
                            r"argument --label-source: label source 'gt' is not one of"),
    "no_command": ([], r"required: command|the following arguments are required"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Wave 1: train, theory and a bad command as subprocesses, the other bad commands in this process meanwhile;
    wave 2: evaluations of the trained run (the default sources as a subprocess, the rest in this process)."""
    tmp = tmp_path_factory.mktemp("cli")
    repo = Path(__file__).resolve().parents[1]
    out = tmp / "run"
    (tmp / "no_voc_here").mkdir()  # a folder without the VOC layout
    procs = {"train": start("train", *TRAIN_ARGS, "--out", str(out), cwd=repo),
             "theory": start("theory", cwd=repo)}
    for name in SUBPROCESS_BAD:
        procs[name] = start(*(a.format(tmp=tmp) for a in BAD[name][0]), cwd=repo)
    results = {name: in_process(*(a.format(tmp=tmp) for a in argv))  # while the subprocesses run
               for name, (argv, _) in BAD.items() if name not in SUBPROCESS_BAD}
    results.update({name: finish(proc) for name, proc in procs.items()})
    assert results["train"].returncode == 0, results["train"].stderr[-3000:]
    assert not (tmp / "voc_out").exists()  # the data are checked before --out is made
    # a copy of the checkpoint without its labeler (as if trained with --labeler none)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    state["config"]["labeler"] = None
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("labeler.")}
    no_labeler = tmp / "no_labeler.pt"
    torch.save(state, no_labeler)
    state["config"].update(fusion=None, train_labels="none")  # as if trained with --fusion none
    unfused = tmp / "unfused.pt"
    torch.save(state, unfused)
    default = start("evaluate", "--checkpoint", str(out / "checkpoint.pt"), cwd=repo)  # the real command
    results.update({  # the same entry point in this process, while the subprocess runs
        "eval_oracle": in_process("evaluate", "--checkpoint", str(out), "--label-source", "oracle"),
        "eval_no_labeler": in_process("evaluate", "--checkpoint", str(no_labeler), "--label-source", "labeler"),
        "eval_unfused": in_process("evaluate", "--checkpoint", str(unfused)),
        "eval_unfused_oracle": in_process("evaluate", "--checkpoint", str(unfused), "--label-source", "oracle")})
    results["eval_default"] = finish(default)
    results["_out"] = out  # type: ignore[assignment]
    return results


def table_rows(stdout: str) -> dict[str, dict[str, float]]:
    """The evaluate table: label source -> PA, MPA, FWAA, MIOU (percent), nats removed, images."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["labels", *METRICS, "nats removed", "images"], stdout
    assert re.fullmatch(r"\|(:?-+:?\|)+", lines[1]), stdout
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], map(float, cells[1:])))
        assert all(0.0 <= rows[cells[0]][k] <= 100.0 for k in METRICS), stdout
    return rows


def table_row(stdout: str, source: str) -> dict[str, float]:
    rows = table_rows(stdout)
    assert source in rows, stdout
    return rows[source]


def test_train_writes_run_directory(runs):
    out = runs["_out"]
    assert {"checkpoint.pt", "metrics.csv", "config.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["lr_schedule"] == "cosine"
    assert not list(out.glob("*.tmp"))
    assert f"wrote {out / 'checkpoint.pt'}" in runs["train"].stdout
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    assert set(METRICS) <= rows[0].keys()
    # scores in percent everywhere a person reads them: the log and metrics.csv
    line = re.search(r"epoch 1/1: .* MIOU=(\d+\.\d\d)% .*\(oracle labels\)", runs["train"].stdout)
    assert line and float(line.group(1)) == pytest.approx(float(rows[0]["MIOU"]), abs=0.006)


def test_evaluate_prints_metric_table(runs):
    result = runs["eval_oracle"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"{runs['_out'] / 'checkpoint.pt'} (epoch 1, trained dot-fused) on 8 "
                                    "synthetic val images, 32 x 32 px; scores in percent, nats removed per pixel "
                                    "(mean over images)\n")
    values = table_row(result.stdout, "oracle")
    # the same numbers as the training run's validation row (oracle labels, same split, percent)
    row = next(csv.DictReader((runs["_out"] / "metrics.csv").open()))
    for k in METRICS:
        assert values[k] == pytest.approx(float(row[k]), abs=0.006), k


def test_evaluate_defaults_to_unfused_oracle_and_labeler(runs):
    result = runs["eval_default"]
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(result.stdout)
    assert list(rows) == ["unfused", "oracle", f"labeler@{DEFAULT_TAU:g}"]  # each source labelled, tau named
    assert rows["unfused"]["nats removed"] == 0 < rows["oracle"]["nats removed"]
    assert rows["oracle"] == table_row(runs["eval_oracle"].stdout, "oracle")
    assert "labeler@tau = the classes the checkpoint's image labeler scores >= tau" in result.stdout
    # the labeler's quality, as labeler_scores computes it on the same images (background is not an object)
    line = re.search(r"image labeler: mAP (\d+\.\d\d) over (\d+) object classes with a positive image; "
                     rf"at tau {DEFAULT_TAU:g} precision (\d+\.\d\d), recall (\d+\.\d\d)", result.stdout)
    assert line, result.stdout
    model, cfg, _ = load_checkpoint(runs["_out"] / "checkpoint.pt")
    model.eval()
    with torch.no_grad():
        batches = [(model.label_scores(image), from_masks(mask, NUM_CLASSES))
                   for image, mask in build_loader(cfg, "val")]
    expected = labeler_scores(*(torch.cat(t) for t in zip(*batches)), DEFAULT_TAU, classes=range(1, NUM_CLASSES))
    assert int(line[2]) == expected["classes"]
    for group, key in ((1, "mAP"), (3, "precision"), (4, "recall")):
        assert float(line[group]) == pytest.approx(100 * expected[key], abs=0.006), key


def test_evaluate_unfused_checkpoint_reports_no_labels(runs):
    result = runs["eval_unfused"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained unfused" in result.stdout
    assert list(table_rows(result.stdout)) == ["unfused", "oracle (post-hoc)"]
    posthoc = runs["eval_unfused_oracle"]  # labels fused into a model trained without them: said so
    assert posthoc.returncode == 0, posthoc.stderr[-3000:]
    table_row(posthoc.stdout, "oracle (post-hoc)")


def test_evaluate_labeler_source_without_labeler_is_usage_error(runs):
    result = runs["eval_no_labeler"]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "needs an image labeler (a checkpoint trained with one, or --labeler NAME)" in result.stderr


def test_theory(runs):
    result = runs["theory"]
    assert result.returncode == 0, result.stderr
    assert "N=21 n=3 m=2 k=1" in result.stdout
    assert re.search(r"Eq\. 6 removed_information\(N, n\)\s+1\.9459\b", result.stdout)  # log(21/3)
    assert re.search(r"Eq\. 4 self_information\(N\)\s+3\.0445\b", result.stdout)  # log 21


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_exit_2_with_message(runs, name):
    result = runs[name]
    assert result.returncode == 2, (name, result.returncode, result.stderr[-2000:])
    assert re.search(BAD[name][1], result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == "" or "usage" not in result.stdout


@pytest.mark.parametrize("name", list(USAGE_ERRORS))
def test_usage_errors_exit_2(name, capsys):
    from imgpix.cli import main

    argv, message = USAGE_ERRORS[name]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = f"imgpix {argv[0]}" if argv else "imgpix"
    assert re.fullmatch(rf"{command}: error: .* \(see {command} --help\)\n", err), err  # one line
    assert re.search(message, err), err


def test_missing_checkpoint_in_process(tmp_path, capsys):
    from imgpix.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert f"imgpix evaluate: error: checkpoint not found: {tmp_path / 'missing'}" in capsys.readouterr().err
