"""validation/scene_stats.py and imgpix.experiments.scene_stats: the quick run of every section through the
script, the statistics of the presets, and argument errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgpix.data import SyntheticScenes
from imgpix.experiments import scene_stats

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "validation" / "scene_stats.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, text=True, capture_output=True,
                          timeout=900)


def test_quick_run_of_every_section_writes_the_report(tmp_path):
    out = tmp_path / "scene_stats.md"
    done = run_cli("--quick", "--no-progress", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%|" not in done.stderr  # --no-progress: no training bar
    report = out.read_text()
    assert [line[3:] for line in report.splitlines() if line.startswith("## ")] == list(scene_stats.SECTIONS)
    assert all(f"## {name}" in done.stdout for name in scene_stats.SECTIONS)  # printed as they finish
    assert not re.findall(r"\b(?:nan|inf)\b", report, flags=re.IGNORECASE)
    tables = [line for line in report.splitlines() if line.startswith("|")]
    assert len(tables) >= 4 * 3  # a header, a rule and rows per section
    labeler = report.split("## labeler")[1].split("## segmenter")[0]
    cfg = scene_stats.labeler_config(1.0, 1, scene_stats.Sizes.quick())
    assert f"batch {cfg.batch_size}" in labeler and f"peaking at {cfg.labeler_lr:g}" in labeler  # read, not typed
    assert not list(tmp_path.glob(".*.tmp"))


def test_label_statistics_of_known_masks():
    ds = SyntheticScenes("train", 20, preset="voc")
    stats = scene_stats.label_statistics(ds)
    assert sum(stats["objects"]) + stats["none"] == pytest.approx(100)
    assert 0 < stats["object_fraction"] < 1 and 0 <= stats["ignored"] < 100
    masks = [ds.mask(i) for i in range(len(ds))]
    assert stats["mean_n"] == pytest.approx(np.mean([len(set(np.unique(m).tolist()) - {255}) for m in masks]))


def test_wide_fcn_sees_further_and_keeps_its_grid():
    import torch

    narrow, wide = scene_stats.build_segmenter("tiny"), scene_stats.wide_tiny_fcn()
    assert scene_stats.top_receptive_field(wide) > scene_stats.top_receptive_field(narrow)
    assert wide(torch.zeros(1, 3, 64, 64)).shape == narrow(torch.zeros(1, 3, 64, 64)).shape


@pytest.mark.parametrize("args, words", [(("--sections", "bogus"), "bogus"), (("--threads", "0"), "--threads")])
def test_bad_arguments_exit_2_with_one_line(args, words):
    done = run_cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr


def test_an_out_that_is_a_directory_is_refused(tmp_path):
    done = run_cli("--quick", "--sections", "presets", "--out", str(tmp_path))
    assert done.returncode == 2 and "is a directory" in done.stderr and "Traceback" not in done.stderr
