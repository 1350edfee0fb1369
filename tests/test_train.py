"""imgpix.train: which parameters each step of the 3-step iteration moves, the labels and losses of an
iteration, the one-forward shortcut of steps 2+3 against the paper's sequential steps, divergence, the
learning-rate schedules. The config, loaders and checkpoints have their own test files."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from runs import SIZE, cfg_for, quiet

import imgpix.checkpoint as ckpt
import imgpix.data.loaders as loaders
import imgpix.train as T
from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES, SyntheticScenes
from imgpix.fusion import fuse_log
from imgpix.labels import IGNORE_INDEX, corrupt, from_masks
from imgpix.losses import MIN_LOG_PROB, reconstruction_loss, segmentation_loss
from imgpix.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


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

