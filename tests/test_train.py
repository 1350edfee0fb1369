"""Training: which parameters each step of the 3-step iteration moves, the labels and losses of an
iteration, the one-forward shortcut of steps 2+3 against the paper's sequential steps, the config
and its checks, loaders (fresh synthetic images per epoch), checkpoints, resume, divergence, and
evaluation over a split."""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from voc_tree import build_folder_tree, write_garbage

import imgpix.checkpoint as ckpt
import imgpix.config as config
import imgpix.data.loaders as loaders
import imgpix.evaluate as evaluation
import imgpix.metrics as metrics_mod
import imgpix.train as T
from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES, BadFilesError, SyntheticScenes
from imgpix.data.synthetic import PRESETS, class_names
from imgpix.fusion import fuse_log
from imgpix.labels import IGNORE_INDEX, LabelSource, corrupt, from_masks
from imgpix.losses import MIN_LOG_PROB, reconstruction_loss, segmentation_loss
from imgpix.metrics import confusion_matrix, scores
from imgpix.train import Trainer

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_for(**overrides) -> TrainConfig:
    base = dict(image_size=SIZE, num_train=8, num_val=6, batch_size=4, epochs=1, labeler="tiny", seed=0,
                progress=False)
    return TrainConfig(**{**base, **overrides})


def quiet(line: str) -> None:
    pass


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


def count_steps(monkeypatch, optimizer: torch.optim.Optimizer | None) -> list[int]:
    calls = [0]
    if optimizer is None:
        return calls
    original = optimizer.step

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(optimizer, "step", counted)
    return calls


# --- which parameters each step moves ------------------------------------------------------


def step2_alone(trainer: Trainer, image, mask) -> dict[str, float]:
    """Step 2 by itself: the generator (or discriminator) on the P' of a frozen s."""
    loss = trainer.aux_step_loss(trainer.fused(image, from_masks(mask, NUM_CLASSES)), image, mask)
    assert loss.requires_grad
    T.step(loss, trainer.aux_opt)
    return {"aux": loss.item()}


def iteration(trainer: Trainer, image, mask) -> dict[str, float]:
    return trainer.iteration(image, mask)


def labeler_bce(trainer: Trainer, image, mask) -> dict[str, float]:
    return {"labeler": trainer.labeler_iteration(image, mask)}


MODULES = ("seg", "generator", "discriminator", "labeler")
ADVERSARIAL = {"generator": False, "discriminator": True}
# config overrides, what runs, its losses, optimiser steps (seg, aux, labeler), modules that move
MOVES = {
    "step 2 alone": ({}, step2_alone, {"aux"}, (0, 1, 0), {"generator"}),
    "3step": ({}, iteration, {"seg", "aux", "joint"}, (2, 2, 0), {"seg", "generator"}),
    "joint": ({"procedure": "joint"}, iteration, {"seg", "joint"}, (1, 1, 0), {"seg", "generator"}),
    "no generator": ({"generator": False}, iteration, {"seg"}, (1, 0, 0), {"seg"}),
    "discriminator step 2 alone": (ADVERSARIAL, step2_alone, {"aux"}, (0, 1, 0), {"discriminator"}),
    "discriminator 3step": (ADVERSARIAL, iteration, {"seg", "aux", "joint"}, (2, 1, 0), {"seg", "discriminator"}),
    "labeler BCE": ({}, labeler_bce, {"labeler"}, (0, 0, 1), {"labeler"}),
}


@pytest.mark.parametrize("name", MOVES)
def test_which_parameters_move(batch, monkeypatch, name):
    """s moves in steps 1 and 3, g in steps 2 and 3, a discriminator in step 2 only, the labeler only
    in its own BCE step; a module that does not move gets no gradient either."""
    overrides, run, loss_names, steps, moving = MOVES[name]
    image, mask = batch
    trainer = Trainer(cfg_for(**overrides))
    trainer.model.train()
    optimizers = (trainer.seg_opt, trainer.aux_opt, trainer.labeler_opt)
    counts = [count_steps(monkeypatch, opt) for opt in optimizers]
    modules = {m: getattr(trainer.model, m) for m in MODULES if getattr(trainer.model, m) is not None}
    assert moving <= set(modules)
    before = {m: snapshot(module) for m, module in modules.items()}
    losses = run(trainer, image, mask)
    assert set(losses) == loss_names and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert tuple(c[0] for c in counts) == steps
    for m, module in modules.items():
        if m == "seg" and steps[0] == 1:  # one step from zero-initialised score layers moves those first
            assert {"score_fr.weight", "score_fr.bias"} <= moved(module, before[m])
        elif m in moving:  # Adam, or two SGD steps, move every parameter
            assert all_changed(module, before[m]), m
        else:
            assert unchanged(module, before[m]), m
            assert all(p.grad is None for p in module.parameters()), f"a gradient leaked into {m}"
    for opt, count in zip(optimizers[1:], counts[1:]):
        if opt is not None and count[0]:
            assert int(opt.state[opt.param_groups[0]["params"][0]]["step"]) == count[0]


# --- the labels and losses of an iteration ---------------------------------------------------


def expected_labels(model, cfg: TrainConfig, image, mask) -> torch.Tensor | None:
    """The labels ``cfg.train_labels`` stands for, built by hand from the masks or the labeler."""
    presence = from_masks(mask, NUM_CLASSES)
    spec = cfg.train_labels
    if spec == "none":
        return None
    if spec == "oracle":
        return presence
    if spec.startswith("labeler"):
        labels = model.label_scores(image) >= 0.5
        labels[:, 0] = True  # the background
        return labels
    return corrupt(presence, 2, 1, torch.Generator().manual_seed(cfg.seed), protected=[0])


@pytest.mark.parametrize("overrides", [
    {}, {"procedure": "joint"}, {"fusion": None, "train_labels": "none"}, {"train_labels": "noisy:m=2,k=1", "seed": 3},
    {"train_labels": "labeler@0.5", "generator": False},
], ids=["oracle", "joint", "unfused", "noisy", "labeler"])
def test_iteration_losses_are_eq2_and_eq3_of_the_labels_asked_for(batch, overrides):
    """``seg`` is Eq. 2 of the model before the iteration, fused with the labels of ``train_labels``;
    the joint procedure's ``joint`` adds ``aux_weight`` times Eq. 3 of the same forward pass."""
    image, mask = batch
    cfg = cfg_for(aux_weight=0.7, **overrides)
    trainer = Trainer(cfg)
    trainer.model.train()
    before = copy.deepcopy(trainer.model)
    labels = expected_labels(before, cfg, image, mask)
    with torch.no_grad():
        out = before(image, labels)
    losses = trainer.iteration(image, mask)
    seg = segmentation_loss(out.log_probs, mask).item()
    assert losses["seg"] == pytest.approx(seg, rel=1e-6)
    if cfg.procedure == "joint":
        gen = reconstruction_loss(out.reconstruction, image).item()
        assert losses["joint"] == pytest.approx(seg + 0.7 * gen, rel=1e-6)
    if labels is not None:  # guard: these labels change the loss
        with torch.no_grad():
            assert segmentation_loss(before(image).log_probs, mask).item() != pytest.approx(seg, rel=1e-3)


def test_non_finite_logits_raise_diverged(batch):
    image, mask = batch
    trainer = Trainer(cfg_for(generator=False, labeler=None))
    with torch.no_grad():
        trainer.model.seg.score_fr.bias[3] = float("nan")
    with pytest.raises(T.DivergedError, match="non-finite logits in epoch 1; no epoch finished"):
        trainer.iteration(image, mask)
    assert issubclass(T.DivergedError, ValueError)


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


def test_one_hot():
    mask = torch.tensor([[[0, 3], [IGNORE_INDEX, 20]]])
    hot = T.one_hot(mask, NUM_CLASSES)
    assert hot.shape == (1, NUM_CLASSES, 2, 2)
    assert hot[0, :, 1, 0].sum() == 0  # ignored pixel
    assert hot[0, 3, 0, 1] == 1 and hot[0, 20, 1, 1] == 1 and hot.sum() == 3


# --- the config ----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, match", [
    ({"discriminator": True}, "generator or the discriminator"),
    ({"discriminator": True, "generator": False, "procedure": "joint"}, "step 2 only"),
    ({"procedure": "4step"}, "procedure"),
    ({"fusion": "mul"}, "fusion"),
    ({"fusion": None}, "train_labels must be 'none'"),
    ({"fusion": None, "train_labels": "noisy:m=1,k=1"}, "train_labels must be 'none'"),
    ({"train_labels": "labeler", "labeler": None}, "needs a labeler"),
    ({"train_labels": "gt"}, "label source"),
    ({"train_labels": "noisy:m=1,k=0"}, "k must"),
    ({"tau": 1.5}, "tau"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": float("nan")}, "lr must be a finite"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"aux_lr": float("inf")}, "aux_lr"),
    ({"momentum": -0.1}, "momentum must be a finite number >= 0"),
    ({"weight_decay": float("inf")}, "weight_decay"),
    ({"aux_weight": float("nan")}, "aux_weight"),
])
def test_bad_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        cfg_for(**overrides)


def test_config_properties():
    cfg = cfg_for(train_labels="noisy:m=3,k=1", seed=5, tau=0.4)
    assert cfg.info.num_classes == NUM_CLASSES and len(cfg.info.class_names) == NUM_CLASSES
    assert cfg.info.background == 0 and cfg.protected == (0,)
    assert cfg.train_source == LabelSource("noisy", m=3, k=1, seed=5, tau=0.4, protected=(0,))
    assert cfg_for(train_labels="labeler@0.3").train_source == LabelSource("labeler", tau=0.3, protected=(0,))
    assert cfg_for(tau=0.4, train_labels="labeler").train_source.tau == 0.4
    assert cfg_for().train_source == LabelSource("oracle")
    assert cfg.eval_source == LabelSource("oracle")
    unfused = cfg_for(fusion=None, train_labels="none")
    assert unfused.train_source == unfused.eval_source == LabelSource("none")
    assert TrainConfig.from_dict({**asdict(cfg), "unknown": 1}) == cfg
    assert config.resolve_data(cfg).train_split == "train" and cfg.train_split is None
    assert config.resolve_data(cfg_for(train_split="val")).train_split == "val"


# --- loaders -------------------------------------------------------------------------------


def first_images(loader) -> torch.Tensor:
    return torch.stack([loader.dataset[i][0] for i in range(2)])


def test_fresh_synthetic_images_each_epoch_unless_fixed():
    cfg = cfg_for()
    assert len(loaders.build_split(cfg, "train")) == 8 and len(loaders.build_split(cfg, "val")) == 6
    one, two = (first_images(loaders.build_loader(cfg, "train", shuffle=True, epoch=e)) for e in (1, 2))
    assert not torch.equal(one, two)
    assert torch.equal(one, first_images(loaders.build_loader(cfg, "train", shuffle=True, epoch=1)))
    fixed = replace(cfg, fixed_train=True)
    assert torch.equal(*(first_images(loaders.build_loader(fixed, "train", shuffle=True, epoch=e)) for e in (1, 2)))
    val = [first_images(loaders.build_loader(cfg, "val", epoch=e)) for e in (1, 2)]
    assert torch.equal(*val) and not torch.equal(val[0], one)


def test_scene_settings_reach_both_splits():
    cfg = cfg_for(scene_preset="voc", ambiguity=0.5, family_size=2, co_occurrence=True, seed=4)
    for split in ("train", "val"):
        data = loaders.build_split(cfg, split)
        assert (data.preset, data.ambiguity, data.family_size, data.co_occurrence, data.size) == (
            PRESETS["voc"], 0.5, 2, True, SIZE)
    # val: one fixed set
    assert loaders.build_split(cfg, "train").seed == 4 and loaders.build_split(cfg, "val").seed == 0
    assert cfg.info.class_names == tuple(class_names(NUM_CLASSES, 2)) != cfg_for().info.class_names


def test_loader_order_is_seeded_by_the_epoch():
    cfg = replace(cfg_for(), num_train=12, fixed_train=True)

    def order(epoch):
        return torch.cat([mask for _, mask in loaders.build_loader(cfg, "train", shuffle=True, epoch=epoch)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    shuffled = loaders.build_loader(cfg, "train", shuffle=True)
    assert [len(mask) for _, mask in shuffled] == [4, 4, 4] and shuffled.drop_last
    assert [len(mask) for _, mask in loaders.build_loader(cfg, "val")] == [4, 2]


def test_bad_files_stop_training_before_out_is_touched(tmp_path):
    tree = build_folder_tree(tmp_path / "data")
    write_garbage(tree["root"] / "JPEGImages" / f"{tree['val'][0]}.jpg")
    cfg = TrainConfig(data="folder", root=str(tree["root"]), labeler=None, generator=False, epochs=1, progress=False)
    assert cfg.info.num_classes == len(tree["names"]) and cfg.protected == (0,)
    assert replace(cfg, background="none").protected == () and replace(cfg, background="dog").protected == (2,)
    out = tmp_path / "run"
    with pytest.raises(BadFilesError, match=tree["val"][0]):
        T.train(cfg, out, log=quiet)
    assert not out.exists()
    lines = []
    kept = loaders.checked_split(replace(cfg, skip_bad_files=True), "val", log=lines.append)
    assert len(kept) == len(tree["val"]) - 1 and len(lines) == 1 and tree["val"][0] in lines[0]


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


def test_labeler_learning_rate_is_one_cycle_over_the_run():
    """The labeler's Adam follows torch's OneCycleLR over epochs x steps; a resumed trainer picks it up."""
    cfg = cfg_for(epochs=3)  # 8 images / batch 4: 2 steps per epoch, 6 in all
    reference_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=cfg.labeler_lr, total_steps=6)
    expected = []
    for _ in range(6):
        reference_opt.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    trainer, seen, after_first = Trainer(cfg), [], None
    for epoch in range(3):
        trainer.train_epoch(loaders.build_loader(cfg, "train", shuffle=True, epoch=epoch + 1))
        trainer.epoch += 1
        seen.append(trainer.labeler_opt.param_groups[0]["lr"])
        after_first = after_first or copy.deepcopy(trainer.state())
    assert seen == pytest.approx(expected[1::2]) and max(seen) < cfg.labeler_lr
    resumed = Trainer(cfg)
    resumed.load_state(after_first)
    resumed.start_labeler_schedule(2)
    assert resumed.labeler_opt.param_groups[0]["lr"] == pytest.approx(expected[1])


def test_labeler_trains_in_its_first_epochs_only(tmp_path):
    """labeler_epochs=2 of 3: the labeler's one cycle spans 2 epochs, its weights stay fixed in epoch 3 while the
    segmenter trains on, and the history keeps its columns (the labeler's loss left empty in epoch 3)."""
    cfg = cfg_for(epochs=2, labeler_epochs=2, fusion=None, train_labels="none", generator=False)
    trainer = T.train(cfg, tmp_path, log=quiet)
    assert trainer.labeler_schedule.total_steps == 4  # 2 epochs x 2 steps
    labeler = copy.deepcopy(trainer.model.labeler.state_dict())
    seg = copy.deepcopy(trainer.model.seg.state_dict())
    trainer = T.train(replace(cfg, epochs=3), tmp_path, log=quiet)
    assert all(torch.equal(v, trainer.model.labeler.state_dict()[k]) for k, v in labeler.items())
    assert not all(torch.equal(v, trainer.model.seg.state_dict()[k]) for k, v in seg.items())
    history = pd.read_csv(tmp_path / ckpt.HISTORY)
    assert list(history.epoch) == [1, 2, 3] and history.loss_labeler.notna().tolist() == [True, True, False]
    assert history.MIOU.between(0, 100).all() and history.updates.tolist() == [2, 4, 6]


def test_labeler_epochs_must_be_positive():
    with pytest.raises(ValueError, match="labeler_epochs must be >= 1"):
        cfg_for(labeler_epochs=0)
    assert cfg_for(epochs=3, labeler_epochs=5).labeler_epoch_count == 3


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_segmenter_learning_rate_follows_its_schedule(monkeypatch, schedule):
    """Every segmenter update (steps 1 and 3 of the 3-step iteration) uses lr, or under cosine
    lr (1 + cos(pi u / U)) / 2 at update u of U; a trainer resumed after epoch 1 goes on where it stopped."""
    cfg = cfg_for(epochs=2, lr_schedule=schedule, generator=True)  # 2 iterations an epoch, 2 updates each: U = 8
    expected = [cfg.lr * (1 + math.cos(math.pi * u / 8)) / 2 if schedule == "cosine" else cfg.lr for u in range(8)]
    seen = []
    real_step = T.step
    monkeypatch.setattr(T, "step", lambda loss, *opts: (
        seen.extend(o.param_groups[0]["lr"] for o in opts if o is trainer.seg_opt), real_step(loss, *opts)))
    trainer = Trainer(cfg)
    states = []
    for epoch in range(2):
        trainer.train_epoch(loaders.build_loader(cfg, "train", shuffle=True, epoch=epoch + 1))
        trainer.epoch += 1
        states.append(copy.deepcopy(trainer.state()))
    after_first = states[0]
    assert seen == pytest.approx(expected, abs=1e-12)
    seen.clear()
    trainer = Trainer(cfg)
    trainer.load_state(after_first)
    trainer.train_epoch(loaders.build_loader(cfg, "train", shuffle=True, epoch=2))
    assert seen == pytest.approx(expected[4:], abs=1e-12)


def test_unknown_lr_schedule_raises():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        cfg_for(lr_schedule="linear")
