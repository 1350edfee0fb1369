"""imgpix.checkpoint: round trips, unreadable files, resume (equal to an uninterrupted run, refused for another
configuration), the metrics.csv history, atomic saves; and evaluation of a trained run over a split."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from runs import cfg_for, quiet

import imgpix.checkpoint as ckpt
import imgpix.config as config
import imgpix.data.loaders as loaders
import imgpix.evaluate as evaluation
import imgpix.metrics as metrics_mod
import imgpix.train as T
from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES
from imgpix.labels import IGNORE_INDEX, LabelSource
from imgpix.metrics import confusion_matrix, scores
from imgpix.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# --- checkpoints, resume, evaluation --------------------------------------------------------

NOISY = "noisy:m=1,k=1"  # training labels drawn from a seeded stream: resume must continue it


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> tuple[Path, Trainer]:
    out = tmp_path_factory.mktemp("two")
    return out, T.train(cfg_for(epochs=2, train_labels=NOISY), out, log=quiet)


def read_history(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_checkpoint_round_trip(two_epochs):
    out, trainer = two_epochs
    model, loaded_cfg, state = ckpt.load_checkpoint(out / ckpt.CHECKPOINT)
    assert loaded_cfg == trainer.cfg == config.resolve_data(cfg_for(epochs=2, train_labels=NOISY))
    assert state["epoch"] == 2
    original = trainer.model.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(value, loaded[name]), name
    loader = loaders.build_loader(loaded_cfg, "val")
    for source in (LabelSource("oracle"), LabelSource("labeler", protected=(0,)), LabelSource("none")):
        a, b = evaluation.evaluate(trainer.model, loader, source), evaluation.evaluate(model, loader, source)
        assert {k: a[k] for k in metrics_mod.METRIC_NAMES} == {k: b[k] for k in metrics_mod.METRIC_NAMES}, source
    # the history row is the evaluation of the saved model with eval_source, in percent
    rows = read_history(out / ckpt.HISTORY)
    assert [int(r["updates"]) for r in rows] == [4, 8]  # 2 iterations an epoch, s stepped twice in each
    row = rows[-1]
    result = evaluation.evaluate(model, loader, loaded_cfg.eval_source)
    names = metrics_mod.METRIC_NAMES
    assert {k: float(row[k]) for k in names} == {k: round(100 * result[k], 4) for k in names}
    assert all(0.0 <= result[k] <= 1.0 for k in metrics_mod.METRIC_NAMES)
    assert (out / "config.json").exists()
    assert not list(out.glob("*.tmp"))


def test_unreadable_checkpoints_raise_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    empty, garbage, other = tmp_path / "empty.pt", tmp_path / "garbage.pt", tmp_path / "other.pt"
    empty.write_bytes(b"")
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    torch.save({"model": {}}, other)
    for path in (empty, garbage):
        with pytest.raises(ValueError, match=f"{path} is not a readable imgpix checkpoint"):
            ckpt.read_checkpoint(path)
    with pytest.raises(ValueError, match=f"{other} is not an imgpix checkpoint"):
        ckpt.load_checkpoint(other)


def test_truncated_checkpoint_raises(two_epochs, tmp_path):
    out, _ = two_epochs
    data = (out / ckpt.CHECKPOINT).read_bytes()
    torn = tmp_path / ckpt.CHECKPOINT
    torn.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable imgpix checkpoint"):
        ckpt.read_checkpoint(torn)


def test_resume_equals_uninterrupted(two_epochs, tmp_path, monkeypatch):
    """A run stopped by divergence in epoch 2, a second diverging attempt (files untouched), then epoch 2:
    bit for bit the uninterrupted run (noisy training labels and the labeler's one-cycle schedule
    included); a finished run has nothing to train."""
    full_dir, full = two_epochs
    cfg = cfg_for(epochs=2, train_labels=NOISY)
    real_iteration = Trainer.iteration
    diverged = "non-finite seg loss at iteration 1 in epoch 2; the checkpoint of epoch 1 is kept"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "iteration", lambda self, image, mask: (
            {"seg": float("nan")} if self.epoch == 1 else real_iteration(self, image, mask)))
        with pytest.raises(T.DivergedError, match=diverged):
            T.train(cfg, tmp_path, log=quiet)
        saved = (tmp_path / ckpt.CHECKPOINT).read_bytes()
        with pytest.raises(T.DivergedError, match=diverged):
            T.train(cfg, tmp_path, log=quiet)
    assert (tmp_path / ckpt.CHECKPOINT).read_bytes() == saved and len(read_history(tmp_path / ckpt.HISTORY)) == 1
    lines = []
    resumed = T.train(cfg, tmp_path, log=lines.append)
    assert resumed.epoch == 2 and sum(line.startswith("epoch ") for line in lines) == 1  # only epoch 2 ran
    ours_rows, ref_rows = read_history(tmp_path / ckpt.HISTORY), read_history(full_dir / ckpt.HISTORY)
    assert [r["epoch"] for r in ours_rows] == ["1", "2"]
    ref_state = full.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    for ours, ref in zip(ours_rows, ref_rows):
        assert {k: v for k, v in ours.items() if k != "seconds"} == {k: v for k, v in ref.items() if k != "seconds"}
    lines.clear()
    again = T.train(cfg, tmp_path, log=lines.append)
    assert again.epoch == 2 and len(lines) == 1 and "nothing to train" in lines[0]
    assert len(read_history(tmp_path / ckpt.HISTORY)) == 2


def test_resume_with_other_config_raises(two_epochs):
    out, _ = two_epochs
    with pytest.raises(ValueError, match="another configuration.*lr"):
        T.train(cfg_for(epochs=3, lr=0.01, train_labels=NOISY), out, log=quiet)
    assert len(read_history(out / ckpt.HISTORY)) == 2  # untouched


def test_resume_ignores_runtime_only_settings(two_epochs):
    out, _ = two_epochs
    lines = []
    done = T.train(cfg_for(epochs=2, workers=1, channels_last=True, progress=True, train_labels=NOISY), out,
                   log=lines.append)
    assert done.epoch == 2 and len(lines) == 1 and "nothing to train" in lines[0]  # the same run, finished


def test_resume_drops_history_rows_after_checkpoint(two_epochs, tmp_path):
    """A crash between saving metrics.csv rows and the checkpoint: stale rows are dropped."""
    out, _ = two_epochs
    state = torch.load(out / ckpt.CHECKPOINT, weights_only=False)
    rows = read_history(out / ckpt.HISTORY)
    state["epoch"] = 1
    torch.save(state, tmp_path / ckpt.CHECKPOINT)
    for row in rows:
        ckpt.append_history(tmp_path / ckpt.HISTORY, row)
    trainer = T.Trainer(TrainConfig.from_dict(state["config"]))
    ckpt.resume_or_start(trainer, tmp_path)
    assert trainer.epoch == 1
    assert [r["epoch"] for r in read_history(tmp_path / ckpt.HISTORY)] == ["1"]


def test_save_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    T.save_atomic({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    # a crash while writing leaves the previous file intact
    def torn_save(obj, target):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(T.torch, "save", torn_save)
    with pytest.raises(OSError):
        T.save_atomic({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["a"], torch.arange(3))


@pytest.mark.parametrize("source", [LabelSource("oracle"), LabelSource("none")], ids=lambda s: s.name)
def test_evaluate_sums_confusions_over_batches(two_epochs, source):
    _, trainer = two_epochs
    loader = loaders.build_loader(trainer.cfg, "val")  # 6 images: batches of 4 and 2
    assert [len(m) for _, m in loader] == [4, 2]
    model = trainer.model.eval()
    total = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    with torch.no_grad():
        for image, mask in loader:
            labels = source.resolve(NUM_CLASSES, mask)
            total += confusion_matrix(model(image, labels).log_probs.argmax(1), mask, NUM_CLASSES)
    assert int(total.sum()) == sum(int((mask != IGNORE_INDEX).sum()) for _, mask in loader)
    result = evaluation.evaluate(model, loader, source)
    expected = scores(total)
    assert {k: result[k] for k in metrics_mod.METRIC_NAMES} == {k: expected[k] for k in metrics_mod.METRIC_NAMES}
    # evaluation does not depend on the batch size
    whole = evaluation.evaluate(model, loaders.build_loader(replace(trainer.cfg, batch_size=6), "val"), source)
    assert whole["MIOU"] == pytest.approx(result["MIOU"], abs=1e-12)


