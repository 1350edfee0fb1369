"""Shapes, parameter counts, initialisation, alignment and weight loading of the networks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from imgpix.models import FCN, Discriminator, Generator, Labeler, build_labeler, build_segmenter

N = 21
SIZES = [(64, 64), (70, 93), (1, 1), (17, 5)]
# Hand-counted for 21 classes: VGG16 without fc8 is 138,357,544 - 4,097,000 = 134,260,544;
# score_fr 4096*21+21, score_pool4 512*21+21, score_pool3 256*21+21; upsamplers 21*21*(2f)^2.
VGG_BACKBONE = 134_260_544
VGG_COUNTS = {
    "32s": VGG_BACKBONE + 86_037 + 21 * 21 * 64**2,
    "16s": VGG_BACKBONE + 86_037 + 10_773 + 21 * 21 * (4**2 + 32**2),
    "8s": VGG_BACKBONE + 86_037 + 10_773 + 5_397 + 21 * 21 * (4**2 + 4**2 + 16**2),
}
# Tiny backbone: convs 3*16*9 + 16*16*9 + 16*32*9 + 32*32*9 + 32*64*9 + 64*64*9, BN 2*(16+16+32+32+64+64),
# head 64*128+128; scores 128*21+21, 32*21+21, 16*21+21.
TINY_BACKBONE = 71_856 + 448 + 8_320
TINY_COUNTS = {
    "32s": TINY_BACKBONE + 2_709 + 21 * 21 * 16**2,
    "16s": TINY_BACKBONE + 2_709 + 693 + 21 * 21 * (4**2 + 8**2),
    "8s": TINY_BACKBONE + 2_709 + 693 + 357 + 21 * 21 * 3 * 4**2,
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_fcn(variant: str) -> FCN:
    """A VGG16 FCN without storage: shapes and counts at no cost."""
    with torch.device("meta"):
        return FCN(N, variant)


def randomise_scores(model: FCN) -> None:
    """Undo the zero init of the score layers so gradients reach the input."""
    for name, module in model.named_modules():
        if name.startswith("score"):
            nn.init.normal_(module.weight)


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A torchvision VGG16 state dict saved to disk, and its values."""
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path, state


# --- FCN on VGG16 -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_vgg_parameter_counts(variant):
    model = meta_fcn(variant)
    assert count(model.backbone) == VGG_BACKBONE
    assert count(model) == VGG_COUNTS[variant]
    assert model.backbone.levels[2].channels == 4096


def test_vgg_reference_count_is_about_134_5m():
    assert round(VGG_COUNTS["8s"] / 1e6, 1) == 134.5


@pytest.mark.parametrize("variant, offsets", [
    ("32s", {"final": 19}),
    ("16s", {"pool4": -5, "final": 27}),
    ("8s", {"pool4": -5, "pool3": -9, "final": 31}),
])
def test_vgg_crop_offsets_match_caffe_fcn(variant, offsets):
    assert meta_fcn(variant).crop_offsets == offsets


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("size", SIZES)
def test_vgg_output_shapes(variant, size):
    with torch.device("meta"):
        out = meta_fcn(variant)(torch.empty(2, 3, *size))
    assert out.shape == (2, N, *size)


def test_vgg_fc_layers_are_convolutions():
    top = meta_fcn("8s").backbone.stages[2]
    assert (top.fc6.kernel_size, top.fc6.out_channels) == ((7, 7), 4096)
    assert (top.fc7.kernel_size, top.fc7.out_channels) == ((1, 1), 4096)
    assert isinstance(top.drop6, nn.Dropout) and isinstance(top.drop7, nn.Dropout)


def test_vgg_weights_round_trip_and_forward(vgg_weights):
    path, state = vgg_weights
    model = FCN(N, "8s", backbone_weights=path).eval()
    backbone = model.backbone.stages
    torch.testing.assert_close(backbone[0][0].weight, state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(backbone[2].conv5[0].weight, state["features.24.weight"], rtol=0, atol=0)
    torch.testing.assert_close(backbone[2].fc6.weight, state["classifier.0.weight"].reshape(4096, 512, 7, 7),
                               rtol=0, atol=0)
    torch.testing.assert_close(backbone[2].fc7.weight.flatten(1), state["classifier.3.weight"], rtol=0, atol=0)
    torch.testing.assert_close(backbone[2].fc6.bias, state["classifier.0.bias"], rtol=0, atol=0)
    randomise_scores(model)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, N, 64, 64)
    assert torch.isfinite(out).all() and out.std() > 0


def test_missing_weights_file_names_the_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"), torch.device("meta"):
        FCN(N, backbone_weights=path)


def test_wrong_keys_raise_value_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="missing keys.*unexpected keys"), torch.device("meta"):
        FCN(N, backbone_weights=path)


def test_wrong_shapes_raise_value_error(tmp_path):
    with torch.device("meta"):
        keys = torchvision.models.vgg16(weights=None).state_dict().keys()
    path = tmp_path / "small.pth"
    torch.save({k: torch.zeros(1) for k in keys}, path)
    with pytest.raises(ValueError, match="shape mismatches.*expected"), torch.device("meta"):
        FCN(N, backbone_weights=path)


def test_not_a_state_dict_raises_value_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="not a state dict"), torch.device("meta"):
        FCN(N, backbone_weights=path)


# --- FCN on the tiny backbone ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_tiny_parameter_counts(variant):
    model = FCN(N, variant, backbone="tiny")
    assert count(model.backbone) == TINY_BACKBONE
    assert count(model) == TINY_COUNTS[variant] < 200_000
    assert [level.stride for level in model.backbone.levels] == [2, 4, 8]


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_tiny_output_shapes(variant):
    model = FCN(N, variant, backbone="tiny").eval()
    for size in [(64, 64), (70, 93), (5, 3)]:
        assert model(torch.randn(2, 3, *size)).shape == (2, N, *size)


def test_tiny_receptive_field_is_36_pixels():
    torch.manual_seed(0)
    backbone = FCN(N, backbone="tiny").backbone.eval()
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    backbone(x)[2][:, :, 4, 4].sum().backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 36
    assert (rows.min() + rows.max()) / 2 == 8 * 4 + 3.5  # centred on its stride-8 cell


def test_tiny_outputs_align_with_input_pixels():
    # Over one stride-8 period, the support of d out[p, p] / d x is centred on p on average
    # (a crop off by one or more pixels shifts every centre the same way).
    torch.manual_seed(0)
    model = FCN(N, "8s", backbone="tiny").eval()
    randomise_scores(model)
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    shifts = []
    for p in range(28, 36):
        x.grad = None
        model(x)[:, :, p, p].sum().backward()
        for dim in (1, 0):
            support = x.grad.abs().sum(dim=(0, 1)).sum(dim).nonzero().flatten()
            shifts.append((support.min() + support.max()).item() / 2 - p)
    assert max(abs(s) for s in shifts) <= 2.5
    assert sum(shifts) == 0


def test_tiny_fcn_is_trainable():
    torch.manual_seed(0)
    model = FCN(N, backbone="tiny")
    x, target = torch.randn(4, 3, 32, 32), torch.randint(0, N, (4, 32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), target)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert nn.functional.cross_entropy(model(x), target) < loss.item()


def test_tiny_backbone_rejects_weights(tmp_path):
    with pytest.raises(ValueError, match="vgg16"):
        FCN(N, backbone="tiny", backbone_weights=tmp_path / "w.pth")


# --- upsampling ----------------------------------------------------------------------------


def bilinear_1d(factor: int) -> torch.Tensor:
    half = (torch.arange(factor) + 0.5) / factor
    return torch.cat([half, half.flip(0)])


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_upsamplers_start_bilinear(variant):
    model = FCN(N, variant, backbone="tiny")
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == {"32s": 1, "16s": 2, "8s": 3}[variant]
    for up in ups:
        factor = up.stride[0]
        assert up.kernel_size == (2 * factor, 2 * factor)
        w = bilinear_1d(factor)
        expected = torch.eye(N)[:, :, None, None] * (w[:, None] * w[None, :])
        torch.testing.assert_close(up.weight.detach(), expected)
        with torch.no_grad():
            out = up(torch.full((1, N, 5, 5), 3.0))
        torch.testing.assert_close(out[:, :, factor:-factor, factor:-factor],
                                   torch.full_like(out[:, :, factor:-factor, factor:-factor], 3.0))


def test_vgg_upsampler_factors():
    model = meta_fcn("8s")
    assert [model.upscore2.stride[0], model.upscore_pool4.stride[0], model.upscore.stride[0]] == [2, 2, 8]
    assert meta_fcn("32s").upscore.kernel_size == (64, 64)


def test_score_layers_start_at_zero():
    model = FCN(N, backbone="tiny")
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not layer.weight.any() and not layer.bias.any()


# --- labeler, generator, discriminator -----------------------------------------------------------


def test_tiny_labeler_shapes_and_scores():
    model = Labeler(N).eval()
    x = torch.randn(3, 3, 64, 64)
    logits, scores = model(x), model.scores(x)
    assert logits.shape == scores.shape == (3, N)
    torch.testing.assert_close(scores, torch.sigmoid(logits))
    assert count(model) == 540_853
    assert Labeler(N)(torch.randn(2, 3, 37, 50)).shape == (2, N)


def test_tiny_labeler_sees_the_whole_image():
    torch.manual_seed(0)
    model = Labeler(N).eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x)[:, 0].sum().backward()
    assert (x.grad.abs().sum(dim=(0, 1)) > 0).all()


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
def test_torchvision_labeler_shapes(backbone):
    with torch.device("meta"):
        assert Labeler(N, backbone)(torch.empty(2, 3, 64, 64)).shape == (2, N)


def test_resnet_labeler_weights_round_trip(tmp_path):
    source = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)
    model = Labeler(N, "resnet18", backbone_weights=path)
    torch.testing.assert_close(model.net.conv1.weight, source["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.net.layer4[1].bn2.running_var, source["layer4.1.bn2.running_var"])
    assert model.net.fc.out_features == N


def test_labeler_weight_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        Labeler(N, "resnet18", backbone_weights=tmp_path / "absent.pth")
    path = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="missing keys"):
        Labeler(N, "resnet18", backbone_weights=path)
    with pytest.raises(ValueError, match="resnet18"):
        Labeler(N, "tiny", backbone_weights=path)


def test_generator_shapes():
    model = Generator(N)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(18, N, 3, 3), (9, 18, 3, 3), (3, 9, 3, 3)]
    assert model(torch.softmax(torch.randn(2, N, 33, 20), dim=1)).shape == (2, 3, 33, 20)


def test_discriminator_shapes():
    model = Discriminator(N)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 5
    probs, image = torch.rand(2, N, 64, 64), torch.randn(2, 3, 64, 64)
    assert model(probs, image).shape == (2, 1, 8, 8)
    assert model(probs[..., :37], image[..., :37]).shape == (2, 1, 8, 5)
    with pytest.raises(ValueError, match="differ"):
        model(probs, image[..., :32])


# --- builders --------------------------------------------------------------------------------------


def test_build_segmenter():
    tiny = build_segmenter("tiny", num_classes=5)
    assert (tiny.variant, tiny.score_fr.out_channels) == ("8s", 5)
    with torch.device("meta"):
        fcn16 = build_segmenter("fcn16s")
    assert fcn16.variant == "16s" and count(fcn16) == VGG_COUNTS["16s"]
    with pytest.raises(ValueError, match="fcn32s.*tiny"):
        build_segmenter("fcn4s")


def test_build_labeler():
    assert isinstance(build_labeler("tiny", num_classes=7).net.fc, nn.Linear)
    assert build_labeler("tiny", num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="tiny.*vgg16.*resnet18"):
        build_labeler("alexnet")


@pytest.mark.parametrize("kwargs", [{"variant": "4s"}, {"backbone": "resnet18"}])
def test_fcn_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="must be one of"):
        FCN(N, **kwargs)
