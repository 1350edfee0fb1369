"""SyntheticScenes knobs (ambiguity, family_size, co_occurrence, presets), fresh samples, and the labeler's AP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from imgpix.data.synthetic import (
    PRESETS,
    SyntheticScenes,
    _border,
    appearance_table,
    class_families,
    family_of,
    own_appearance,
)
from imgpix.metrics import labeler_scores
from imgpix.models import build_labeler
from imgpix.models.labeler import LSE_SHARPNESS

IGNORE = 255

# PASCAL VOC 2012 val label maps (issue 11): objects per image 1..5 (%), mean n incl. background,
# object pixels / labelled pixels; and the tolerances.
VOC_OBJECTS_PCT = (64.0, 25.8, 8.4, 1.6, 0.2)
VOC_MEAN_N = 2.48
VOC_OBJECT_FRACTION = 0.27


def objects(mask: np.ndarray) -> set[int]:
    return set(np.unique(mask).tolist()) - {0, IGNORE}


def same_family_pair(classes: set[int], family_size: int = 4) -> bool:
    families = [family_of(c, family_size) for c in classes]
    return len(families) != len(set(families))


# -- appearance: ambiguity and family_size ---------------------------------------------------------


def test_own_appearances_are_distinct():
    table = np.stack([own_appearance(c) for c in range(1, 21)])
    hue, angle = table[:, 0], table[:, 1] % math.pi
    for a in range(20):
        for b in range(a + 1, 20):
            d_hue = min(abs(hue[a] - hue[b]), 1 - abs(hue[a] - hue[b]))
            d_angle = min(abs(angle[a] - angle[b]), math.pi - abs(angle[a] - angle[b]))
            # beyond the per-image jitter (hue +-0.03, angle +-0.15) in hue or in stripe angle
            assert d_hue > 0.06 - 1e-9 or d_angle > 0.3, (a + 1, b + 1)


def test_ambiguity_one_shares_the_first_members_appearance():
    table = appearance_table(21, family_size=4, ambiguity=1.0)
    for family in class_families(21, 4):
        for c in family:
            assert np.array_equal(table[c], own_appearance(family[0]))


@given(st.floats(0.0, 1.0), st.sampled_from([1, 2, 4, 5, 20]))
def test_appearance_mix_equation(ambiguity, family_size):
    """p_c = p_first + (1 - ambiguity) (p_own(c) - p_first)."""
    table = appearance_table(21, family_size, ambiguity)
    for family in class_families(21, family_size):
        first = own_appearance(family[0])
        for c in family:
            expected = first + (1 - ambiguity) * (own_appearance(c) - first)
            np.testing.assert_allclose(table[c], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"ambiguity": 0.0}, {"family_size": 1}, {"family_size": 1, "ambiguity": 0.3}])
def test_every_class_its_own_appearance(kwargs):
    ds = SyntheticScenes("train", num_images=1, **kwargs)
    for c in range(1, 21):
        np.testing.assert_allclose(ds.appearance[c], own_appearance(c), atol=1e-12)


def test_family_size_groups_consecutive_ids():
    assert class_families(21, 1) == [[c] for c in range(1, 21)]
    assert class_families(21, 2)[3] == [7, 8]
    assert class_families(21, 20) == [list(range(1, 21))]
    assert [family_of(c, 2) for c in (1, 2, 3, 20)] == [0, 0, 1, 9]


def mean_object_colour(ds: SyntheticScenes, images: int) -> dict[int, np.ndarray]:
    sums: dict[int, list] = {}
    for i in range(images):
        rgb, mask = ds.render(i)
        for c in objects(mask):
            s = sums.setdefault(c, [np.zeros(3), 0])
            s[0] += rgb[:, mask == c].mean(1)
            s[1] += 1
    return {c: s[0] / s[1] for c, s in sums.items()}


def test_ambiguity_zero_separates_family_members_in_the_images():
    """Rendered colours: members of a family coincide at ambiguity 1 and move apart at ambiguity 0."""
    spread = {}
    for ambiguity in (0.0, 1.0):
        means = mean_object_colour(SyntheticScenes("train", 200, ignore_border=0, ambiguity=ambiguity), 200)
        spread[ambiguity] = max(
            np.abs(means[family[0]] - means[family[-1]]).max() for family in class_families(21)
        )
    assert spread[1.0] < 0.06 and spread[0.0] > 0.1, spread


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_ambiguity_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="ambiguity"):
        SyntheticScenes("train", ambiguity=bad)


def test_bad_knobs_are_rejected():
    with pytest.raises(ValueError, match="family_size"):
        SyntheticScenes("train", family_size=0)
    with pytest.raises(ValueError, match="preset.*legacy.*voc"):
        SyntheticScenes("train", preset="coco")
    with pytest.raises(ValueError, match="epoch"):
        SyntheticScenes("val", epoch=0)
    with pytest.raises(ValueError, match="epoch"):
        SyntheticScenes("train", epoch=-1)


# -- co-occurrence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["legacy", "voc"])
def test_co_occurrence_pairs_only_when_asked(preset):
    images = 600
    rates = {}
    for co in (False, True):
        ds = SyntheticScenes("train", images, preset=preset, co_occurrence=co)
        rates[co] = np.mean([same_family_pair(objects(ds.mask(i))) for i in range(images)])
    assert rates[False] == 0.0
    # classes drawn uniformly: P(pair) = sum_k P(k) (1 - prod_{j<k} (1 - 3j / (20 - j)))
    counts = PRESETS[preset].counts
    expected = sum(p * (1 - np.prod([(20 - j - 3 * j) / (20 - j) for j in range(k)]))
                   for k, p in enumerate(counts, start=1))
    assert abs(rates[True] - expected) < 4 * math.sqrt(expected * (1 - expected) / images), (rates, expected)


def test_family_count_caps_objects_without_co_occurrence():
    ds = SyntheticScenes("train", 300, preset="voc", family_size=10)  # 2 families
    assert max(len(objects(ds.mask(i))) for i in range(300)) == 2


# -- presets -------------------------------------------------------------------------------------------


def test_voc_preset_matches_voc_label_statistics():
    """1,000 masks at the default size against PASCAL VOC 2012 val (tolerances of issue 11)."""
    ds = SyntheticScenes("train", 1000, preset="voc")
    histogram = np.zeros(6)
    classes = object_pixels = labelled = 0
    for i in range(len(ds)):
        mask = ds.mask(i)
        present = set(np.unique(mask).tolist()) - {IGNORE}
        histogram[min(len(present - {0}), 5)] += 1
        classes += len(present)
        valid = mask != IGNORE
        object_pixels += int((mask[valid] > 0).sum())
        labelled += int(valid.sum())
    pct = 100 * histogram / len(ds)
    assert pct[0] == 0
    np.testing.assert_array_less(np.abs(pct[1:] - VOC_OBJECTS_PCT), 3.0)
    assert abs(classes / len(ds) - VOC_MEAN_N) <= 0.05
    assert abs(object_pixels / labelled - VOC_OBJECT_FRACTION) <= 0.03


def test_legacy_is_the_default_preset():
    default, legacy = SyntheticScenes("val", 20), SyntheticScenes("val", 20, preset="legacy")
    voc = SyntheticScenes("val", 20, preset="voc")
    for i in range(20):
        assert np.array_equal(default.mask(i), legacy.mask(i))
    assert any(not np.array_equal(default.mask(i), voc.mask(i)) for i in range(20))


def test_mask_equals_the_rendered_mask():
    ds = SyntheticScenes("train", 10, preset="voc", co_occurrence=True, ambiguity=0.5, epoch=3)
    for i in range(10):
        assert np.array_equal(ds.mask(i), ds[i][1].numpy())


# -- fresh samples -----------------------------------------------------------------------------------------


def test_fresh_samples_are_deterministic_and_change_with_the_epoch():
    kwargs = {"num_images": 6, "size": 32, "seed": 5, "preset": "voc"}
    a, b = SyntheticScenes("train", epoch=2, **kwargs), SyntheticScenes("train", epoch=2, **kwargs)
    other, fixed = SyntheticScenes("train", epoch=3, **kwargs), SyntheticScenes("train", **kwargs)
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
        assert not torch.equal(a[i][0], other[i][0])
        assert not torch.equal(a[i][0], fixed[i][0])
    # epoch e, item 0 must not coincide with fixed item e (a zero-padded rng key would make them equal)
    assert not torch.equal(SyntheticScenes("train", epoch=4, **kwargs)[0][0], fixed[4][0])
    # more images per epoch do not change the first ones
    assert torch.equal(SyntheticScenes("train", epoch=2, **{**kwargs, "num_images": 50})[5][0], a[5][0])


def test_val_is_one_fixed_set():
    a = SyntheticScenes("val", 4, preset="voc")
    b = SyntheticScenes("val", 4, preset="voc")
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(4))
    assert not torch.equal(a[0][0], SyntheticScenes("train", 4, preset="voc", epoch=0)[0][0])


# -- the labeler's mAP (imgpix.metrics.labeler_scores) --------------------------------------------------


def test_labeler_map_hand_computed():
    """AP = sum_k (R_k - R_{k-1}) P_k down the ranking; mAP over the listed classes with a positive.

    Class 1, scores .9 .8 .3 .1 with truth 1 0 1 0: hits at ranks 1 and 3 -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    Class 2, truth only at the third-ranked image (.5 after .7, .6) -> 1/3. Class 3 has no positive and
    is left out; class 0 (background) is not listed. At tau = 0.5: predicted (0,1) (1,1) (0,2) (2,2)
    (1,2), 2 of them true; 3 true labels -> precision 2/5, recall 2/3.
    """
    scores = torch.tensor([[1.0, 0.9, 0.6, 0.2], [1.0, 0.8, 0.5, 0.1], [1.0, 0.3, 0.7, 0.4], [1.0, 0.1, 0.2, 0.3]])
    present = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    result = labeler_scores(scores, present, tau=0.5, classes=[1, 2, 3])
    assert result["classes"] == 2
    assert result["mAP"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert result["precision"] == pytest.approx(2 / 5) and result["recall"] == pytest.approx(2 / 3)


# -- the tiny labeler ------------------------------------------------------------------------------------------


def test_tiny_labeler_is_symmetric_under_half_turns(one_thread):
    net = build_labeler("tiny", 21).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x.flip(-1, -2)), rtol=0, atol=1e-5)
        assert net(x).shape == (3, 21)


class FixedMap(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def forward(self, x):
        return self.values.expand(x.shape[0], -1, -1, -1)


def test_tiny_labeler_pools_by_log_sum_exp(one_thread):
    """q_c = (1/r) log((1/|I|) sum_i exp(r s_c(i))): with r = 5 and cells 0, 0, 0, ln(5)/5 the terms
    exp(r s) are 1, 1, 1, 5, their mean 2, so q = ln(2)/5; a constant map gives its value."""
    assert LSE_SHARPNESS == 5.0
    tiny = build_labeler("tiny", 2).net.eval()
    cells = torch.zeros(1, 128, 2, 2)
    cells[0, 0, 1, 1] = math.log(5) / 5
    tiny.features = FixedMap(cells)
    with torch.no_grad():
        tiny.fc.weight.zero_()
        tiny.fc.weight[0, 0] = 1.0  # class 0 scores channel 0; class 1 is the constant bias
        tiny.fc.bias.copy_(torch.tensor([0.0, -1.5]))
        q = tiny(torch.zeros(3, 3, 16, 16))
    torch.testing.assert_close(q, torch.tensor([[math.log(2) / 5, -1.5]] * 3))


@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_border_marks_object_pixels_near_another_label(h, w, width, seed):
    """_border by its definition: an object pixel with a different label within `width` px (Chebyshev)
    inside the frame."""
    mask = np.random.default_rng(seed).integers(0, 3, size=(h, w))
    expected = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            near = mask[max(0, y - width) : y + width + 1, max(0, x - width) : x + width + 1]
            expected[y, x] = mask[y, x] != 0 and (near != mask[y, x]).any()
    assert np.array_equal(_border(mask, width), expected)
