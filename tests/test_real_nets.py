"""validation/real_nets.py end to end (``--quick``) on a small folder tree this test writes (no ``../shared``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from voc_tree import build_folder_tree

SCRIPT = Path(__file__).resolve().parents[1] / "validation" / "real_nets.py"


def load_script():
    spec = importlib.util.spec_from_file_location("real_nets_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


def test_candidates_follow_the_baseline_recipe(script, tmp_path):
    tree = build_folder_tree(tmp_path / "data", n_train=4, n_val=2)
    for candidate in script.CANDIDATES:
        cfg = script.train_config(candidate, str(tree["root"]))
        assert (cfg.fusion, cfg.train_labels, cfg.generator) == (None, "none", False)
        assert (cfg.lr_schedule, cfg.batch_size, cfg.eval_split) == ("cosine", 16, "val")
        assert (cfg.resize, cfg.crop_size, cfg.epochs) == (candidate.resize, candidate.crop, candidate.epochs)
        assert cfg.labeler is not None and cfg.labeler_epochs == max(1, round(cfg.epochs / 4))


def test_quick_run_writes_the_table_and_a_choice(script, tmp_path, capsys):
    tree = build_folder_tree(tmp_path / "data", n_train=4, n_val=2, size=(36, 44))
    out = tmp_path / "out"
    assert script.main(["--quick", "--root", str(tree["root"]), "--out", str(out), "--no-progress"]) == 0
    text = (out / "real_nets.md").read_text()
    for candidate in script.CANDIDATES:
        assert f"| {candidate.name} " in text
        assert (out / candidate.name / "metrics.csv").exists()
    assert "(val split)" in text and "test" not in text.split("\n", 1)[0]
    assert "Chosen" in text or "nothing is chosen" in text
    assert text in capsys.readouterr().out
    # rerun: finished candidates are evaluated again, not retrained
    mtimes = {c.name: (out / c.name / "checkpoint.pt").stat().st_mtime for c in script.CANDIDATES}
    assert script.main(["--quick", "--root", str(tree["root"]), "--out", str(out), "--no-progress",
                        "--only", script.CANDIDATES[0].name]) == 0
    assert (out / script.CANDIDATES[0].name / "checkpoint.pt").stat().st_mtime == mtimes[script.CANDIDATES[0].name]


def test_choose_prefers_the_cheaper_of_near_ties_and_flags_failures(script):
    def row(name, miou, cost, change=0.0):
        return {"candidate": name, "segmenter": "tiny", "labeler": "tiny", "resize": 128, "crop": 96, "epochs": 10,
                "updates": 170, "unfused MIOU": miou, "oracle MIOU (post-hoc)": miou + 20, "labeler mAP": 50.0,
                "CPU s / update": cost, "train CPU min": 170 * cost / 60, "last-quarter MIOU change": change,
                "second-half MIOU change": 2 * change,
                "num_classes": 21}

    text = script.choose([row("a", 20.0, 2.0), row("b", 19.5, 1.0, change=3.0), row("c", 1.0, 0.5)])
    assert "**b**" in text and "c: did not learn" in text and "Still rising" in text
    assert "b (+3.0; doubling its updates: about +6)" in text
    too_slow = script.choose([row("a", 20.0, 10.0)])
    assert "nothing is chosen" in too_slow


def test_unknown_candidate_is_refused(script, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--quick", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--only", "nope"])
    assert exit_info.value.code == 2
