"""Issue 15: what a careless user meets, through the real entry point.

Contract checked here: every failure exits 2 (130 for Ctrl-C) with one line on stderr that names the
problem (and the fix where one helps), no traceback; nothing already written is lost or half-written;
a failed start leaves no stray files. Fusion (Eq. 1) has one contract for non-finite input in both
forms; the theory functions reject non-integers and out-of-domain arguments with ValueError.

CLI cases call ``imgpix.cli.main`` in-process (the real entry point, without a torch import per case);
Ctrl-C is a real ``python -m imgpix.cli`` subprocess that receives SIGINT.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from runs import default_sigint
from voc_tree import build_folder_tree, truncate

from imgpix import fuse, fuse_log, theory
from imgpix.checkpoint import CHECKPOINT, HISTORY
from imgpix.cli import main
from imgpix.labels import DEFAULT_TAU
from imgpix.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-train", "8", "--num-val", "8", "--batch-size", "4", "--image-size", "32", "-q"]
FILES = ["checkpoint.pt", "config.json", "metrics.csv"]


def tiny(epochs: int = 1) -> list[str]:
    """A tiny synthetic run, quiet, of ``epochs`` epochs."""
    return [*TINY, "--epochs", str(epochs)]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``imgpix ARGV`` in-process: (exit code, stdout, stderr); parser errors exit through SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(err: str, command: str, pattern: str) -> None:
    """One ``imgpix COMMAND: error: ...`` line matching ``pattern`` (a parser error prints its usage first)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, err
    assert lines[-1].startswith(f"imgpix {command}: error: "), err
    assert re.search(pattern, lines[-1]), err


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def history(out: Path) -> list[dict]:
    with (out / HISTORY).open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> Path:
    """A finished 1-epoch run of the default (dot-fused, tiny labeler) model on synthetic data."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *tiny(), "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# -- arguments refused by the parser: nothing runs, nothing is written ----------------------------------------

PARSER_ERRORS = {
    "lr_nan": (["train", "--lr", "nan"], r"argument --lr: must be a finite number > 0, got 'nan'"),
    "lr_inf": (["train", "--lr", "inf"], r"argument --lr: must be a finite number > 0, got 'inf'"),
    "lr_zero": (["train", "--lr", "0"], r"argument --lr: must be a finite number > 0"),
    "tau_train": (["train", "--tau", "2"], r"argument --tau: must be a number in \[0, 1\], got '2'"),
    "tau_evaluate": (["evaluate", "--checkpoint", "x", "--tau", "2"], r"argument --tau: must be a number in \[0, 1\]"),
    "epochs_zero": (["train", "--epochs", "0"], r"argument --epochs: must be an integer >= 1, got '0'"),
    "label_source_bogus": (["evaluate", "--checkpoint", "x", "--label-source", "bogus"],
                           r"argument --label-source: label source 'bogus' is not one of: none, oracle, labeler"),
    "label_source_tau": (["evaluate", "--checkpoint", "x", "--label-source", "labeler@2"],
                         r"argument --label-source: tau must be a number in \[0, 1\], got 2"),
    "train_labels_bogus": (["train", "--train-labels", "gt"], r"argument --train-labels: label source 'gt' is not"),
    "theory_zero": (["theory", "--N", "0"], r"argument --N: must be an integer >= 1, got '0'"),
}


@pytest.mark.parametrize("name", list(PARSER_ERRORS))
def test_parser_refuses_bad_values(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is relative: it must not appear
    argv, pattern = PARSER_ERRORS[name]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    assert_error(err, argv[0], pattern)
    assert list(tmp_path.iterdir()) == []


# -- data, roots, checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("data", ["voc", "folder"])
def test_data_without_root(data, capsys, trained, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "train", *tiny(), "--data", data, "--out", out)
    assert code == 2
    assert_error(err, "train", rf"--data {data} needs --root DIR")
    assert not out.exists()
    code, _, err = cli(capsys, "evaluate", "--checkpoint", trained, "--data", data, "-q")
    assert code == 2
    assert_error(err, "evaluate", rf"--data {data} needs --root DIR")


@pytest.mark.parametrize("data", ["voc", "folder"])
def test_root_that_does_not_exist(data, capsys, trained, tmp_path):
    root, out = tmp_path / "no_such_dataset", tmp_path / "out"
    code, _, err = cli(capsys, "train", *tiny(), "--data", data, "--root", root, "--out", out)
    assert code == 2
    assert_error(err, "train", re.escape(str(root)))
    assert not out.exists()  # the data are checked before --out is made
    code, _, err = cli(capsys, "evaluate", "--checkpoint", trained, "--data", data, "--root", root, "-q")
    assert code == 2
    assert_error(err, "evaluate", re.escape(str(root)))


def test_root_with_synthetic_data_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "train", *tiny(), "--root", tmp_path, "--out", tmp_path / "out")
    assert code == 2
    assert_error(err, "train", r"--root is for --data voc or folder")
    assert not (tmp_path / "out").exists()


def test_evaluate_on_data_with_other_classes(capsys, trained, tmp_path):
    tree = build_folder_tree(tmp_path / "five_classes")
    code, out, err = cli(capsys, "evaluate", "--checkpoint", trained, "--data", "folder", "--root", tree["root"], "-q")
    assert code == 2 and out == ""
    assert_error(err, "evaluate", rf"trained on 21 classes, but the folder data in {re.escape(str(tree['root']))} "
                                  "has 5: evaluate it on data with the classes it was trained on")


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "not_imgpix", "directory", "missing"])
def test_evaluate_unusable_checkpoint(damage, capsys, trained, tmp_path):
    path = tmp_path / "checkpoint.pt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        shutil.copy(trained / CHECKPOINT, path)
        truncate(path)
    elif damage == "text":
        path.write_text("these are my notes\n")
    elif damage == "not_imgpix":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "directory":
        path = tmp_path / "empty_run"
        path.mkdir()
    code, out, err = cli(capsys, "evaluate", "--checkpoint", path, "-q")
    assert code == 2 and out == ""
    pattern = {"not_imgpix": r"is not an imgpix checkpoint", "missing": r"checkpoint not found",
               "directory": r"checkpoint not found: .* holds no checkpoint\.pt \(train writes one"
               }.get(damage, r"is not a readable imgpix checkpoint \(empty, truncated or another file\?\)")
    assert_error(err, "evaluate", pattern)
    assert str(path) in err


def test_rerun_with_corrupt_checkpoint_in_out(capsys, run_copy):
    truncate(run_copy / CHECKPOINT)
    before = snapshot(run_copy)
    code, out, err = cli(capsys, "train", *tiny(), "--out", run_copy)
    assert code == 2 and out == ""
    assert_error(err, "train", rf"{re.escape(str(run_copy / CHECKPOINT))} is not a readable imgpix checkpoint.*; "
                               r"delete it to train afresh, or use another --out directory$")
    assert snapshot(run_copy) == before  # not overwritten, nothing added


# -- the output directory ------------------------------------------------------------------------------------

def read_only_dir(tmp_path: Path) -> Path:
    """A directory in which ``mkdir`` fails with PermissionError: chmod 500, or (as root, who ignores
    permission bits) ``/sys``, where the kernel refuses new entries."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    try:
        os.mkdir("/sys/imgpix_probe")
    except PermissionError:
        return Path("/sys")
    os.rmdir("/sys/imgpix_probe")
    pytest.skip("no read-only location found for root")


@pytest.mark.parametrize("where", ["read_only_parent", "file_as_parent", "file_as_out"])
def test_out_that_cannot_be_created(where, capsys, tmp_path):
    (tmp_path / "a_file").write_text("mine\n")
    out = {"read_only_parent": lambda: read_only_dir(tmp_path) / "imgpix_run",
           "file_as_parent": lambda: tmp_path / "a_file" / "run", "file_as_out": lambda: tmp_path / "a_file"}[where]()
    code, stdout, err = cli(capsys, "train", *tiny(), "--out", out)
    assert code == 2 and stdout == ""
    why = {"read_only_parent": "(Operation not permitted|Permission denied)", "file_as_parent": "Not a directory",
           "file_as_out": "a file of that name exists"}[where]
    assert_error(err, "train", rf"cannot create the --out directory {re.escape(str(out))}: {why}$")
    assert (tmp_path / "a_file").read_text() == "mine\n" and not Path(out, "config.json").exists()


def test_finished_run_rerun_writes_nothing(capsys, run_copy):
    before = snapshot(run_copy)
    code, out, err = cli(capsys, "train", *tiny(), "--out", run_copy)
    assert code == 0 and err == ""
    assert out == f"{run_copy} already holds 1 epochs of this run: nothing to train (raise --epochs to train on)\n"
    assert snapshot(run_copy) == before


def test_rerun_says_it_resumes_and_estimates_time(capsys, run_copy):
    code, out, _ = cli(capsys, "train", *tiny(3), "--out", run_copy)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"resuming from epoch 1 of {run_copy}"
    assert re.fullmatch(r"epoch 2/3: .* MIOU=\d+\.\d\d% .*\(oracle labels\); about \d+ (s|min|h) left", lines[1])
    assert lines[2].startswith("epoch 3/3: ") and "left" not in lines[2]  # nothing left after the last epoch
    assert [row["epoch"] for row in history(run_copy)] == ["1", "2", "3"]


# -- divergence, interruption: the last checkpoint is kept, a failed start leaves nothing -------------------

def test_divergence_in_first_epoch_leaves_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "train", *tiny(), "--lr", "1e6", "--out", out)
    assert code == 2 and "wrote" not in stdout
    assert_error(err, "train", r"training diverged: non-finite (logits|.* loss.*) in epoch 1; no epoch finished, "
                               r"none is kept; try a smaller --lr$")
    assert not out.exists()


def test_divergence_later_keeps_last_checkpoint(capsys, run_copy, monkeypatch):
    iteration = Trainer.iteration

    def nan_in_epoch_2(self, image, mask):
        losses = iteration(self, image, mask)
        return {**losses, "seg": math.nan} if self.epoch == 1 else losses

    monkeypatch.setattr(Trainer, "iteration", nan_in_epoch_2)
    before = snapshot(run_copy)
    code, out, err = cli(capsys, "train", *tiny(2), "--out", run_copy)
    assert code == 2 and "wrote" not in out
    assert_error(err, "train", r"training diverged: non-finite seg loss at iteration 1 in epoch 2; the checkpoint "
                               r"of epoch 1 is kept; try a smaller --lr$")
    after = snapshot(run_copy)
    assert after[CHECKPOINT] == before[CHECKPOINT] and after[HISTORY] == before[HISTORY]
    assert torch.load(run_copy / CHECKPOINT, weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("existing", [False, True])
def test_interrupt_in_first_epoch_leaves_no_stray_files(existing, capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    if existing:  # a directory of the user's: kept, with what it held
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")

    def interrupted(self, loader):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    code, _, err = cli(capsys, "train", *tiny(), "--out", out)
    assert code == 130
    assert err == ("imgpix train: interrupted before the first epoch finished (nothing kept): "
                   "rerun the same command to start again\n")
    assert (sorted(p.name for p in out.iterdir()) == ["notes.txt"]) if existing else not out.exists()


def test_interrupted_evaluate_exits_130(capsys, trained, monkeypatch):
    from imgpix.evaluate import Evaluator

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "run", interrupted)
    assert cli(capsys, "evaluate", "--checkpoint", trained, "-q") == (130, "", "imgpix evaluate: interrupted\n")


def test_ctrl_c_then_rerun_resumes(tmp_path):
    """A real SIGINT once the epoch-1 checkpoint is written; the same command again resumes and says so."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "imgpix.cli", "train", "--epochs", "3", "--num-train", "64", "--num-val", "8",
            "--batch-size", "8", "--image-size", "32", "-q", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)
    try:
        lines = iter(proc.stdout.readline, "")  # blocks until a line comes; "" at the end of the output
        assert next((line for line in lines if line.startswith("epoch 1/3:")), None), proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)  # an epoch takes seconds: this lands early in epoch 2
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err == (f"imgpix train: interrupted; {out / CHECKPOINT} holds the last finished epoch: "
                   "rerun the same command to resume from it\n")
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert torch.load(out / CHECKPOINT, weights_only=False)["epoch"] == 1
    assert [row["epoch"] for row in history(out)] == ["1"]

    rerun = subprocess.run(argv, cwd=ROOT, env=env, text=True, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    lines = rerun.stdout.splitlines()
    assert lines[0] == f"resuming from epoch 1 of {out}"
    assert [line.split(":")[0] for line in lines[1:3]] == ["epoch 2/3", "epoch 3/3"]
    assert torch.load(out / CHECKPOINT, weights_only=False)["epoch"] == 3


# -- quiet mode, units, what was evaluated -----------------------------------------------------------------

@pytest.mark.parametrize("command", [["train"], ["evaluate", "--checkpoint", "x"], ["theory"]])
@pytest.mark.parametrize("switch", ["-q", "--no-progress"])
def test_every_command_has_the_quiet_switch(command, switch):
    from imgpix.cli import build_parser

    assert build_parser().parse_args([*command, switch]).progress is False
    assert build_parser().parse_args(command).progress is True


def test_quiet_switch_silences_every_bar(capsys, trained, tmp_path):
    loud = [a for a in tiny() if a != "-q"]
    code, _, err = cli(capsys, "train", *loud, "--out", tmp_path / "loud")
    assert code == 0 and re.search(r"epoch 1/1: .*it", err)  # the bar is there without the switch
    code, _, err = cli(capsys, "train", *tiny(), "--out", tmp_path / "quiet")
    assert code == 0 and err == ""
    code, _, err = cli(capsys, "evaluate", "--checkpoint", trained)
    assert code == 0 and "evaluate" in err
    code, _, err = cli(capsys, "evaluate", "--checkpoint", trained, "-q")
    assert code == 0 and err == ""


def test_scores_in_percent_and_evaluate_says_what_it_evaluated(capsys, trained):
    row = history(trained)[0]
    code, out, _ = cli(capsys, "evaluate", "--checkpoint", trained, "--label-source", "oracle",
                       "--label-source", "labeler", "--label-source", "none", "-q")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{trained / CHECKPOINT} (epoch 1, trained dot-fused) on 8 synthetic val images, 32 x 32 px; " \
                       "scores in percent, nats removed per pixel (mean over images)"
    cells = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:6]] for line in lines[3:6]}
    assert list(cells) == ["oracle", f"labeler@{DEFAULT_TAU:g}", "unfused"]
    # training logged the oracle-label val scores of the same checkpoint, in the same unit
    assert cells["oracle"] == pytest.approx([float(row[k]) for k in ("PA", "MPA", "FWAA", "MIOU")], abs=0.006)
    assert lines[6].startswith("labels: oracle = the true image labels") and "labeler@tau = " in lines[6]


# -- the Python API: one contract for non-finite input to Eq. 1, typed arguments -----------------------------

@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), where=st.integers(0, 2 * 3 * 2 * 2 - 1),
       seed=st.integers(0, 2**16))
def test_fuse_and_fuse_log_refuse_non_finite_input_alike(bad, where, seed):
    logits = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(seed))
    probs = torch.softmax(logits, dim=1)
    labels = torch.tensor([1.0, 0.0, 1.0])
    logits.view(-1)[where], probs.view(-1)[where] = bad, bad
    with pytest.raises(ValueError, match="logits contain NaN or infinite values"):
        fuse_log(logits, labels)
    with pytest.raises(ValueError, match="probs contain NaN or infinite values"):
        fuse(probs, labels)


@pytest.mark.parametrize("call, message", [
    (lambda: fuse(torch.ones(1, 3, 2, 2, dtype=torch.int64), torch.ones(3)), "floating-point torch.Tensor"),
    (lambda: fuse(np.full((1, 3, 2, 2), 1 / 3), torch.ones(3)), "torch.Tensor, got ndarray"),
    (lambda: fuse_log(torch.zeros(1, 3, 2, 2, dtype=torch.int64), torch.ones(3)), "floating-point tensor"),
    (lambda: fuse_log(np.zeros((1, 3, 2, 2)), torch.ones(3)), "torch.Tensor, got ndarray"),
    (lambda: fuse(torch.full((1, 3, 2, 2), 1 / 3), np.ones(3)), "labels must be a torch.Tensor"),
    (lambda: fuse_log(torch.zeros(1, 3, 2, 2), torch.tensor([1.0, math.nan, 0.0])), "labels contain NaN"),
])
def test_fusion_refuses_wrong_types(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("n", ["3", 3.5, None, True, math.nan])
def test_theory_refuses_non_integers(n):
    with pytest.raises(ValueError, match=r"n must be an integer, got"):
        theory.removed_information(21, n)


def test_theory_command_out_of_domain(capsys):
    for argv, bound in [(["--N", "3", "--n", "5"], r"1 <= n <= N does not hold \(N=3, n=5\)"),
                        (["--N", "21", "--n", "3", "--m", "19"], r"m <= N - n does not hold \(N=21, n=3, m=19\)"),
                        (["--n", "3", "--k", "3"], r"k < n does not hold \(n=3, k=3\)")]:
        code, out, err = cli(capsys, "theory", *argv)
        assert code == 2 and out == ""  # nothing printed before the check: no half table, no "undefined"
        assert_error(err, "theory", r"out of domain: " + bound)


# -- start-up: devices, Ctrl-C while importing, a busy --out, an impossible batch, no torch for help ------------

@pytest.mark.parametrize("command", [["train"], ["evaluate", "--checkpoint", "x"]])
@pytest.mark.parametrize("device, pattern", [
    ("gpu0", r"argument --device: 'gpu0' is not a device name: use cpu, cuda, cuda:N or mps"),
    ("gpu", r"argument --device: 'gpu' is not a device name"),
    ("cuda:99", r"argument --device: cuda:99: (CUDA is not available on this machine; use --device cpu|"
                r"this machine has \d+ CUDA device)")])
def test_unavailable_or_malformed_device_refused_before_any_work(command, device, pattern, capsys, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *command, "--device", device)
    assert code == 2 and out == ""
    assert_error(err, command[0], pattern)
    assert list(tmp_path.iterdir()) == []


def test_batch_larger_than_the_training_set_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--num-train", "8", "--batch-size", "32", "--num-val", "4",
                       "--image-size", "32", "-q", "--out", tmp_path / "run")
    assert code == 2
    assert_error(err, "train", r"--batch-size 32 is larger than the 8 training images: no full batch")
    assert not (tmp_path / "run").exists()


def test_out_held_by_a_live_run_is_refused_and_left_alone(capsys, run_copy):
    from imgpix.lock import OutputLock

    before = snapshot(run_copy)
    with OutputLock(run_copy):
        code, _, err = cli(capsys, "train", *tiny(2), "--out", run_copy)
        held = snapshot(run_copy)
    assert code == 2
    assert_error(err, "train", rf"{run_copy} is in use by another run \(pid {os.getpid()} on .*\); wait for it")
    assert {k: v for k, v in held.items() if not k.startswith(".")} == before  # nothing of the live run touched


@pytest.mark.parametrize("argv", [["--help"], ["theory", "--N", "21", "--n", "3"], ["theory", "--help"]])
def test_help_and_theory_answer_without_torch(argv):
    code = ("import sys\nfrom imgpix.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n" % argv)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: imgpix" in done.stdout or "Eq. 14" in done.stdout


def test_ctrl_c_while_starting_exits_130_in_one_line(tmp_path):
    """SIGINT while ``imgpix train`` still imports torch: 130 and one line, no traceback, nothing written."""
    code = ("import sys\nfrom imgpix.cli import main\nprint('main', flush=True)\n"
            f"sys.exit(main({['train', *tiny(), '--out', str(tmp_path / 'run')]!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=default_sigint)
    assert proc.stdout.readline() == "main\n"  # the console script's own start: imgpix.cli imports nothing heavy
    time.sleep(0.2)  # inside main, importing torch for train (seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == "imgpix train: interrupted while starting; nothing was written\n"
    assert list(tmp_path.iterdir()) == []
