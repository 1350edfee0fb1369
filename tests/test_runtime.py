"""imgpix.runtime: process settings that change speed, never a result."""

import platform
import subprocess
import sys

from imgpix.runtime import keep_freed_memory

TRAIN_ONE_EPOCH = """
import hashlib, sys, tempfile, torch
from imgpix.runtime import keep_freed_memory
from imgpix.config import TrainConfig
from imgpix.train import train
if sys.argv[1] == "kept":
    keep_freed_memory()
torch.set_num_threads(1)
cfg = TrainConfig(epochs=1, num_train=32, num_val=8, image_size=32, batch_size=8, progress=False)
with tempfile.TemporaryDirectory() as out:
    model = train(cfg, out, log=lambda text: None).model
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest())
"""


def test_keep_freed_memory_applies_where_the_c_library_is_glibc():
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_kept_memory_trains_the_same_weights():
    # each setting in a fresh process (the setting is process-wide), both at once: one thread each
    runs = {mode: subprocess.Popen([sys.executable, "-c", TRAIN_ONE_EPOCH, mode], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for mode in ("kept", "default")}
    digests = {}
    for mode, process in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, (mode, stderr[-2000:])
        digests[mode] = stdout.split()[-1]
    assert digests["kept"] == digests["default"]


def test_the_tiny_net_takes_every_core_on_an_idle_machine_and_one_on_a_busy_one(monkeypatch):
    import os

    import torch

    from imgpix.runtime import default_threads

    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.5, 0.5))
    assert default_threads("tiny", "cpu") == torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.0, 0.5))
    assert default_threads("tiny", "cpu") == 1
    assert default_threads("fcn8s", "cpu") == torch.get_num_threads()  # big tensors: every core, busy or not

    def no_load_average():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_load_average)
    assert default_threads("tiny", "cpu") == torch.get_num_threads()
