"""imgpix.config: TrainConfig's checks, its derived properties and the names it accepts."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from runs import cfg_for

import imgpix.config as config
from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES
from imgpix.labels import LabelSource

pytestmark = pytest.mark.usefixtures("one_thread")


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



def test_labeler_epochs_must_be_positive():
    with pytest.raises(ValueError, match="labeler_epochs must be >= 1"):
        cfg_for(labeler_epochs=0)
    assert cfg_for(epochs=3, labeler_epochs=5).labeler_epoch_count == 3

def test_unknown_lr_schedule_raises():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        cfg_for(lr_schedule="linear")

