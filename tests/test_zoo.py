"""imgpix.models.zoo: torchvision networks by name, user factories, adapters, local weights."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from imgpix.fusion import fuse_log
from imgpix.labels import from_masks
from imgpix.models import ImgPixNet
from imgpix.models.zoo import (
    CLASSIFIERS,
    SEGMENTERS,
    LabelerAdapter,
    SegmenterAdapter,
    build_torchvision_labeler,
    build_torchvision_segmenter,
    check_output,
    factory_segmenter,
    load_factory,
    load_weights,
    read_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread", "no_download")

N = 3
AUX = {name: name != "lraspp_mobilenet_v3_large" for name in SEGMENTERS}  # lraspp has no aux head


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """Any attempt to fetch weights fails, and torch.hub's cache stays empty."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    yield
    torch.hub.set_dir(old)
    assert not hub.exists() or not any(hub.iterdir())
    assert not (tmp_path / "torch_home").exists()


def image(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_names_come_from_torchvision():
    assert {"fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
            "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"} <= set(SEGMENTERS)
    assert {"resnet18", "mobilenet_v3_small", "vgg16"} <= set(CLASSIFIERS)
    assert not set(SEGMENTERS) & set(CLASSIFIERS)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_every_segmenter_builds_and_gives_logits_at_input_size(name):
    seg = build_torchvision_segmenter(name, N, aux=AUX[name]).eval()
    with torch.no_grad():
        logits, aux = seg.forward_with_aux(image(size=40))
        assert seg(image(size=40)).shape == logits.shape == (2, N, 40, 40)
    assert seg.num_classes == N
    assert (aux is None) == (seg.last_aux is None) == (not AUX[name])
    if AUX[name]:
        assert aux.shape == (2, N, 40, 40)


def test_without_aux_the_aux_head_is_dropped():
    seg = build_torchvision_segmenter("deeplabv3_mobilenet_v3_large", N)
    assert seg.net.aux_classifier is None
    with torch.no_grad():
        seg.eval()(image())
    assert seg.last_aux is None


@pytest.mark.parametrize("name, aux, match", [
    ("lraspp_mobilenet_v3_large", True, "no auxiliary head"),
    ("fcn8s", False, "unknown torchvision segmenter 'fcn8s'"),
])
def test_segmenter_build_errors(name, aux, match):
    with pytest.raises(ValueError, match=match):
        build_torchvision_segmenter(name, N, aux=aux)


def test_fused_training_step_updates_lraspp():
    torch.manual_seed(0)
    seg = build_torchvision_segmenter("lraspp_mobilenet_v3_large", N).train()
    mask = torch.randint(0, 2, (2, 32, 32))  # classes 0 and 1 present, class 2 absent
    before = [p.detach().clone() for p in seg.parameters()]
    opt = torch.optim.SGD(seg.parameters(), lr=0.1)
    loss = F.nll_loss(fuse_log(seg(image()), from_masks(mask, N)), mask)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, seg.parameters()))
    assert changed > len(before) // 2


def test_aux_logits_are_kept_for_an_auxiliary_loss():
    seg = build_torchvision_segmenter("deeplabv3_mobilenet_v3_large", N, aux=True).train()
    mask = torch.randint(0, N, (2, 32, 32))
    logits = seg(image())
    loss = F.cross_entropy(logits, mask) + 0.5 * F.cross_entropy(seg.last_aux, mask)
    loss.backward()
    assert seg.net.aux_classifier[-1].weight.grad is not None


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet:FutureWarning")
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "googlenet"])
def test_labelers_give_n_logits(name):
    lab = build_torchvision_labeler(name, N)
    x = image(size=64)
    logits = lab.train()(x)  # googlenet returns a named tuple in training mode
    assert logits.shape == (2, N) and lab.num_classes == N
    with torch.no_grad():
        scores = lab.eval().scores(x)
    assert scores.shape == (2, N) and bool(((scores >= 0) & (scores <= 1)).all())


def test_unknown_labeler_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown torchvision classifier 'resnet7'.*resnet18"):
        build_torchvision_labeler("resnet7", N)


def test_adapters_plug_into_imgpixnet():
    model = ImgPixNet(build_torchvision_segmenter("lraspp_mobilenet_v3_large", N),
                      build_torchvision_labeler("mobilenet_v3_small", N)).eval()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        out = model(image(), labels)
        scores = model.label_scores(image())
    assert model.num_classes == N
    assert out.log_probs.shape == (2, N, 32, 32) and scores.shape == (2, N)
    assert torch.isneginf(out.log_probs[0, 1]).all()


# ---- weights -------------------------------------------------------------------------------------

def _lraspp(num_classes: int = N) -> SegmenterAdapter:
    return build_torchvision_segmenter("lraspp_mobilenet_v3_large", num_classes).eval()


@pytest.mark.parametrize("form", ["adapter", "bare", "state_dict", "model"])
def test_weights_round_trip(tmp_path, form):
    torch.manual_seed(1)
    trained = _lraspp()
    state = trained.net.state_dict() if form == "bare" else trained.state_dict()
    blob = {form: state, "epoch": 3} if form in ("state_dict", "model") else state
    torch.save(blob, path := tmp_path / "w.pt")
    torch.manual_seed(2)
    fresh = load_weights(_lraspp(), path)
    with torch.no_grad():
        assert torch.equal(fresh(image()), trained(image()))


def test_builders_load_local_weights(tmp_path):
    lab = build_torchvision_labeler("mobilenet_v3_small", N).eval()
    torch.save(lab.net.state_dict(), path := tmp_path / "lab.pt")
    again = build_torchvision_labeler("mobilenet_v3_small", N, weights=path).eval()
    seg = _lraspp()
    torch.save(seg.state_dict(), seg_path := tmp_path / "seg.pt")
    seg_again = build_torchvision_segmenter("lraspp_mobilenet_v3_large", N, weights=seg_path).eval()
    with torch.no_grad():
        assert torch.equal(again(image()), lab(image()))
        assert torch.equal(seg_again(image()), seg(image()))


def test_weights_for_another_class_count(tmp_path):
    torch.save(_lraspp(5).state_dict(), path := tmp_path / "five.pt")
    with pytest.raises(ValueError, match="weights are for 5 classes, the data has 3") as err:
        load_weights(_lraspp(), path)
    assert "\n" not in str(err.value)


class Tiny(nn.Module):
    def __init__(self, num_classes: int = N):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


def test_missing_and_unexpected_keys_are_named_and_counted(tmp_path):
    state = SegmenterAdapter(Tiny(), N).state_dict()
    for key in ("net.conv.weight", "net.bn.weight", "net.bn.bias", "net.bn.running_mean"):
        del state[key]
    state["net.extra.weight"] = torch.zeros(1)
    torch.save(state, path := tmp_path / "w.pt")
    with pytest.raises(ValueError) as err:
        load_weights(SegmenterAdapter(Tiny(), N), path)
    message = str(err.value)
    assert "4 missing keys (net.bn.bias, net.bn.running_mean, net.bn.weight, ... (1 more))" in message
    assert "1 unexpected keys (net.extra.weight)" in message and "\n" not in message


@pytest.mark.parametrize("content, match", [
    (None, "weights file not found"),
    (b"not a torch file", "cannot read weights from"),
    ([1, 2, 3], "holds no state dict"),
    ({"model": {"w": "text"}}, "holds no state dict"),
])
def test_unreadable_weights(tmp_path, content, match):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ValueError, match=match) as err:
        read_state_dict(path)
    assert "\n" not in str(err.value)


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save({"net": Tiny()}, path := tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="cannot read weights from"):
        read_state_dict(path)


# ---- adapters and factories ----------------------------------------------------------------------

class Fixed(nn.Module):
    """Returns a fixed output (and has one parameter so check_output finds a device)."""

    def __init__(self, make):
        super().__init__()
        self.make, self.w = make, nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.make(x)


def test_adapter_upsamples_low_resolution_logits_and_takes_out():
    seg = SegmenterAdapter(Fixed(lambda x: {"out": torch.ones(x.shape[0], N, 4, 4)}), N)
    logits = seg(image(size=32))
    assert logits.shape == (2, N, 32, 32) and torch.allclose(logits, torch.ones(()))


@pytest.mark.parametrize("make, actual", [
    (lambda x: torch.zeros(2, N), "[2, 3]"),
    (lambda x: torch.zeros(2, N + 1, 32, 32), "[2, 4, 32, 32]"),
    (lambda x: torch.zeros(1, N, 32, 32), "[1, 3, 32, 32]"),
    (lambda x: torch.zeros(2, N, 64, 64), "[2, 3, 64, 64]"),
    (lambda x: (torch.zeros(2, N, 32, 32),), "tuple"),
])
def test_wrong_segmenter_output_names_expected_and_actual(make, actual):
    with pytest.raises(ValueError) as err:
        check_output(Fixed(make), N, (32, 32))
    assert "expected logits [2, 3, 32, 32]" in str(err.value) and f"got {actual}" in str(err.value)


def test_output_mapping_without_out():
    with pytest.raises(ValueError, match=r"without 'out' \(keys \['logits'\]\)"):
        SegmenterAdapter(Fixed(lambda x: {"logits": x}), N)(image())


def test_wrong_labeler_output():
    with pytest.raises(ValueError, match=r"expected logits \[2, 3\], got \[2, 4\]"):
        check_output(LabelerAdapter(Fixed(lambda x: torch.zeros(2, 4)), N), N)


def test_check_output_keeps_training_mode():
    seg = SegmenterAdapter(Tiny(), N).train()
    check_output(seg, N, (16, 16))
    assert seg.training and seg.net.bn.num_batches_tracked == 0
    with pytest.raises(ValueError, match="has 3 classes, expected 4"):
        check_output(seg, 4)


FACTORIES = """
    import torch
    from torch import nn

    def segnet(num_classes):
        return nn.Conv2d(3, num_classes, 1)

    class Strided(nn.Module):
        def __init__(self, num_classes=2, **kwargs):
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 4, stride=4)

        def forward(self, x):
            return {"out": self.conv(x)}

    def two_classes():
        return nn.Conv2d(3, 2, 1)

    def wrong_classes(num_classes):
        return nn.Conv2d(3, num_classes + 1, 1)

    def not_module(num_classes):
        return 42

    def fails(num_classes):
        raise RuntimeError("out of ideas")

    VALUE = 3
"""


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """``my_nets`` (factories) and ``broken_nets`` (a failing import) on sys.path."""
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / "broken_nets.py").write_text("import no_such_package_for_imgpix\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("my_nets", "broken_nets"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spec, num_classes, size", [
    ("my_nets:segnet", N, 16),
    ("my_nets:Strided", N, 16),  # a class; dict output at 1/4 resolution, upsampled
    ("my_nets:two_classes", 2, 8),  # called without num_classes
])
def test_factory_segmenters(user_modules, spec, num_classes, size):
    seg = factory_segmenter(spec, num_classes, (size, size))
    assert seg.num_classes == num_classes
    assert seg(image(size=size)).shape == (2, num_classes, size, size)


def test_num_classes_rule(user_modules):
    assert load_factory("my_nets:segnet", 5).out_channels == 5
    assert load_factory("my_nets:Strided").conv.out_channels == 2  # no num_classes: the default
    assert load_factory("my_nets:Strided", 4).conv.out_channels == 4
    assert load_factory("my_nets:two_classes", 4).out_channels == 2


@pytest.mark.parametrize("spec, match", [
    ("my_nets", "must look like 'package.module:factory'"),
    ("no_such_module_xyz:net", r"cannot import module 'no_such_module_xyz'.*ModuleNotFoundError"),
    ("broken_nets:net", r"cannot import module 'broken_nets'.*No module named 'no_such_package_for_imgpix'"),
    ("my_nets:missing", "module 'my_nets' has no attribute 'missing'"),
    ("my_nets:VALUE", r"is not callable \(type int\)"),
    ("my_nets:not_module", "returned int, not a torch.nn.Module"),
    ("my_nets:fails", "failed: RuntimeError: out of ideas"),
])
def test_factory_errors(user_modules, spec, match):
    with pytest.raises(ValueError, match=match) as err:
        load_factory(spec, N)
    assert "\n" not in str(err.value)


def test_factory_with_wrong_class_count_fails_at_build(user_modules):
    with pytest.raises(ValueError, match=r"expected logits \[2, 3, 16, 16\].*got \[2, 4, 16, 16\]"):
        factory_segmenter("my_nets:wrong_classes", N, (16, 16))
