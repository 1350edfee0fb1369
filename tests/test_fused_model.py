"""ImgPixNet: shapes, what ``forward`` accepts as labels (tensor, LabelSource, None = unfused), the
fusion modes (post-hoc Eq. 1 for a model trained unfused), ``predict`` = argmax P', argument checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from nets import randomised_segmenter
from strategies import cases
from torch import nn

import imgpix
from imgpix.fusion import LOGIT_ADD_BETA, fuse
from imgpix.labels import LabelSource, corrupt, from_masks
from imgpix.models import Discriminator, Generator, build_labeler, build_segmenter
from imgpix.models.fused import FUSIONS, ImgPixNet

N, B, S = 21, 2, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised_segmenter(seed: int = 0) -> nn.Module:
    return randomised_segmenter(seed, N)


def _labeler_with_scores(logits: torch.Tensor) -> nn.Module:
    """Tiny labeler whose output is the fixed logit vector ``logits`` for every image."""
    labeler = build_labeler("tiny", N)
    with torch.no_grad():
        labeler.net.fc.weight.zero_()
        labeler.net.fc.bias.copy_(logits)
    return labeler


SPREAD = torch.linspace(-3, 3, N)  # labeler logits: sigmoid spans ~0.05 .. 0.95


def _model(fusion="dot", labeler=None, generator=True, seg=None) -> ImgPixNet:
    seg = _randomised_segmenter() if seg is None else seg
    return ImgPixNet(seg, labeler, Generator(N) if generator else None, fusion=fusion).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def mask() -> torch.Tensor:
    mask = torch.zeros(B, S, S, dtype=torch.long)
    mask[0, :8, :8], mask[0, 20:, 20:], mask[0, 0, :] = 3, 7, 255
    mask[1, 10:20, 5:15] = 12
    return mask


@pytest.fixture(scope="module")
def oracle(mask) -> torch.Tensor:
    labels = torch.zeros(B, N, dtype=torch.bool)
    labels[0, [0, 3, 7]] = True
    labels[1, [0, 12]] = True
    assert torch.equal(labels, from_masks(mask, N))
    return labels


def test_output_shapes(image, oracle):
    model = _model(labeler=build_labeler("tiny", N))
    assert model.num_classes == N
    out = model(image, oracle)
    assert out.logits.shape == (B, N, S, S)
    assert out.log_probs.shape == (B, N, S, S)
    assert out.labels.shape == (B, N)
    assert out.reconstruction.shape == (B, 3, S, S)
    assert out.log_probs.dtype == torch.float32
    # a non-square, non-multiple-of-8 input keeps its size too
    odd = torch.randn(1, 3, 27, 41)
    assert model(odd).log_probs.shape == (1, N, 27, 41)


def test_logits_are_not_trivial(image):
    """Guard for the other tests: the randomised net gives class-dependent logits."""
    logits = _model()(image).logits
    assert logits.std(dim=1).min() > 1e-3


def test_none_is_unfused_even_with_a_labeler(image):
    """None means unfused; the labeler is asked only through a labeler LabelSource."""
    model = _model(labeler=_labeler_with_scores(torch.full((N,), -5.0)))
    for out in (model(image), model(image, None), model(image, LabelSource("none"))):
        assert out.labels is None
        torch.testing.assert_close(out.log_probs, torch.log_softmax(out.logits, dim=1), rtol=0, atol=1e-6)
        assert torch.isfinite(out.log_probs).all()


@pytest.mark.parametrize("text", ["none", "oracle", "labeler"])
def test_label_strings_are_rejected(image, text):
    with pytest.raises(ValueError, match="labels"):
        _model()(image, text)


def test_tensor_labels_equal_fuse_log(image, oracle):
    out = _model()(image, oracle)
    assert torch.equal(out.labels, oracle)
    torch.testing.assert_close(out.log_probs, imgpix.fuse_log(out.logits, oracle), rtol=0, atol=0)
    # absent classes are impossible, present ones sum to 1 per pixel
    assert torch.isneginf(out.log_probs[~oracle[:, :, None, None].expand_as(out.log_probs)]).all()
    torch.testing.assert_close(out.log_probs.exp().sum(1), torch.ones(B, S, S), rtol=0, atol=1e-5)
    pred = out.log_probs.argmax(1)
    for b in range(B):
        assert oracle[b, pred[b].unique()].all()


def test_soft_and_broadcast_labels(image):
    soft = torch.rand(N, generator=torch.Generator().manual_seed(3))
    out = _model()(image, soft)
    expected = torch.log(fuse(torch.softmax(out.logits, 1), soft.expand(B, -1)))
    torch.testing.assert_close(out.log_probs, expected, rtol=1e-4, atol=1e-4)


# --- LabelSource inputs ---------------------------------------------------------------------


def test_oracle_source_reads_the_mask(image, mask, oracle):
    model = _model()
    out = model(image, LabelSource("oracle"), mask)
    assert torch.equal(out.labels, oracle)
    torch.testing.assert_close(out.log_probs, model(image, oracle).log_probs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="masks"):
        model(image, LabelSource("oracle"))


def test_labeler_source_thresholds_scores_and_keeps_protected(image):
    model = _model(labeler=_labeler_with_scores(SPREAD))
    torch.testing.assert_close(model.label_scores(image), torch.sigmoid(SPREAD).expand(B, -1), rtol=0, atol=1e-6)
    source = LabelSource("labeler", tau=0.5, protected=(0,))
    out = model(image, source)
    expected = (torch.sigmoid(SPREAD) >= 0.5).expand(B, -1).clone()
    assert 0 < int(expected[0].sum()) < N - 1 and not expected[0, 0]  # a real subset; background below tau
    expected[:, 0] = True
    assert torch.equal(out.labels, expected)
    assert torch.equal(model.resolve(source, image), expected)
    torch.testing.assert_close(out.log_probs, imgpix.fuse_log(out.logits, expected), rtol=0, atol=0)
    high = model(image, LabelSource("labeler", tau=0.9)).labels
    assert int(high[0].sum()) == int((torch.sigmoid(SPREAD) >= 0.9).sum())


def test_labeler_source_without_labeler_raises(image):
    model = _model(labeler=None)
    assert model.label_scores(image) is None
    with pytest.raises(ValueError, match="labeler"):
        model(image, LabelSource("labeler"))


def test_noisy_source_is_seeded_corruption_of_the_oracle(image, mask, oracle):
    model = _model()
    source = LabelSource("noisy", m=2, k=1, seed=5, protected=(0,))
    out = model(image, source, mask)
    expected = corrupt(oracle, 2, 1, torch.Generator().manual_seed(5), (0,))
    assert torch.equal(out.labels, expected)
    assert torch.equal(model(image, source, mask).labels, expected)  # a fresh stream per call
    assert torch.equal(model.resolve(source, image, mask), expected)
    assert (out.labels.sum(1) == 1 + 1 + 2).all()  # background, one object, two outliers


def test_labeler_gets_no_gradient(image):
    model = _model(labeler=_labeler_with_scores(torch.zeros(N))).train()
    out = model(image, LabelSource("labeler", tau=0.5))
    out.log_probs[torch.isfinite(out.log_probs)].sum().backward()
    assert all(p.grad is None for p in model.labeler.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.seg.parameters())


# --- fusion modes ---------------------------------------------------------------------------


def test_fusions():
    assert FUSIONS == ("dot", "add", "logit_add", None)


def test_fusion_none_fuses_post_hoc_with_eq1(image, oracle):
    """A model trained unfused keeps its plain softmax without labels and fuses given labels with Eq. 1."""
    seg = _randomised_segmenter()
    unfused, dot = _model(fusion=None, seg=seg), _model(fusion="dot", seg=seg)
    out = unfused(image, oracle)
    assert torch.equal(out.labels, oracle)
    torch.testing.assert_close(out.log_probs, dot(image, oracle).log_probs, rtol=0, atol=0)
    plain = unfused(image)
    assert plain.labels is None
    torch.testing.assert_close(plain.log_probs, torch.log_softmax(plain.logits, 1), rtol=0, atol=1e-6)
    assert not torch.equal(out.log_probs.argmax(1), plain.log_probs.argmax(1))  # the labels changed something


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


def test_logit_add_fusion(image, oracle):
    out = _model(fusion="logit_add")(image, oracle)
    expected = torch.log_softmax(out.logits + LOGIT_ADD_BETA * oracle[:, :, None, None].float(), dim=1)
    torch.testing.assert_close(out.log_probs, expected, rtol=0, atol=1e-6)
    assert torch.isfinite(out.log_probs).all()


# --- predict = argmax P' --------------------------------------------------------------------


@pytest.mark.parametrize("fusion", FUSIONS)
@given(case=cases(soft=None, min_on=0))
def test_predict_is_an_argmax_of_the_fused_probabilities(fusion, case):
    """For any labels (binary or soft, [N] or [B,N], empty rows): ``predict`` picks a class of
    maximal ``log P'`` (the masked-argmax fast path and the full fusion agree; where several
    classes tie in ``log P'`` either may be chosen)."""
    model = ImgPixNet(nn.Identity(), fusion=fusion)
    fused = model.fuse_logits(case.logits, case.labels)
    pred = model.predict(case.logits, case.labels)
    assert pred.shape == (case.shape[0], *case.shape[2:]) and pred.dtype == torch.long
    assert torch.equal(fused.gather(1, pred.unsqueeze(1)).squeeze(1), fused.amax(1))


def test_predict_hand_example_with_an_empty_row():
    logits = torch.tensor([[2.5, 2.0, 1.0, 0.0]]).repeat(3, 1)[:, :, None, None]
    labels = torch.tensor([[False, True, False, True], [False, False, False, False], [False, False, True, False]])
    for fusion in FUSIONS:
        model = ImgPixNet(nn.Identity(), fusion=fusion)
        assert model.predict(logits, labels).flatten().tolist() == [1, 0, 2], fusion
        assert model.predict(logits, None).flatten().tolist() == [0, 0, 0], fusion
    soft = torch.tensor([[0.1, 1.0, 0.0, 0.0]]).expand(3, -1)  # log(.1) + 2.5 < log(1) + 2
    assert ImgPixNet(nn.Identity()).predict(logits, soft).flatten().tolist() == [1, 1, 1]


def test_predict_takes_labels_as_fusion_does():
    """[N] labels broadcast over the batch, as in ``fuse_logits``; bad shapes are a ValueError."""
    model = ImgPixNet(nn.Identity())
    logits = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    row = torch.tensor([True, False, True, False])
    assert torch.equal(model.predict(logits, row), model.predict(logits, row.expand(2, -1)))
    for bad in (torch.ones(2, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match="label"):
            model.fuse_logits(logits, bad)
        with pytest.raises(ValueError, match="label"):
            model.predict(logits, bad)


# --- the rest -------------------------------------------------------------------------------


def test_reconstruction_is_generator_of_fused_probs(image, oracle):
    model = _model()
    out = model(image, oracle)
    torch.testing.assert_close(out.reconstruction, model.generator(out.log_probs.exp()), rtol=0, atol=0)
    torch.testing.assert_close(model.reconstruct(out.log_probs), out.reconstruction, rtol=0, atol=0)
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


def test_bad_label_shape_raises(image):
    with pytest.raises(ValueError):
        _model()(image, torch.ones(B, N - 1, dtype=torch.bool))
