"""imgpix.models.build: networks by name (imgpix's, torchvision's, a user's factory) through training, the
checkpoint, ``imgpix evaluate --model`` and their one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from imgpix.checkpoint import load_checkpoint
from imgpix.cli import main
from imgpix.config import TrainConfig
from imgpix.evaluate import evaluate_module
from imgpix.models import build, zoo
from imgpix.train import Trainer, train

TINY = {"num_train": 4, "num_val": 4, "batch_size": 2, "image_size": 32, "epochs": 1, "progress": False}

FACTORY = '''
import torch
from torch import nn

class Quarter(nn.Module):
    """Logits at a quarter of the input's resolution, as FCN-style heads give."""
    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 4, stride=4)
    def forward(self, x):
        return {"out": self.head(x)}

def net(num_classes=21):
    return Quarter(num_classes)

def flat(num_classes=21):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "build_test_nets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "build_test_nets", raising=False)  # this test's file, not a cached one
    return tmp_path


@pytest.mark.parametrize("name", zoo.SEGMENTERS)
def test_every_torchvision_segmenter_trains_one_fused_step_and_evaluates(name, one_thread):
    cfg = TrainConfig(model=name, labeler=None, generator=False, **TINY)
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.seg.parameters()]
    image, mask = torch.randn(2, 3, 32, 32), torch.randint(0, 21, (2, 32, 32))
    losses = trainer.iteration(image, mask)
    assert torch.isfinite(torch.tensor(losses["seg"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.seg.parameters()))
    evaluation = evaluate_module(trainer.model.seg, cfg, ["none", "oracle"])
    assert evaluation.table["labels"].tolist() == ["unfused", "oracle (post-hoc)"]
    assert evaluation.table["images"].tolist() == [4, 4]


def test_weights_round_trip_through_the_config(tmp_path, one_thread):
    net = build.segmenter("lraspp_mobilenet_v3_large", 21)
    torch.save(net.net.state_dict(), tmp_path / "w.pth")  # torchvision's own keys
    cfg = TrainConfig(model="lraspp_mobilenet_v3_large", weights=str(tmp_path / "w.pth"), labeler=None,
                      generator=False, **TINY)
    loaded = build.build_model(cfg).seg.eval()
    image = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(image), net.eval()(image))


def test_a_torchvision_model_trains_saves_and_reloads(tmp_path, one_thread):
    cfg = TrainConfig(model="lraspp_mobilenet_v3_large", labeler="mobilenet_v3_small", **TINY)
    trainer = train(cfg, tmp_path / "run", log=lambda text: None)
    model, saved, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved.model == "lraspp_mobilenet_v3_large" and saved.labeler == "mobilenet_v3_small"
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_user_factory_is_built_upsampled_and_evaluated(factory_module, one_thread):
    net = build.segmenter("build_test_nets:net", 5, image_size=32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)  # quarter resolution, upsampled
    cfg = TrainConfig(model="build_test_nets:net", labeler=None, generator=False, **TINY)
    evaluation = evaluate_module(build.build_model(cfg).seg, cfg, ["none", "noisy:m=3,k=1"])
    assert len(evaluation.images) == 8 and (evaluation.images["removed"] >= 0).all()


ERRORS = {
    "unknown name": (["--model", "resnet9000"], r"argument --model: unknown segmenter 'resnet9000'"),
    "factory not importable": (["--model", "no_such_module:net"],
                               r"cannot import module 'no_such_module' of factory 'no_such_module:net': "
                               r"ModuleNotFoundError"),
    "factory output shape": (["--model", "build_test_nets:flat"], r"must give logits \[B, N, H, W\]|expected .*got"),
    "weights of another net": (["--model", "lraspp_mobilenet_v3_large", "--weights", "{tmp}/fcn.pth"],
                               r"does not fit .*missing keys .* unexpected keys"),
    "weights for other classes": (["--model", "lraspp_mobilenet_v3_large", "--weights", "{tmp}/lraspp5.pth"],
                                  r"weights are for 5 classes, the data has 21"),
    "weights missing": (["--model", "lraspp_mobilenet_v3_large", "--weights", "{tmp}/none.pth"],
                        r"none\.pth"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_network_error_is_one_line_exit_2(case, factory_module, capsys, one_thread):
    tmp = factory_module
    if not (tmp / "fcn.pth").exists():
        torch.save(build.segmenter("tiny", 21).state_dict(), tmp / "fcn.pth")
        torch.save(build.segmenter("lraspp_mobilenet_v3_large", 5).net.state_dict(), tmp / "lraspp5.pth")
    argv, pattern = ERRORS[case]
    try:
        code = main(["evaluate", *[a.format(tmp=tmp) for a in argv], "--num-val", "2", "--image-size", "32", "-q"])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("imgpix evaluate: error: ")
    import re
    assert re.search(pattern, err), err


def test_one_command_post_hoc_evaluation_of_a_saved_network(tmp_path):
    """The README's command: a torchvision net from a local state dict, fused post hoc with three sources."""
    torch.save(build.segmenter("lraspp_mobilenet_v3_large", 21).net.state_dict(), tmp_path / "w.pth")
    argv = [sys.executable, "-m", "imgpix.cli", "evaluate", "--model", "lraspp_mobilenet_v3_large", "--weights",
            str(tmp_path / "w.pth"), "--num-val", "4", "--image-size", "32", "-q", "--label-source", "none",
            "--label-source", "oracle", "--label-source", "noisy:m=3,k=1"]
    done = subprocess.run(argv, cwd=Path(__file__).parents[1], text=True, capture_output=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"lraspp_mobilenet_v3_large with {tmp_path / 'w.pth'} on 4 synthetic val images")
    assert [line.split("|")[1].strip() for line in lines[3:6]] == [
        "unfused", "oracle (post-hoc)", "noisy(m=3,k=1) (post-hoc)"]
