"""Image-level labels: from masks, thresholding, Case 1-3 corruption (protected classes, weighted
outliers), and LabelSource (parse, names, resolve)."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import class_subsets, label_sets, outlier_weights

from imgpix import labels as lb
from imgpix.labels import DEFAULT_TAU, LabelClampWarning, LabelSource

SEEDS = st.integers(0, 2**31 - 1)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------ from_masks
def test_from_masks_hand_made():
    masks = torch.tensor(
        [
            [[0, 0, 2], [255, 2, 2]],
            [[255, 255, 255], [255, 255, 255]],
            [[1, 3, 3], [3, 3, 1]],
        ],
        dtype=torch.uint8,
    )
    out = lb.from_masks(masks, 4)
    expected = torch.tensor(
        [[True, False, True, False], [False, False, False, False], [False, True, False, True]]
    )
    assert out.dtype == torch.bool and out.shape == (3, 4)
    assert torch.equal(out, expected)


def test_from_masks_two_d_input_and_custom_ignore():
    mask = torch.tensor([[0, 5], [5, 2]])
    assert torch.equal(lb.from_masks(mask, 3, ignore_index=5), torch.tensor([[True, False, True]]))
    assert torch.equal(lb.from_masks(mask, 6), torch.tensor([[True, False, True, False, False, True]]))


@given(st.integers(1, 3), st.integers(1, 12), SEEDS)
def test_from_masks_matches_set_of_values(b, n, seed):
    masks = torch.randint(0, n + 1, (b, 3, 4), generator=seeded(seed))
    masks[masks == n] = 255
    out = lb.from_masks(masks, n)
    for row in range(b):
        present = {v for v in masks[row].flatten().tolist() if v != 255}
        assert set(out[row].nonzero().flatten().tolist()) == present


@pytest.mark.parametrize("bad", [4, 7, -1, 254])
def test_from_masks_out_of_range_raises(bad):
    mask = torch.zeros(1, 2, 2, dtype=torch.long)
    mask[0, 1, 1] = bad
    with pytest.raises(ValueError, match="mask values"):
        lb.from_masks(mask, 4)


def test_from_masks_float_and_bad_shape_raise():
    with pytest.raises(ValueError, match="integer"):
        lb.from_masks(torch.zeros(1, 2, 2), 4)
    with pytest.raises(ValueError, match="shape"):
        lb.from_masks(torch.zeros(1, 1, 2, 2, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="shape"):
        lb.from_masks(torch.zeros(4, dtype=torch.long), 4)


def test_from_masks_of_no_image_is_empty():
    assert lb.from_masks(torch.zeros(0, 3, 2, dtype=torch.long), 4).shape == (0, 4)


# ------------------------------------------------------------ tau and threshold
@pytest.mark.parametrize("tau", [0, 0.0, DEFAULT_TAU, 1, 1.0])
def test_check_tau_accepts_the_unit_interval(tau):
    assert lb.check_tau(tau) == float(tau) and isinstance(lb.check_tau(tau), float)


@pytest.mark.parametrize("tau", [-0.01, 1.0001, float("nan"), float("inf"), True, "0.5", None])
def test_check_tau_rejects_everything_else(tau):
    with pytest.raises(ValueError, match="tau"):
        lb.check_tau(tau)


def test_threshold_is_greater_or_equal():
    scores = torch.tensor([[0.0, 0.5, 0.49999, 0.7, 1.0]])
    assert torch.equal(lb.threshold(scores, 0.5), torch.tensor([[False, True, False, True, True]]))
    assert lb.threshold(scores, 0.0).all()
    assert torch.equal(lb.threshold(scores, 1.0), torch.tensor([[False, False, False, False, True]]))


@pytest.mark.parametrize("tau", [-0.01, 1.01, float("nan"), 2.0])
def test_threshold_tau_outside_unit_interval_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        lb.threshold(torch.tensor([0.5]), tau)


# ------------------------------------------------------------ corrupt: the rules
@given(label_sets(max_n=12), st.integers(0, 14), st.one_of(st.none(), st.integers(1, 12)), SEEDS, st.data())
def test_corrupt_rules(labels, m, k, seed, data):
    """Per row, not strict: protected classes as they were; min(k, n) of the n unprotected true
    classes kept; min(m, a) outliers among the a absent unprotected classes; a zero-weight class
    only once every class of positive weight is drawn. ``clamped`` marks the rows where k > n or
    m > a; strict refuses exactly when one is marked; m or k above U = N - |protected| always."""
    batch, n = labels.shape
    protected = data.draw(class_subsets(n))
    weights = data.draw(outlier_weights(batch, n))
    original = labels.clone()
    if m > n - len(protected) or (k or 0) > n - len(protected):
        for strict in (True, False):
            with pytest.raises(ValueError, match="no image"):
                lb.corrupt(labels, m, k, seeded(seed), protected, weights, strict=strict)
        return
    out = lb.corrupt(labels, m, k, seeded(seed), protected, weights, strict=False)
    rows = lb.clamped(labels, m, k, protected)
    if rows.any():
        with pytest.raises(ValueError, match=rf"image {int(rows.nonzero()[0])} "):
            lb.corrupt(labels, m, k, seeded(seed), protected, weights)
    else:
        assert torch.equal(lb.corrupt(labels, m, k, seeded(seed), protected, weights), out)
    assert torch.equal(labels, original), "input mutated"
    assert out.dtype == torch.bool and out.shape == labels.shape
    is_protected = torch.zeros(n, dtype=torch.bool)
    is_protected[protected] = True
    w = torch.ones(batch, n, dtype=torch.float64) if weights is None else weights.expand(batch, n)
    for row in range(batch):
        true, got = labels[row], out[row]
        assert torch.equal(got & is_protected, true & is_protected), "protected: kept when present, never added"
        objects = int((true & ~is_protected).sum())
        assert int((got & true & ~is_protected).sum()) == (objects if k is None else min(k, objects))
        candidates = ~true & ~is_protected
        added = got & ~true
        assert int(added.sum()) == min(m, int(candidates.sum()))
        assert bool(rows[row]) == ((k or 0) > objects or m > int(candidates.sum()))
        positive = candidates & (w[row] > 0)
        if int(added.sum()) <= int(positive.sum()):
            assert not (added & ~positive).any(), "a zero-weight class drawn before a positive one"
        else:
            assert not (positive & ~added).any()


@given(label_sets(max_n=12), st.integers(0, 5), st.integers(1, 5), SEEDS, st.data())
def test_corrupt_is_deterministic_for_a_seed(labels, m, k, seed, data):
    weights = data.draw(outlier_weights(*labels.shape))
    m, k = min(m, labels.shape[1]), min(k, labels.shape[1])
    a = lb.corrupt(labels, m, k, seeded(seed), outlier_weights=weights, strict=False)
    b = lb.corrupt(labels, m, k, seeded(seed), outlier_weights=weights, strict=False)
    assert torch.equal(a, b)


@given(label_sets(max_n=12), st.integers(0, 12), st.integers(0, 12), st.integers(1, 12), st.integers(1, 12),
       SEEDS, st.data())
def test_one_seed_nests_the_cases(labels, m1, m2, k1, k2, seed, data):
    """With one seed, Case 3 is Case 2's kept classes plus Case 1's outliers: the kept classes do
    not depend on m, the outliers not on k, and a larger m or k extends the same draw."""
    protected = data.draw(class_subsets(labels.shape[1]))
    free = labels.shape[1] - len(protected)
    (m1, m2), (k1, k2) = sorted((min(m1, free), min(m2, free))), sorted((min(k1, free), min(k2, free)))
    assume(k1 >= 1)
    weights = data.draw(outlier_weights(*labels.shape))

    def run(m, k):
        return lb.corrupt(labels, m, k, seeded(seed), protected, weights, strict=False)

    case2 = run(0, k1)
    assert torch.equal(run(m2, k1) & labels, case2)
    assert torch.equal(run(m2, k1) & ~labels, run(m2, None) & ~labels)
    assert torch.equal(run(m2, k1), case2 | (run(m2, None) & ~labels))
    assert not (run(m1, k1) & ~run(m2, k1)).any(), "more outliers must extend the same draw"
    assert not (run(m1, k1) & ~run(m1, k2)).any(), "a larger k must extend the same kept classes"


def test_corrupt_different_seeds_eventually_differ():
    labels = torch.zeros(2, 20, dtype=torch.bool)
    labels[:, :10] = True
    first = lb.corrupt(labels, m=3, k=4, generator=seeded(0))
    assert any(not torch.equal(first, lb.corrupt(labels, m=3, k=4, generator=seeded(s))) for s in range(1, 20))


def test_corrupt_defaults_are_identity():
    labels = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.equal(lb.corrupt(labels), labels)


def test_corrupt_does_not_mutate_or_alias_input():
    labels = torch.tensor([[True, False, True, True, False]])
    original = labels.clone()
    out = lb.corrupt(labels, m=2, k=1, generator=seeded(0))
    assert torch.equal(labels, original)
    out[:] = False
    assert torch.equal(labels, original)
    float_labels = labels.float()
    lb.corrupt(float_labels, m=1, k=1, generator=seeded(0))
    assert torch.equal(float_labels, original.float())


# ------------------------------------------------------------ corrupt: hand examples
def test_protected_classes_are_outside_the_game():
    labels = torch.tensor([[True, True, True, False]])
    seen = set()
    for seed in range(10):
        out = lb.corrupt(labels, k=1, generator=seeded(seed), protected=[0])
        assert out[0, 0] and not out[0, 3] and int(out.sum()) == 2  # the background plus k=1 object
        seen.add(int(out[0, 1:3].nonzero()))
        # k counts unprotected classes only: two protected ones do not use up k=1
        out = lb.corrupt(labels, k=1, generator=seeded(seed), protected=[0, 2])
        assert torch.equal(out, torch.tensor([[True, True, True, False]]))
        # the only absent class is protected: no outlier can be added (a clamp, refused when strict)
        out = lb.corrupt(labels, m=1, generator=seeded(seed), protected=[3], strict=False)
        assert torch.equal(out, labels)
        with pytest.raises(ValueError, match=r"m=1 exceeds the 0 absent unprotected classes of image 0"):
            lb.corrupt(labels, m=1, generator=seeded(seed), protected=[3])
        # an absent protected class stays off, and m counts the others
        out = lb.corrupt(torch.tensor([[False, True, False, False]]), m=1, generator=seeded(seed), protected=[0])
        assert not out[0, 0] and out[0, 1] and int(out.sum()) == 2
    assert seen == {0, 1}, "both objects must be kept by some seed"


def test_weighted_outliers_hand_examples():
    labels = torch.tensor([[True, False, False, False, False]] * 2)
    only_three = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0])
    per_image = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0]])
    for seed in range(10):
        out = lb.corrupt(labels, m=1, generator=seeded(seed), outlier_weights=only_three)
        assert torch.equal(out[:, 1:], torch.tensor([[False, False, True, False]] * 2))
        out = lb.corrupt(labels, m=2, generator=seeded(seed), outlier_weights=only_three)
        assert out[:, 3].all() and (out.sum(1) == 3).all()  # class 3 first, then one of the zero-weight ones
        out = lb.corrupt(labels, m=1, generator=seeded(seed), outlier_weights=per_image)
        assert out[0, 1] and out[1, 4] and (out.sum(1) == 2).all()


def test_weighted_outliers_follow_the_weights():
    """m=1 among classes 1..4 of weights 1..4: class c drawn with probability c/10 (2000 draws, 4 sigma)."""
    draws = 2000
    labels = torch.zeros(draws, 5, dtype=torch.bool)
    labels[:, 0] = True
    out = lb.corrupt(labels, m=1, generator=seeded(0), outlier_weights=torch.arange(5.0))
    assert out[:, 0].all() and (out.sum(1) == 2).all()
    frequency = out[:, 1:].double().mean(0)
    expected = torch.arange(1.0, 5.0, dtype=torch.float64) / 10
    assert torch.all((frequency - expected).abs() < 4 * (expected * (1 - expected) / draws).sqrt())


@pytest.mark.parametrize("weights", [torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, float("nan"), 1.0]),
                                     torch.tensor([1.0, float("inf"), 1.0])])
def test_bad_outlier_weights_raise(weights):
    with pytest.raises(ValueError, match="outlier_weights"):
        lb.corrupt(torch.tensor([[True, False, False]]), m=1, generator=seeded(0), outlier_weights=weights)


@pytest.mark.parametrize("kwargs, match", [({"m": -1}, "m must"), ({"k": 0}, "k must"), ({"k": -2}, "k must")])
def test_corrupt_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lb.corrupt(torch.ones(2, 4, dtype=torch.bool), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"protected": [3]}, "protected"), ({"protected": [-1]}, "protected"),
    ({"outlier_weights": torch.ones(4)}, "outlier_weights"), ({"outlier_weights": torch.ones(2, 3)}, "outlier_weights"),
])
def test_corrupt_rejects_classes_and_weights_of_another_size(kwargs, match):
    """Protected ids outside [0, N) (-1 would silently protect class N-1) and weights that are
    neither [N] nor [B, N] are a ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        lb.corrupt(torch.tensor([[True, False, False]]), m=1, generator=seeded(0), **kwargs)


def test_corrupt_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        lb.corrupt(torch.ones(4, dtype=torch.bool), m=1)


# ------------------------------------------------------------ corrupt: bounds, strict or clamped
def test_strict_corrupt_names_k_or_m_the_image_and_the_bound():
    labels = torch.tensor([[True, True, True, False, False, False], [True, True, False, False, False, False]])
    with pytest.raises(ValueError, match=r"k=2 exceeds the n=1 unprotected true classes of image 1 \(bound k <= n\)"):
        lb.corrupt(labels, k=2, generator=seeded(0), protected=[0])
    with pytest.raises(ValueError, match=r"m=4 exceeds the 3 absent unprotected classes of image 0 "
                                         r"\(bound m <= U - n = 5 - 2\)"):
        lb.corrupt(labels, m=4, generator=seeded(0), protected=[0])
    assert lb.corrupt(labels, m=3, k=1, generator=seeded(0), protected=[0]).sum(1).tolist() == [5, 5]
    assert lb.clamped(labels, m=3, k=1, protected=[0]).tolist() == [False, False]
    assert lb.clamped(labels, m=4, k=2, protected=[0]).tolist() == [True, True]
    assert lb.clamped(labels, k=2, protected=[0]).tolist() == [False, True]
    kept = lb.corrupt(labels, k=2, generator=seeded(0), protected=[0], strict=False)
    assert torch.equal(kept, labels), "k > n keeps the n true classes"


def test_k_equal_to_n_is_no_clamp():
    """k = n keeps every true class as asked: Case 2 on an image with one object and k = 1."""
    labels = torch.tensor([[True, True, False, False]])
    assert torch.equal(lb.corrupt(labels, k=1, generator=seeded(0), protected=[0]), labels)
    assert not lb.clamped(labels, k=1, protected=[0]).any()


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("kwargs, match", [
    ({"m": 30}, r"m=30 outliers exceed the U=20 classes that can be outliers \(N=21 classes, 1 protected\)"),
    ({"m": 21}, "U=20"), ({"k": 21}, r"k=21 exceeds the U=20 unprotected classes"),
])
def test_m_or_k_that_fits_no_image_always_raises(kwargs, match, strict):
    labels = torch.zeros(2, 21, dtype=torch.bool)
    labels[:, :2] = True
    with pytest.raises(ValueError, match=match):
        lb.corrupt(labels, generator=seeded(0), protected=[0], strict=strict, **kwargs)


# ------------------------------------------------------------ LabelSource
@pytest.mark.parametrize("text, expected, name", [
    ("none", LabelSource("none"), "unfused"),
    ("oracle", LabelSource("oracle"), "oracle"),
    ("labeler", LabelSource("labeler"), f"labeler@{DEFAULT_TAU:g}"),
    ("labeler@0.3", LabelSource("labeler", tau=0.3), "labeler@0.3"),
    ("labeler@1", LabelSource("labeler", tau=1.0), "labeler@1"),
    ("noisy:m=3,k=1", LabelSource("noisy", m=3, k=1), "noisy(m=3,k=1)"),
    ("noisy:m=2,k=all", LabelSource("noisy", m=2, k=None), "noisy(m=2,k=all)"),
    (" noisy:m=0,k=12 ", LabelSource("noisy", m=0, k=12), "noisy(m=0,k=12)"),
])
def test_parse_and_name(text, expected, name):
    source = LabelSource.parse(text)
    assert source == expected and source.name == name
    assert source.fused == (text != "none")


def test_parse_keeps_defaults_and_the_spec_wins():
    assert LabelSource.parse("labeler", tau=0.4, protected=[0]) == LabelSource("labeler", tau=0.4, protected=(0,))
    assert LabelSource.parse("labeler@0.3", tau=0.4).tau == 0.3
    noisy = LabelSource.parse("noisy:m=1,k=all", seed=7, protected=(0,), tau=0.9)
    assert (noisy.seed, noisy.protected, noisy.m, noisy.k) == (7, (0,), 1, None)


@pytest.mark.parametrize("text, match", [
    ("gt", "label source"), ("Oracle", "label source"), ("", "label source"), ("labeler@", "label source"),
    ("noisy:m=1", "label source"), ("noisy:k=1,m=1", "label source"), ("noisy:m=-1,k=1", "label source"),
    ("labeler@1.5", "tau"), ("noisy:m=1,k=0", "k must"),
])
def test_parse_rejects_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        LabelSource.parse(text)


@pytest.mark.parametrize("text", [3, None, 0.5, b"oracle", ["oracle"]])
def test_parse_refuses_what_is_not_a_string(text):
    with pytest.raises(ValueError, match=r"a label source is a string: none, oracle, labeler\[@tau\] or "
                                         r"noisy:m=M,k=K \(e.g. 'noisy:m=3,k=1'\)"):
        LabelSource.parse(text)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "gt"}, "label source"), ({"tau": 1.5}, "tau"), ({"tau": float("nan")}, "tau"),
    ({"kind": "noisy", "m": -1}, "m must"), ({"kind": "noisy", "k": 0}, "k must"),
])
def test_bad_sources_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelSource(**kwargs)


def test_tag_names_and_protected_tuple():
    source = LabelSource("noisy", m=1, k=1, seed=3, protected=[0, 2], tag="near")
    assert source.name == "noisy(m=1,k=1)[near]" and source.protected == (0, 2)
    hash(source)  # frozen, usable as a key


def test_generator_is_a_fresh_seeded_stream_for_noisy_only():
    for kind in ("none", "oracle", "labeler"):
        assert LabelSource(kind, seed=3).generator() is None
    source = LabelSource("noisy", seed=3)
    a, b = source.generator(), source.generator()
    assert a is not b and torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    assert not torch.equal(torch.rand(5, generator=source.generator()),
                           torch.rand(5, generator=LabelSource("noisy", seed=4).generator()))


# ------------------------------------------------------------ LabelSource.resolve
N = 5
MASKS = torch.tensor([[[0, 0, 2], [255, 2, 2]], [[1, 3, 3], [3, 3, 1]]])
PRESENT = torch.tensor([[True, False, True, False, False], [False, True, False, True, False]])
SCORES = torch.tensor([[0.9, 0.1, 0.5, 0.49, 0.0], [0.2, 0.8, 0.3, 0.5, 1.0]])


def test_resolve_none_and_oracle():
    assert LabelSource("none").resolve(N, MASKS, SCORES) is None
    assert LabelSource("none").resolve(N) is None
    assert torch.equal(LabelSource("oracle").resolve(N, MASKS), PRESENT)
    assert torch.equal(LabelSource("oracle").resolve(N, presence=PRESENT), PRESENT)  # no mask needed


def test_resolve_labeler_thresholds_and_forces_protected_on():
    scores = SCORES.clone()
    labels = LabelSource("labeler", tau=0.5, protected=(0,)).resolve(N, scores=scores)
    expected = torch.tensor([[True, False, True, False, False], [True, True, False, True, True]])
    assert torch.equal(labels, expected)
    assert torch.equal(scores, SCORES), "scores mutated"
    assert torch.equal(LabelSource("labeler", tau=0.5).resolve(N, scores=SCORES), SCORES >= 0.5)


@pytest.mark.parametrize("weights", [None, torch.tensor([0.0, 1.0, 0.0, 0.0, 3.0])])
def test_resolve_noisy_is_corrupt_of_the_oracle(weights):
    source = LabelSource("noisy", m=2, k=1, seed=11, protected=(0,))
    labels = source.resolve(N, MASKS, generator=source.generator(), outlier_weights=weights)
    expected = lb.corrupt(PRESENT, 2, 1, seeded(11), (0,), weights)
    assert torch.equal(labels, expected)
    again = source.resolve(N, presence=PRESENT, generator=source.generator(), outlier_weights=weights)
    assert torch.equal(again, expected)


@pytest.mark.parametrize("source, kwargs, match", [
    (LabelSource("labeler"), {"masks": MASKS}, "labeler scores"),
    (LabelSource("oracle"), {"scores": SCORES}, "ground-truth masks"),
    (LabelSource("noisy", m=1), {"scores": SCORES}, "ground-truth masks"),
])
def test_resolve_without_what_the_source_needs_raises(source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        source.resolve(N, **kwargs)


# ------------------------------------------------------------ LabelSource: m or k that do not fit
SCENE = torch.tensor([[[0, 1, 2], [3, 0, 0]], [[0, 0, 1], [0, 0, 0]]])  # n = 3 and 1 objects besides background 0


def test_source_refuses_m_or_k_that_fits_no_image():
    """noisy:m=30 with N=21 used to give every image its 19 or 20 absent classes."""
    for strict in (False, True):
        source = LabelSource.parse("noisy:m=30,k=1", protected=(0,), strict=strict)
        with pytest.raises(ValueError, match="m=30 outliers exceed the U=20"):
            source.resolve(21, SCENE, generator=source.generator())


def test_non_strict_source_clamps_warns_and_counts():
    """noisy:m=0,k=5 on images of n = 3 and 1 objects: each keeps its objects, a LabelClampWarning says
    so and ``clamped`` says which images; strict=True refuses naming k, the image and the bound."""
    source = LabelSource.parse("noisy:m=0,k=5", protected=(0,))
    with pytest.warns(LabelClampWarning, match=r"noisy\(m=0,k=5\): clamped on the images where k > n"):
        labels = source.resolve(21, SCENE, generator=source.generator())
    assert torch.equal(labels, lb.from_masks(SCENE, 21))
    assert source.clamped(21, SCENE).tolist() == [True, True]
    assert source.clamped(21, presence=lb.from_masks(SCENE, 21)).tolist() == [True, True]
    strict = LabelSource.parse("noisy:m=0,k=2", protected=(0,), strict=True)
    with pytest.raises(ValueError, match=r"k=2 exceeds the n=1 unprotected true classes of image 1 \(bound k <= n\)"):
        strict.resolve(21, SCENE, generator=strict.generator())
    assert not strict.clamped(21, SCENE).any(), "a strict source never clamps: it refuses"
    mixed = LabelSource.parse("noisy:m=2,k=2", protected=(0,))
    with pytest.warns(LabelClampWarning):
        mixed.resolve(21, SCENE, generator=mixed.generator())
    assert mixed.clamped(21, SCENE).tolist() == [False, True]


def test_source_that_fits_every_image_neither_warns_nor_clamps():
    """The experiment's Case 2 (k=1) on an image with one object keeps it: k = n is no clamp."""
    for text in ("noisy:m=3,k=1", "noisy:m=0,k=1", "noisy:m=17,k=all", "oracle", "none"):
        source = LabelSource.parse(text, protected=(0,))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            source.resolve(21, SCENE, generator=source.generator())
        assert not source.clamped(21, SCENE).any()


def test_resolve_without_a_generator_follows_the_sources_seed():
    masks = torch.tensor([[[0, 1], [2, 3]], [[0, 4], [4, 5]]])
    source = LabelSource.parse("noisy:m=3,k=1", seed=7, protected=(0,))
    first, again = source.resolve(21, masks), source.resolve(21, masks)
    assert torch.equal(first, again)  # deterministic: the seed is the stream
    assert torch.equal(first, source.resolve(21, masks, generator=source.generator()))
    others = [LabelSource.parse("noisy:m=3,k=1", seed=s, protected=(0,)).resolve(21, masks) for s in range(8)]
    assert any(not torch.equal(first, other) for other in others)  # the seed matters
