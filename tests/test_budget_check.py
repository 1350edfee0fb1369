"""The noise experiment's convergence check (``--budget-check``): seed 0 of every model at twice the epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgpix.experiments import noisy_labels as nl
from imgpix.experiments.noisy_labels.analysis import budget_check

ROOT = Path(__file__).resolve().parents[1]


def fake_seed(correct: int, change: float) -> dict:
    """A seed result of one unfused model: 2 classes, ``correct`` of 10 pixels right per image."""
    matrix = np.array([[correct, 10 - correct], [0, 0]], dtype=np.int32)[None].repeat(3, 0)
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "updates": [4, 8, 12, 16],
                            "MIOU": [10.0, 20.0, 30.0, 30.0 + change]})
    name = nl.main_condition(nl.NoiseConfig(models=("unfused",)), "none").name
    return {"seed": 0, "models": {"unfused": {"matrices": {name: matrix}, "history": history, "updates": 16}}}


def test_budget_check_compares_the_same_condition_at_both_budgets():
    cfg = nl.NoiseConfig(models=("unfused",))
    frame = budget_check(fake_seed(5, 0.0), fake_seed(8, 4.0), cfg, 2)
    row = frame.iloc[0]
    # class 0: IoU 5/10 and 8/10; class 1 never true, but predicted: IoU 0 -> MIOU over both classes
    assert row["MIOU"] == pytest.approx(25.0) and row["MIOU_x2"] == pytest.approx(40.0)
    assert row["change"] == pytest.approx(15.0)
    assert row["last_quarter_change"] == pytest.approx(0.0) and row["last_quarter_change_x2"] == pytest.approx(4.0)
    assert len(frame) == 1  # the unfused model has no labeler condition here, and no oracle matrix


def test_budget_check_run_trains_seed_zero_at_twice_the_epochs(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "validation" / "noisy_labels.py"), "--quick", "--epochs", "1",
                           "--num-train", "32", "--num-val", "16", "--models", "unfused,fused", "--budget-check",
                           "--no-progress", "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}, text=True, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check = pd.read_csv(out / "budget_check.csv")
    assert set(check["row"].str.split(" + ", regex=False).str[0]) == {"unfused", "fused"}
    assert (check["updates_x2"] == 2 * check["updates"]).all()
    table = pd.read_csv(out / "table.csv").set_index("row")
    for row in check.itertuples():  # the budget's column is the run's own seed-0 score (one seed here)
        assert row.MIOU == pytest.approx(table.loc[row.row, "MIOU"], abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["budget_check"] and len(summary["budget_check"]) == len(check)
    assert "#### Convergence: seed 0 of every model" in (out / "report.md").read_text()
