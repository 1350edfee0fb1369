"""ImgPixNet: shapes, the label sources of ``forward``, dot/add fusion, argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import imgpix
from imgpix.fusion import fuse
from imgpix.models import Discriminator, Generator, build_labeler, build_segmenter
from imgpix.models.fused import ImgPixNet

N, B, S = 21, 2, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised_segmenter(seed: int = 0) -> nn.Module:
    """Tiny FCN whose (zero-initialised) score layers are random, so logits differ per class."""
    torch.manual_seed(seed)
    seg = build_segmenter("tiny", N)
    with torch.no_grad():
        for name, p in seg.named_parameters():
            if name.startswith("score"):
                p.normal_(0.0, 0.5)
    return seg


def _labeler_with_scores(logits: torch.Tensor) -> nn.Module:
    """Tiny labeler whose output is the fixed logit vector ``logits`` for every image."""
    labeler = build_labeler("tiny", N)
    with torch.no_grad():
        labeler.net.fc.weight.zero_()
        labeler.net.fc.bias.copy_(logits)
    return labeler


def _model(fusion="dot", labeler=None, generator=True, tau=0.25) -> ImgPixNet:
    net = ImgPixNet(_randomised_segmenter(), labeler, Generator(N) if generator else None, fusion=fusion, tau=tau)
    return net.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def oracle() -> torch.Tensor:
    labels = torch.zeros(B, N, dtype=torch.bool)
    labels[0, [0, 3, 7]] = True
    labels[1, [0, 12]] = True
    return labels


def test_output_shapes(image, oracle):
    model = _model(labeler=build_labeler("tiny", N))
    out = model(image, oracle)
    assert out.logits.shape == (B, N, S, S)
    assert out.log_probs.shape == (B, N, S, S)
    assert out.labels.shape == (B, N)
    assert out.reconstruction.shape == (B, 3, S, S)
    assert out.log_probs.dtype == torch.float32
    # a non-square, non-multiple-of-8 input keeps its size too
    odd = torch.randn(1, 3, 27, 41)
    assert model(odd, "none").log_probs.shape == (1, N, 27, 41)


def test_logits_are_not_trivial(image):
    """Guard for the other tests: the randomised net gives class-dependent logits."""
    logits = _model()(image, "none").logits
    assert logits.std(dim=1).min() > 1e-3


def test_labels_none_string_is_plain_log_softmax(image, oracle):
    model = _model(labeler=_labeler_with_scores(torch.full((N,), 5.0)))
    out = model(image, "none")
    assert out.labels is None
    torch.testing.assert_close(out.log_probs, torch.log_softmax(out.logits, dim=1), rtol=0, atol=1e-6)
    assert torch.isfinite(out.log_probs).all()


def test_tensor_labels_equal_fuse_log(image, oracle):
    model = _model()
    out = model(image, oracle)
    assert torch.equal(out.labels, oracle)
    torch.testing.assert_close(out.log_probs, imgpix.fuse_log(out.logits, oracle), rtol=0, atol=0)
    # absent classes are impossible, present ones sum to 1 per pixel
    assert torch.isneginf(out.log_probs[~oracle[:, :, None, None].expand_as(out.log_probs)]).all()
    torch.testing.assert_close(out.log_probs.exp().sum(1), torch.ones(B, S, S), rtol=0, atol=1e-5)
    # the prediction lies in the label set
    pred = out.log_probs.argmax(1)
    for b in range(B):
        assert oracle[b, pred[b].unique()].all()


def test_soft_and_broadcast_labels(image):
    model = _model()
    soft = torch.rand(N, generator=torch.Generator().manual_seed(3))
    out = model(image, soft)
    expected = torch.log(fuse(torch.softmax(out.logits, 1), soft.expand(B, -1)))
    torch.testing.assert_close(out.log_probs, expected, rtol=1e-4, atol=1e-4)


def test_none_with_labeler_uses_thresholded_scores(image):
    scores = torch.linspace(-3, 3, N)  # sigmoid spans ~0.05 .. 0.95
    model = _model(labeler=_labeler_with_scores(scores), tau=0.5)
    out = model(image, None)
    expected = (torch.sigmoid(scores) >= 0.5).expand(B, -1)
    assert 0 < int(expected[0].sum()) < N  # the threshold really selects a subset
    assert torch.equal(out.labels, expected)
    torch.testing.assert_close(out.log_probs, imgpix.fuse_log(out.logits, expected), rtol=0, atol=0)
    # tau is read at call time
    model.tau = 0.9
    assert int(model(image, None).labels[0].sum()) == int((torch.sigmoid(scores) >= 0.9).sum())


def test_labeler_gets_no_gradient(image):
    model = _model(labeler=_labeler_with_scores(torch.zeros(N)), tau=0.5).train()
    out = model(image, None)
    out.log_probs[torch.isfinite(out.log_probs)].sum().backward()
    assert all(p.grad is None for p in model.labeler.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.seg.parameters())


def test_none_without_labeler_is_unfused(image):
    out = _model(labeler=None)(image, None)
    assert out.labels is None
    torch.testing.assert_close(out.log_probs, torch.log_softmax(out.logits, 1), rtol=0, atol=1e-6)


def test_fusion_none_ignores_labels(image, oracle):
    model = _model(fusion=None, labeler=_labeler_with_scores(torch.linspace(-3, 3, N)))
    for labels in (oracle, None, "none"):
        out = model(image, labels)
        assert out.labels is None
        torch.testing.assert_close(out.log_probs, torch.log_softmax(out.logits, 1), rtol=0, atol=1e-6)


def test_add_fusion_sums_to_one_and_matches_fuse(image, oracle):
    out = _model(fusion="add")(image, oracle)
    probs = out.log_probs.exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(B, S, S), rtol=0, atol=1e-5)
    expected = fuse(torch.softmax(out.logits, 1), oracle, mode="add")
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    # addition keeps absent classes possible (unlike dot) but never lets them win
    assert torch.isfinite(out.log_probs).all()
    assert not torch.allclose(probs, _model(fusion="dot")(image, oracle).log_probs.exp(), atol=1e-3)
    pred = out.log_probs.argmax(1)
    for b in range(B):
        assert oracle[b, pred[b].unique()].all()


def test_reconstruction_is_generator_of_fused_probs(image, oracle):
    model = _model()
    out = model(image, oracle)
    torch.testing.assert_close(out.reconstruction, model.generator(out.log_probs.exp()), rtol=0, atol=0)
    assert _model(generator=False)(image, oracle).reconstruction is None


def test_discriminator_is_stored_but_unused_by_forward(image, oracle):
    disc = Discriminator(N, width=8)
    model = ImgPixNet(_randomised_segmenter(), None, None, discriminator=disc).eval()
    assert model.discriminator is disc
    out = model(image, oracle)
    assert out.reconstruction is None
    assert any(k.startswith("discriminator.") for k in model.state_dict())


@pytest.mark.parametrize("fusion", ["mul", "Dot", "none", ""])
def test_invalid_fusion_raises(fusion):
    with pytest.raises(ValueError, match="fusion"):
        ImgPixNet(build_segmenter("tiny", N), fusion=fusion)


@pytest.mark.parametrize("tau", [-0.01, 1.5, float("nan")])
def test_invalid_tau_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        ImgPixNet(build_segmenter("tiny", N), tau=tau)


def test_boundary_tau_accepted():
    for tau in (0.0, 1.0):
        assert ImgPixNet(build_segmenter("tiny", N), tau=tau).tau == tau


def test_invalid_label_string_raises(image):
    with pytest.raises(ValueError, match="labels"):
        _model()(image, "oracle")


def test_bad_label_shape_raises(image):
    with pytest.raises(ValueError):
        _model()(image, torch.ones(B, N - 1, dtype=torch.bool))
