"""imgpix.lock.OutputLock: one live run per output directory; a dead run's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgpix.lock import LOCK_NAME, OutputInUse, OutputLock

HOLD = """
import sys, time
from imgpix.lock import OutputLock
with OutputLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def holder(out: Path) -> subprocess.Popen:
    """Another process that holds ``out``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_file_lives_as_long_as_the_block(tmp_path):
    with OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_failing_block_leaves_no_lock(tmp_path):
    with pytest.raises(RuntimeError), OutputLock(tmp_path):
        raise RuntimeError("failed start")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_run_refuses_a_second_and_names_itself(tmp_path):
    proc = holder(tmp_path)
    try:
        with pytest.raises(OutputInUse, match=rf"{tmp_path} is in use by another run \(pid {proc.pid} on "):
            with OutputLock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).exists()  # the refused run leaves the holder's lock alone
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # stale: nobody holds it
    with OutputLock(tmp_path):
        assert f"pid {os.getpid()} " in (tmp_path / LOCK_NAME).read_text()


def test_released_and_retaken_in_turn(tmp_path):
    for _ in range(3):
        with OutputLock(tmp_path):
            time.sleep(0.01)
    assert list(tmp_path.iterdir()) == []
