"""Training: which parameters each step of the 3-step iteration moves, the one-forward
shortcut of steps 2+3 against the paper's sequential steps, losses, checkpoints, resume,
and evaluation over a split."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import imgpix.train as T
from imgpix.data import NUM_CLASSES, SyntheticScenes
from imgpix.fusion import fuse_log
from imgpix.labels import IGNORE_INDEX, from_masks
from imgpix.losses import MIN_LOG_PROB, segmentation_loss
from imgpix.metrics import confusion_matrix, scores
from imgpix.train import Trainer, TrainConfig

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_for(**overrides) -> TrainConfig:
    base = dict(image_size=SIZE, num_train=8, num_val=6, batch_size=4, epochs=1, labeler="tiny", seed=0)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = SyntheticScenes(split="train", num_images=4, size=SIZE)
    images, masks = zip(*(data[i] for i in range(len(data))))
    return torch.stack(images), torch.stack(masks)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, before[name]) for name, p in module.named_parameters())


def moved(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}


def all_changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """Every parameter tensor moved (weight decay/Adam move even zero-gradient ones)."""
    return all(not torch.equal(p, before[name]) for name, p in module.named_parameters())


def count_steps(monkeypatch, optimizer: torch.optim.Optimizer) -> list[int]:
    calls = [0]
    original = optimizer.step

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(optimizer, "step", counted)
    return calls


# --- which parameters each step moves ------------------------------------------------------


def test_step2_alone_moves_generator_not_segmentation(batch):
    image, mask = batch
    trainer = Trainer(cfg_for())
    trainer.model.train()
    labels = from_masks(mask, NUM_CLASSES)
    seg0, gen0, lab0 = snapshot(trainer.model.seg), snapshot(trainer.model.generator), snapshot(trainer.model.labeler)
    log_probs = trainer.fused(image, labels)
    loss = trainer.aux_step_loss(log_probs, image, mask)
    assert loss.requires_grad and torch.isfinite(loss)
    T.step(loss, trainer.aux_opt)
    assert unchanged(trainer.model.seg, seg0)
    assert all(p.grad is None for p in trainer.model.seg.parameters()), "step 2 leaked a gradient into s"
    assert all_changed(trainer.model.generator, gen0)
    assert unchanged(trainer.model.labeler, lab0)


def test_3step_iteration_moves_segmentation_and_generator_not_labeler(batch, monkeypatch):
    image, mask = batch
    trainer = Trainer(cfg_for())
    trainer.model.train()
    seg_steps, aux_steps = count_steps(monkeypatch, trainer.seg_opt), count_steps(monkeypatch, trainer.aux_opt)
    lab_steps = count_steps(monkeypatch, trainer.labeler_opt)
    seg0, gen0, lab0 = snapshot(trainer.model.seg), snapshot(trainer.model.generator), snapshot(trainer.model.labeler)
    losses = trainer.iteration(image, mask)
    assert set(losses) == {"seg", "aux", "joint"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (seg_steps[0], aux_steps[0], lab_steps[0]) == (2, 2, 0)  # s: steps 1+3, g: steps 2+3
    assert all_changed(trainer.model.seg, seg0)
    assert all_changed(trainer.model.generator, gen0)
    assert unchanged(trainer.model.labeler, lab0)
    assert all(p.grad is None for p in trainer.model.labeler.parameters())
    gen_param = next(trainer.model.generator.parameters())
    assert int(trainer.aux_opt.state[gen_param]["step"]) == 2


def test_joint_procedure_is_one_step_of_each(batch, monkeypatch):
    image, mask = batch
    trainer = Trainer(cfg_for(procedure="joint"))
    trainer.model.train()
    seg_steps, aux_steps = count_steps(monkeypatch, trainer.seg_opt), count_steps(monkeypatch, trainer.aux_opt)
    seg0, gen0, lab0 = snapshot(trainer.model.seg), snapshot(trainer.model.generator), snapshot(trainer.model.labeler)
    losses = trainer.iteration(image, mask)
    assert set(losses) == {"seg", "joint"}
    assert (seg_steps[0], aux_steps[0]) == (1, 1)
    gen_param = next(trainer.model.generator.parameters())
    assert int(trainer.aux_opt.state[gen_param]["step"]) == 1
    # one SGD step from the zero-initialised score layers moves those (not yet the BN shifts)
    assert {"score_fr.weight", "score_fr.bias"} <= moved(trainer.model.seg, seg0)
    assert all_changed(trainer.model.generator, gen0)
    assert unchanged(trainer.model.labeler, lab0)
    # the joint loss is L_seg + aux_weight * L_gen
    assert losses["joint"] > losses["seg"]


def test_without_generator_only_segmentation_moves(batch, monkeypatch):
    image, mask = batch
    trainer = Trainer(cfg_for(generator=False))
    assert trainer.aux is None and trainer.aux_opt is None
    trainer.model.train()
    seg_steps, lab_steps = count_steps(monkeypatch, trainer.seg_opt), count_steps(monkeypatch, trainer.labeler_opt)
    seg0, lab0 = snapshot(trainer.model.seg), snapshot(trainer.model.labeler)
    losses = trainer.iteration(image, mask)
    assert set(losses) == {"seg"}
    assert (seg_steps[0], lab_steps[0]) == (1, 0)
    assert {"score_fr.weight", "score_fr.bias"} <= moved(trainer.model.seg, seg0)
    assert unchanged(trainer.model.labeler, lab0)
    # the labeler moves only through its own BCE iteration, which leaves s alone
    seg1 = snapshot(trainer.model.seg)
    loss = trainer.labeler_iteration(image, mask)
    assert loss > 0 and lab_steps[0] == 1
    assert all_changed(trainer.model.labeler, lab0)
    assert unchanged(trainer.model.seg, seg1)


def test_no_fusion_trains_on_plain_softmax(batch, monkeypatch):
    """fusion=None: iteration never builds labels (from_masks is not called)."""
    image, mask = batch
    trainer = Trainer(cfg_for(fusion=None, generator=False, labeler=None))
    called = []
    monkeypatch.setattr(T, "from_masks", lambda *a, **k: called.append(1))
    trainer.model.train()
    trainer.iteration(image, mask)
    assert called == []


def test_discriminator_iteration(batch, monkeypatch):
    image, mask = batch
    trainer = Trainer(cfg_for(generator=False, discriminator=True, labeler=None))
    disc = trainer.model.discriminator
    assert trainer.aux is disc and trainer.model.generator is None
    trainer.model.train()
    # step 2 alone: the discriminator moves, s does not
    seg0, disc0 = snapshot(trainer.model.seg), snapshot(disc)
    log_probs = trainer.fused(image, from_masks(mask, NUM_CLASSES))
    T.step(trainer.aux_step_loss(log_probs, image, mask), trainer.aux_opt)
    assert unchanged(trainer.model.seg, seg0)
    assert not unchanged(disc, disc0)
    # a full iteration: s in steps 1 and 3, the discriminator only in step 2
    seg_steps, aux_steps = count_steps(monkeypatch, trainer.seg_opt), count_steps(monkeypatch, trainer.aux_opt)
    seg1, disc1 = snapshot(trainer.model.seg), snapshot(disc)
    losses = trainer.iteration(image, mask)
    assert set(losses) == {"seg", "aux", "joint"} and all(v == v for v in losses.values())
    assert (seg_steps[0], aux_steps[0]) == (2, 1)
    assert not unchanged(trainer.model.seg, seg1) and not unchanged(disc, disc1)
    assert int(trainer.aux_opt.state[next(disc.parameters())]["step"]) == 2  # one per aux_step_loss above


def test_generator_and_discriminator_together_rejected():
    with pytest.raises(ValueError, match="generator or the discriminator"):
        cfg_for(discriminator=True)
    with pytest.raises(ValueError, match="step 2 only"):
        cfg_for(discriminator=True, generator=False, procedure="joint")
    for bad in ({"procedure": "4step"}, {"train_labels": "labeler"}, {"epochs": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            cfg_for(**bad)


# --- the one-forward shortcut against the paper's sequential 3 steps --------------------------


def sequential_3step(model, optimizers, image: torch.Tensor, mask: torch.Tensor, aux_weight: float,
                     stale_step2: bool = False) -> None:
    """The paper's iteration written out: three separate forward passes, standard torch ops only.

    ``stale_step2`` (a deliberate bug, for the sensitivity check) gives step 2 the P' of the
    segmentation net as it was before step 1.
    """
    seg_opt, gen_opt = optimizers
    labels = from_masks(mask, NUM_CLASSES)

    def fused_log_probs():
        return fuse_log(model.seg(image).float(), labels)

    def l_seg(log_probs):
        return F.nll_loss(log_probs.clamp_min(MIN_LOG_PROB), mask, ignore_index=IGNORE_INDEX)

    if stale_step2:
        with torch.no_grad():
            stale = fused_log_probs().exp()
    # (1) s alone on L_seg
    seg_opt.zero_grad(set_to_none=True)
    l_seg(fused_log_probs()).backward()
    seg_opt.step()
    # (2) g alone on L_gen, s frozen
    with torch.no_grad():
        probs = stale if stale_step2 else fused_log_probs().exp()
    gen_opt.zero_grad(set_to_none=True)
    F.mse_loss(model.generator(probs), image).backward()
    gen_opt.step()
    # (3) both on L_seg + L_gen
    seg_opt.zero_grad(set_to_none=True)
    gen_opt.zero_grad(set_to_none=True)
    log_probs = fused_log_probs()
    (l_seg(log_probs) + aux_weight * F.mse_loss(model.generator(log_probs.exp()), image)).backward()
    seg_opt.step()
    gen_opt.step()


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_shared_forward_equals_sequential_steps(batch, bn_mode):
    """train.py's claim: reusing step 3's forward for step 2 changes nothing.

    With eval-mode batch norm the whole state must agree; in train mode the
    sequential version's extra forward pass only updates BN running statistics
    one more time (batch statistics drive the outputs), so parameters agree.
    """
    image, mask = batch
    cfg = cfg_for(labeler=None, aux_weight=0.7)
    ours, ref = Trainer(cfg), Trainer(cfg)  # identical initialisation (seeded)
    for name, p in ref.model.named_parameters():
        assert torch.equal(p, dict(ours.model.named_parameters())[name])
    ref_opts = (torch.optim.SGD(ref.model.seg.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay),
                torch.optim.Adam(ref.model.generator.parameters(), lr=cfg.aux_lr))
    for trainer in (ours, ref):
        trainer.model.train() if bn_mode == "train" else trainer.model.eval()
    before = snapshot(ours.model)
    for it in range(2):  # two iterations: momentum and Adam state matter in the second
        sl = slice(2 * it, 2 * it + 2)
        ours.iteration(image[sl], mask[sl])
        sequential_3step(ref.model, ref_opts, image[sl], mask[sl], cfg.aux_weight)
    assert all_changed(ours.model, before)
    ref_params = dict(ref.model.named_parameters())
    for name, p in ours.model.named_parameters():
        torch.testing.assert_close(p, ref_params[name], rtol=1e-5, atol=1e-6, msg=f"parameter {name}")
    if bn_mode == "eval":
        ref_state = ref.model.state_dict()
        for name, value in ours.model.state_dict().items():
            torch.testing.assert_close(value, ref_state[name], rtol=1e-5, atol=1e-6, msg=f"state {name}")


def test_equivalence_check_is_sensitive(batch):
    """Guard for the test above: feeding step 2 the P' from *before* step 1 (a plausible bug)
    gives parameters that the same tolerance tells apart; so does the joint procedure."""
    image, mask = batch
    cfg = cfg_for(labeler=None)
    ours, stale, joint = Trainer(cfg), Trainer(cfg), Trainer(replace(cfg, procedure="joint"))
    for trainer in (ours, stale, joint):
        trainer.model.eval()
    stale_opts = (torch.optim.SGD(stale.model.seg.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay),
                  torch.optim.Adam(stale.model.generator.parameters(), lr=cfg.aux_lr))
    ours.iteration(image[:2], mask[:2])
    sequential_3step(stale.model, stale_opts, image[:2], mask[:2], cfg.aux_weight, stale_step2=True)
    joint.iteration(image[:2], mask[:2])
    for other in (stale, joint):
        assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-6)
                   for a, b in zip(ours.model.generator.parameters(), other.model.generator.parameters()))


# --- losses --------------------------------------------------------------------------------


def test_segmentation_loss_finite_when_true_class_excluded():
    torch.manual_seed(0)
    logits = torch.randn(1, NUM_CLASSES, 4, 4, requires_grad=True)
    mask = torch.full((1, 4, 4), 1)
    mask[0, 0, :] = 2
    mask[0, 1, 0] = IGNORE_INDEX
    labels = torch.zeros(1, NUM_CLASSES, dtype=torch.bool)
    labels[0, [0, 2]] = True  # class 1, present in the mask, is excluded
    log_probs = fuse_log(logits, labels)
    assert torch.isneginf(log_probs[0, 1]).all()
    loss = segmentation_loss(log_probs, mask)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # the 11 excluded pixels cost exactly -MIN_LOG_PROB each and teach nothing
    kept_rows = torch.zeros(4, 4, dtype=torch.bool)
    kept_rows[0, :] = True
    excluded = (mask[0] == 1)
    assert int(excluded.sum()) == 11
    class2 = -log_probs[0, 2][kept_rows].detach()
    expected = (11 * -MIN_LOG_PROB + class2.sum()) / 15
    torch.testing.assert_close(loss.detach(), expected)
    assert (logits.grad[0][:, excluded] == 0).all()
    assert (logits.grad[0][:, 1, 0] == 0).all()  # the ignored pixel


def test_segmentation_loss_all_excluded_is_constant():
    logits = torch.randn(2, NUM_CLASSES, 3, 3, requires_grad=True)
    mask = torch.full((2, 3, 3), 5)
    labels = torch.zeros(2, NUM_CLASSES, dtype=torch.bool)
    labels[:, 0] = True
    loss = segmentation_loss(fuse_log(logits, labels), mask)
    assert loss.item() == -MIN_LOG_PROB
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_one_hot_and_label_fn():
    mask = torch.tensor([[[0, 3], [IGNORE_INDEX, 20]]])
    hot = T.one_hot(mask, NUM_CLASSES)
    assert hot.shape == (1, NUM_CLASSES, 2, 2)
    assert hot[0, :, 1, 0].sum() == 0  # ignored pixel
    assert hot[0, 3, 0, 1] == 1 and hot[0, 20, 1, 1] == 1 and hot.sum() == 3
    image = torch.zeros(1, 3, 2, 2)
    assert torch.equal(T.label_fn("oracle")(image, mask), from_masks(mask, NUM_CLASSES))
    assert T.label_fn("none")(image, mask) == "none"
    assert T.label_fn("labeler")(image, mask) is None
    with pytest.raises(ValueError, match="label source"):
        T.label_fn("gt")


# --- checkpoints, resume, evaluation --------------------------------------------------------


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> tuple[Path, Trainer]:
    out = tmp_path_factory.mktemp("two")
    return out, T.train(cfg_for(epochs=2), out, log=lambda line: None)


def read_history(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_checkpoint_round_trip(tmp_path):
    cfg = cfg_for()
    trainer = T.train(cfg, tmp_path, log=lambda line: None)
    model, loaded_cfg, state = T.load_checkpoint(tmp_path / T.CHECKPOINT)
    assert loaded_cfg == cfg and state["epoch"] == 1
    original = trainer.model.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(value, loaded[name]), name
    loader = T.build_loader(cfg, "val", shuffle=False)
    for source in ("oracle", "labeler", "none"):
        a, b = T.evaluate(trainer.model, loader, source), T.evaluate(model, loader, source)
        assert {k: a[k] for k in T.METRIC_NAMES} == {k: b[k] for k in T.METRIC_NAMES}, source
    # the history row is the oracle evaluation of the saved model
    row = read_history(tmp_path / T.HISTORY)[-1]
    result = T.evaluate(model, loader, "oracle")
    for k in T.METRIC_NAMES:
        assert float(row[k]) == pytest.approx(result[k], abs=1e-6)
    assert (tmp_path / "config.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        T.load_checkpoint(tmp_path / "nope.pt")


def test_resume_equals_uninterrupted(two_epochs, tmp_path):
    full_dir, full = two_epochs
    cfg = cfg_for(epochs=1)
    T.train(cfg, tmp_path, log=lambda line: None)
    assert len(read_history(tmp_path / T.HISTORY)) == 1
    lines = []
    resumed = T.train(replace(cfg, epochs=2), tmp_path, log=lines.append)
    assert resumed.epoch == 2 and len(lines) == 1  # only epoch 2 ran
    ref_state = full.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    ours_rows, ref_rows = read_history(tmp_path / T.HISTORY), read_history(full_dir / T.HISTORY)
    assert [r["epoch"] for r in ours_rows] == ["1", "2"]
    for ours, ref in zip(ours_rows, ref_rows):
        assert {k: v for k, v in ours.items() if k != "seconds"} == {k: v for k, v in ref.items() if k != "seconds"}
    # training a finished run again is a no-op
    again = T.train(replace(cfg, epochs=2), tmp_path, log=lines.append)
    assert again.epoch == 2 and len(lines) == 1 and len(read_history(tmp_path / T.HISTORY)) == 2


def test_resume_with_other_config_raises(two_epochs):
    out, _ = two_epochs
    with pytest.raises(ValueError, match="another configuration.*lr"):
        T.train(cfg_for(epochs=3, lr=0.01), out, log=lambda line: None)
    assert len(read_history(out / T.HISTORY)) == 2  # untouched


def test_resume_ignores_runtime_only_settings(two_epochs):
    out, _ = two_epochs
    lines = []
    done = T.train(cfg_for(epochs=2, workers=1, channels_last=True), out, log=lines.append)
    assert done.epoch == 2 and lines == []  # accepted as the same run, already finished


def test_resume_drops_history_rows_after_checkpoint(two_epochs, tmp_path):
    """A crash between saving metrics.csv rows and the checkpoint: stale rows are dropped."""
    out, _ = two_epochs
    state = torch.load(out / T.CHECKPOINT, weights_only=False)
    rows = read_history(out / T.HISTORY)
    state["epoch"] = 1
    torch.save(state, tmp_path / T.CHECKPOINT)
    for row in rows:
        T.append_history(tmp_path / T.HISTORY, row)
    trainer = T.Trainer(TrainConfig.from_dict(state["config"]))
    T.resume_or_start(trainer, tmp_path)
    assert trainer.epoch == 1
    assert [r["epoch"] for r in read_history(tmp_path / T.HISTORY)] == ["1"]


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


def test_evaluate_sums_confusions_over_batches(two_epochs):
    _, trainer = two_epochs
    cfg = replace(trainer.cfg, batch_size=4)  # 6 images: batches of 4 and 2
    loader = T.build_loader(cfg, "val", shuffle=False)
    assert [len(m) for _, m in loader] == [4, 2]
    model = trainer.model
    for source in ("oracle", "none"):
        cm = T.confusion(model, loader, T.label_fn(source))
        model.eval()
        total = torch.zeros_like(cm)
        pixels = 0
        with torch.no_grad():
            for image, mask in loader:
                labels = T.label_fn(source)(image, mask)
                total += confusion_matrix(model(image, labels).log_probs.argmax(1), mask, NUM_CLASSES)
                pixels += int((mask != IGNORE_INDEX).sum())
        assert torch.equal(cm, total)
        assert int(cm.sum()) == pixels
        result = T.evaluate(model, loader, source)
        expected = scores(total)
        assert {k: result[k] for k in T.METRIC_NAMES} == {k: expected[k] for k in T.METRIC_NAMES}
    # evaluation does not depend on the batch size
    a = T.evaluate(model, T.build_loader(replace(cfg, batch_size=6), "val", shuffle=False), "oracle")
    b = T.evaluate(model, loader, "oracle")
    assert a["MIOU"] == pytest.approx(b["MIOU"], abs=1e-12)

