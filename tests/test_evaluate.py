"""Evaluator: one forward pass per batch serves every label source; results equal separate runs and a
plain reference; kept passes, per-image records, post-hoc fusion, seeded noise, outlier affinities."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from hypothesis import given
from nets import randomised_segmenter
from strategies import segmentations
from torch import nn
from torch.utils.data import DataLoader

from imgpix.data import SyntheticScenes
from imgpix.evaluate import Evaluator
from imgpix.labels import LabelSource, from_masks
from imgpix.metrics import ConfusionMatrix, confusion_matrix, labeler_scores, per_image_confusion
from imgpix.models import build_labeler
from imgpix.models.fused import ImgPixNet

N, SIZE, IMAGES = 21, 32, 6

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = (
    LabelSource("none"),
    LabelSource("oracle"),
    LabelSource("labeler", tau=0.5, protected=(0,)),
    LabelSource("noisy", m=2, k=1, seed=3, protected=(0,)),
    LabelSource("noisy", m=0, k=1, seed=3, protected=(0,)),
    LabelSource("noisy", m=2, k=1, seed=4, protected=(0,), tag="seed 4"),
)


class CountingSeg(nn.Module):
    """A segmenter that counts its forward passes."""

    def __init__(self, seg: nn.Module):
        super().__init__()
        self.seg, self.calls = seg, 0

    @property
    def num_classes(self) -> int:
        return self.seg.num_classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.seg(image)


def segmenter(seed: int) -> CountingSeg:
    """A tiny FCN with random (not zero) score layers: class-dependent logits."""
    return CountingSeg(randomised_segmenter(seed, N))


def labeler(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = build_labeler("tiny", N)
    with torch.no_grad():
        net.net.fc.bias.copy_(torch.linspace(-3, 3, N))
    return net


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    loader = DataLoader(SyntheticScenes("val", num_images=IMAGES, size=SIZE), batch_size=4)
    assert [len(mask) for _, mask in loader] == [4, 2]
    return loader


@pytest.fixture(scope="module")
def model() -> ImgPixNet:
    return ImgPixNet(segmenter(0), labeler(1), fusion="dot").eval()


@pytest.fixture(scope="module")
def reference(model, loader) -> dict[str, torch.Tensor]:
    """Per source: the [IMAGES, N, N] confusion matrices of ``argmax model(image, labels).log_probs``."""
    streams = {s.name: s.generator() for s in SOURCES}
    counts = defaultdict(list)
    with torch.no_grad():
        for image, mask in loader:
            scores = model.label_scores(image)
            for source in SOURCES:
                labels = source.resolve(N, mask, scores, streams[source.name])
                pred = model(image, labels).log_probs.argmax(1)
                counts[source.name] += [confusion_matrix(p, t, N) for p, t in zip(pred, mask)]
    return {name: torch.stack(matrices) for name, matrices in counts.items()}


@pytest.fixture
def recorded(monkeypatch) -> dict[str, list]:
    """The labels every LabelSource.resolve call returns, by source name, in call order."""
    seen, original = defaultdict(list), LabelSource.resolve

    def spy(self, *args, **kwargs):
        labels = original(self, *args, **kwargs)
        seen[self.name].append(None if labels is None else labels.clone())
        return labels

    monkeypatch.setattr(LabelSource, "resolve", spy)
    return seen


def matrices(results) -> dict[str, torch.Tensor]:
    return {name: result.confusion.matrix for name, result in results.items()}


def test_one_forward_pass_serves_every_source(model, loader, reference):
    calls = model.seg.calls
    results = Evaluator(model, loader).run(SOURCES)
    assert model.seg.calls - calls == len(loader)
    assert list(results) == [s.name for s in SOURCES]
    labelled = sum(int((mask != 255).sum()) for _, mask in loader)
    for source in SOURCES:
        result = results[source.name]
        assert result.source == source
        assert torch.equal(result.confusion.matrix, reference[source.name].sum(0)), source.name
        assert int(result.confusion.matrix.sum()) == labelled
        assert result.scores["MIOU"] == result.confusion.compute()["MIOU"]
    # guards: the sources really differ, so the equalities above could fail
    distinct = {tuple(m.flatten().tolist()) for m in matrices(results).values()}
    assert len(distinct) == len(SOURCES)


def test_shared_pass_equals_separate_runs(model, loader):
    together = matrices(Evaluator(model, loader).run(SOURCES))
    for source in SOURCES:
        alone = Evaluator(model, loader).run([source])[source.name].confusion.matrix
        assert torch.equal(alone, together[source.name]), source.name


def test_sources_with_equal_labels_share_predictions_correctly(model, loader):
    """A tau sweep gives most images the same labels at neighbouring taus; the reused per-image counts
    must equal each source's own evaluation."""
    taus = [LabelSource("labeler", tau=t / 10, protected=(0,)) for t in range(11)]
    together = matrices(Evaluator(model, loader).run(taus))
    alone = {t.name: Evaluator(model, loader).run([t])[t.name].confusion.matrix for t in taus}
    assert all(torch.equal(together[n], alone[n]) for n in alone)
    assert len({tuple(m.flatten().tolist()) for m in together.values()}) > 2  # the labels did change with tau


def test_keep_reuses_the_first_pass(model, loader):
    kept = Evaluator(model, loader, keep=True)
    first = matrices(kept.run(SOURCES[:2]))
    calls = model.seg.calls
    again = matrices(kept.run(SOURCES))
    quality = kept.labeler(0.5)
    assert model.seg.calls == calls, "a kept evaluator ran the network again"
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(torch.equal(m, matrices(Evaluator(model, loader).run(SOURCES))[n]) for n, m in again.items())
    assert quality == Evaluator(model, loader).labeler(0.5)
    fresh = Evaluator(model, loader)
    fresh.run(SOURCES[:1])
    calls = model.seg.calls
    fresh.run(SOURCES[:1])
    assert model.seg.calls - calls == len(loader)  # without keep, every run is a new pass


def test_per_image_records(model, loader, reference):
    results = Evaluator(model, loader).run(SOURCES, per_image=True)
    presence = torch.cat([from_masks(mask, N) for _, mask in loader])
    for source in SOURCES:
        result = results[source.name]
        per_image = torch.cat(result.image_confusion)
        assert torch.equal(per_image, reference[source.name])
        assert torch.equal(per_image.sum(0), result.confusion.matrix)
        assert len(result.images) == IMAGES
        assert [r["n"] for r in result.images] == presence.sum(1).tolist()
    assert all(r["size"] == N and r["outliers"] == N - r["n"] for r in results["unfused"].images)
    assert all(r["kept"] == r["n"] == r["size"] for r in results["oracle"].images)
    for record, present in zip(results["noisy(m=2,k=1)"].images, presence):
        assert (record["kept"], record["outliers"]) == (int(present[0]) + 1, 2)
    assert all(not r.images and not r.image_confusion for r in Evaluator(model, loader).run(SOURCES[:2]).values())


def test_per_image_prediction_follows_the_fusion(loader):
    """The per-image pass reuses the audit's argmax over kept classes only where it equals argmax P':
    under logit addition it does not, and the matrices still match the model's own output."""
    model = ImgPixNet(segmenter(0), labeler(1), fusion="logit_add").eval()
    results = Evaluator(model, loader).run(SOURCES, per_image=True)
    plain = Evaluator(model, loader).run(SOURCES)
    for source in SOURCES:
        assert torch.equal(results[source.name].confusion.matrix, plain[source.name].confusion.matrix)
    streams = {s.name: s.generator() for s in SOURCES}
    with torch.no_grad():
        for (image, mask), start in zip(loader, (0, 4)):
            scores = model.label_scores(image)
            labels = SOURCES[1].resolve(N, mask, scores, streams[SOURCES[1].name])
            pred = model(image, labels).log_probs.argmax(1)
            expected = torch.stack([confusion_matrix(p, t, N) for p, t in zip(pred, mask)])
            assert torch.equal(torch.cat(results["oracle"].image_confusion)[start:start + len(mask)], expected)


def test_post_hoc_fusion_of_an_unfused_model(model, loader):
    """A model trained with fusion=None, evaluated with labels, is fused with Eq. 1."""
    unfused = ImgPixNet(model.seg, model.labeler, fusion=None).eval()
    ours, dot = matrices(Evaluator(unfused, loader).run(SOURCES)), matrices(Evaluator(model, loader).run(SOURCES))
    for name in ours:
        assert torch.equal(ours[name], dot[name]), name
    assert not torch.equal(ours["oracle"], ours["unfused"])


def test_noisy_labels_repeat_across_runs_and_models(model, loader, recorded):
    other = ImgPixNet(segmenter(7), fusion="dot").eval()
    noisy = [s for s in SOURCES if s.kind == "noisy"]
    first = matrices(Evaluator(model, loader).run(noisy))
    draws = {name: list(labels) for name, labels in recorded.items()}
    recorded.clear()
    again = matrices(Evaluator(model, loader).run(noisy))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(torch.equal(a, b) for name in draws for a, b in zip(draws[name], recorded[name]))
    recorded.clear()
    theirs = matrices(Evaluator(other, loader).run(noisy))
    assert all(torch.equal(a, b) for name in draws for a, b in zip(draws[name], recorded[name]))
    assert not torch.equal(theirs["noisy(m=2,k=1)"], first["noisy(m=2,k=1)"]), "guard: the models differ"
    # one seed: Case 2 is Case 3 without its outliers; another seed draws other labels
    for case3, case2, seed4 in zip(*(draws[s.name] for s in noisy)):
        assert torch.equal(case3 & case2, case2) and (case3 & ~case2).sum(1).eq(2).all()
    assert any(not torch.equal(a, b) for a, b in zip(draws["noisy(m=2,k=1)"], draws["noisy(m=2,k=1)[seed 4]"]))


def test_affinity_steers_the_outliers(model, loader, recorded):
    """Affinity column 7 only: every image lacking class 7 gets class 7 as its one outlier."""
    source = LabelSource("noisy", m=1, seed=0, protected=(0,))
    affinity = torch.zeros(N, N, dtype=torch.float64)
    affinity[:, 7] = 1.0
    Evaluator(model, loader).run([source, LabelSource("oracle")], affinity={source.name: affinity})
    steered, oracle = torch.cat(recorded[source.name]), torch.cat(recorded["oracle"])
    assert not oracle[:, 7].any(), "guard: class 7 is absent from these images"
    assert torch.equal(steered & ~oracle, torch.nn.functional.one_hot(torch.tensor(7), N).bool().expand(IMAGES, -1))
    recorded.clear()
    Evaluator(model, loader).run([source])
    uniform = torch.cat(recorded[source.name])
    assert not uniform[:, 7].all(), "without the affinity the outliers vary"
    assert torch.equal(uniform & oracle, steered & oracle)


def test_source_names_must_be_distinct(model, loader):
    with pytest.raises(ValueError, match="distinct"):
        Evaluator(model, loader).run([LabelSource("noisy", m=1, seed=1), LabelSource("noisy", m=1, seed=2)])


def test_labeler_quality(model, loader):
    scores = torch.cat([model.label_scores(image) for image, _ in loader])
    present = torch.cat([from_masks(mask, N) for _, mask in loader])
    objects = range(1, N)
    assert Evaluator(model, loader).labeler(0.5, objects) == labeler_scores(scores, present, 0.5, objects)
    no_labeler = ImgPixNet(model.seg).eval()
    with pytest.raises(ValueError, match="no labeler"):
        Evaluator(no_labeler, loader).labeler(0.5)
    with pytest.raises(ValueError, match="labeler"):
        Evaluator(no_labeler, loader).run([LabelSource("labeler")])


# --- per_image_confusion --------------------------------------------------------------------


def test_per_image_confusion_hand_example():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 1]]])
    target = torch.tensor([[[0, 0], [1, 255]], [[2, 1], [255, 255]]])
    counts = per_image_confusion(pred, target, 3)
    assert counts.shape == (2, 3, 3)
    assert torch.equal(counts[0], torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]]))
    assert torch.equal(counts[1], torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1]]))


@pytest.mark.parametrize("pred, target, match", [
    ([[[0, 0]], [[0, 0]]], [[[0, 3]], [[1, 1]]], "target"),  # would count as a pixel of image 1
    ([[[0, 0]], [[0, 0]]], [[[0, -1]], [[1, 1]]], "target"),
    ([[[0, 3]], [[0, 0]]], [[[0, 1]], [[1, 1]]], "pred"),
    ([[[0, 0], [0, 0]]], [[[0, 1]]], "shape"),
])
def test_per_image_confusion_rejects_what_confusion_matrix_rejects(pred, target, match):
    with pytest.raises(ValueError, match=match):
        per_image_confusion(torch.tensor(pred), torch.tensor(target), 3)


@given(segmentations())
def test_per_image_confusion_is_confusion_matrix_per_image(data):
    n, pred, target = data
    counts = per_image_confusion(pred, target, n)
    for i in range(pred.shape[0]):
        assert torch.equal(counts[i], confusion_matrix(pred[i], target[i], n))
    assert torch.equal(ConfusionMatrix(n).add_counts(counts.sum(0)).matrix, confusion_matrix(pred, target, n))
