"""One live run per output directory: an exclusive lock file that dies with its process."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

LOCK_NAME = ".imgpix-run.lock"


class OutputInUse(OSError):
    """Another live run holds the output directory."""


class OutputLock:
    """``with OutputLock(out):`` holds ``out/.imgpix-run.lock`` (a non-blocking ``flock``) for the block.

    The file names the holder (pid, host, command). The kernel drops a ``flock`` when its process dies,
    so the lock of a killed run is stale and simply taken over; the file is removed on every exit of the
    block, a failed one included. ``out`` must exist.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self.handle = None

    def __enter__(self) -> "OutputLock":
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not written its name yet"
                handle.close()
                raise OutputInUse(f"{self.path.parent} is in use by another run ({holder}); wait for it to "
                                  "finish or choose another output directory") from None
            if self._still_ours(handle):
                break
            handle.close()  # the holder removed the file while we waited for it: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n")
        handle.flush()
        self.handle = handle
        return self

    def _still_ours(self, handle) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None
