"""imgpix.experiments.cache: the key covers the code that shapes a trained model, and two processes that need
the same model (two shards on machines sharing the cache folder) train it once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from imgpix.experiments.cache import TRAINING_CODE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
# imported by imgpix.train, yet without effect on the trained weights: evaluation and scores (what
# metrics.csv records), atomic files, the output lock, the package's lazy __init__
NOT_SHAPING = {"__init__.py", "evaluate.py", "metrics.py", "files.py", "lock.py", "information.py", "device.py",
               "runtime.py"}
TRAIN = """
import json, sys, time
from pathlib import Path
import torch
from imgpix.config import TrainConfig
from imgpix.experiments.cache import trained_model
torch.set_num_threads(1)
cfg = TrainConfig(model="tiny", labeler=None, generator=False, num_train=16, num_val=8, batch_size=8, epochs=3,
                  image_size=32, progress=False)
found = trained_model(cfg, Path(sys.argv[1]), log=lambda text: print("log:", text, flush=True))
print(json.dumps({"hit": found.hit, "finished": time.time()}), flush=True)
"""


def test_the_key_covers_every_module_training_imports():
    """A module of imgpix that training imports is hashed into the key, or listed here as not shaping the weights
    (after a split of train.py, a new module must be placed on one side or the other)."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, imgpix.train\n"
                             "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('imgpix')))"],
                            cwd=ROOT, env=ENV, text=True, capture_output=True, check=True).stdout.split()
    package = ROOT / "imgpix"
    for path in map(Path, loaded):
        relative = path.resolve().relative_to(package.resolve())
        covered = relative.parts[0] in TRAINING_CODE or str(relative) in NOT_SHAPING
        assert covered, f"{relative}: imported by imgpix.train but neither in TRAINING_CODE nor NOT_SHAPING"
    assert {"config.py", "checkpoint.py", "train.py", "data", "models"} <= set(TRAINING_CODE)


def test_two_processes_needing_one_model_train_it_once(tmp_path):
    """The first trains under the entry's lock; the second, started while it trains, waits on the lock and
    then loads the finished model (the cache's file locks work across processes, as across machines on a
    file system with working flock)."""
    cache = tmp_path / "cache"
    first = subprocess.Popen([sys.executable, "-c", TRAIN, str(cache)], cwd=ROOT, env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdout.readline().startswith("log: training ")  # it holds the lock and trains
    second = subprocess.Popen([sys.executable, "-c", TRAIN, str(cache)], cwd=ROOT, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], [err[-2000:] for _, err in outputs]
    trained, loaded = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert trained["hit"] is False and loaded["hit"] is True
    assert "training" not in outputs[1][0]  # the second never trained
    assert loaded["finished"] >= trained["finished"] - 1.0  # it waited for the first
    assert len(list((cache / "models").glob("*/checkpoint.pt"))) == 1
