"""Kill ``imgpix train`` mid-epoch, rerun the same command: it resumes and ends where an uninterrupted run ends.

The run is killed with SIGTERM (Python's default action: the process dies at
once, no cleanup) early in epoch 2 of 3, i.e. after the epoch-1
checkpoint. Then: every file in ``--out`` is intact (checkpoint loads, at
epoch 1; metrics.csv parses, one row), a torn ``.checkpoint.pt.<pid>.tmp`` (as a kill
during a save leaves) is planted, and the same command is rerun. It must
resume at epoch 2 and finish with exactly (bit for bit, on CPU with one
thread) the parameters, optimiser states and metrics.csv of an uninterrupted
run with the same seed; only the wall-clock ``seconds`` column may differ.
Exact equality holds because every epoch reseeds its shuffle and torch's RNG.

The uninterrupted reference run goes on in a second process meanwhile (one intra-op thread each, so on two
cores the test takes about as long as the interrupted run and its resumption).
"""

from __future__ import annotations

import csv
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from imgpix.checkpoint import CHECKPOINT, HISTORY
from imgpix.lock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
# 3 epochs of 32 iterations (256 images, batch 8, 32x32 pixels), 8 val images: long enough
# that the kill lands inside epoch 2 however fast the machine (tqdm redraws at most every 0.1 s)
ARGS = ["-m", "imgpix.cli", "train", "--epochs", "3", "--num-train", "256", "--num-val", "8",
        "--batch-size", "8", "--image-size", "32", "--seed", "5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # a fixed thread count: bitwise reproducible, and fast
FILES = ["checkpoint.pt", "config.json", "metrics.csv"]


def command(out: Path) -> list[str]:
    return [sys.executable, *ARGS, "--out", str(out)]


def run(out: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def start(out: Path) -> subprocess.Popen:
    """The same command, not awaited: its output goes to files in ``out``'s parent (no pipe to fill up)."""
    logs = [(out.parent / f"{out.name}.{name}").open("w") for name in ("stdout", "stderr")]
    try:
        return subprocess.Popen(command(out), cwd=ROOT, env=ENV, stdout=logs[0], stderr=logs[1])
    finally:
        for log in logs:
            log.close()


def kill_mid_epoch(out: Path, pattern: str, timeout: float = 300) -> int:
    """Start the run, SIGTERM it when its progress bar (stderr) matches ``pattern``; return its exit code."""
    proc = subprocess.Popen(command(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while not re.search(pattern.encode(), seen):
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")[-2000:]
            if selector.select(timeout=1.0):
                seen += os.read(proc.stderr.fileno(), 65536)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    proc.stderr.close()
    return code


def history(out: Path) -> list[dict]:
    with (out / HISTORY).open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def assert_identical(a, b, where="checkpoint"):
    """Nested dicts / lists of tensors and numbers, compared exactly."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "interrupted"
    uninterrupted = start(reference)  # awaited below, before the comparison
    try:
        # some of epoch 2's 32 iterations done: the epoch-1 checkpoint is on disk, epoch 2 is not
        code = kill_mid_epoch(out, r"epoch 2/3:[^\r]*\| *([1-9]|1[0-9])/32")
        check_interrupted_then_resume(out, code)
        assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "reference.stderr").read_text()[-3000:]
    finally:
        uninterrupted.kill()  # a no-op for a finished run
        uninterrupted.wait()
    assert history(out) == history(reference)  # losses and PA/MPA/FWAA/MIOU of all 3 epochs, exactly
    final = torch.load(out / CHECKPOINT, weights_only=False)
    expected = torch.load(reference / CHECKPOINT, weights_only=False)
    assert final["epoch"] == 3
    assert_identical(final, expected)  # model, optimiser states (momentum, Adam moments), config


def check_interrupted_then_resume(out: Path, code: int) -> None:
    """What the killed run left in ``out``; then the same command again resumes it to the end."""
    assert code == -signal.SIGTERM
    # nothing torn or temporary left behind; the killed run's lock is stale (no process holds it)
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, LOCK_NAME])
    assert torch.load(out / CHECKPOINT, weights_only=False)["epoch"] == 1
    assert [row["epoch"] for row in history(out)] == ["1"]
    (out / ".checkpoint.pt.12345.tmp").write_bytes(b"torn")  # as a kill during the atomic save would leave

    resumed = run(out)  # the same command again
    assert resumed.stdout.startswith(f"resuming from epoch 1 of {out}\n")  # resumed, not restarted, and says so
    assert "epoch 1/3:" not in resumed.stdout and "epoch 2/3:" in resumed.stdout
    assert sorted(p.name for p in out.iterdir()) == FILES  # the stale lock was taken over, then released
