"""Image-level labels: from masks, thresholding, and Case 1-3 corruption."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from imgpix import labels as lb


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


@given(st.integers(1, 3), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_from_masks_matches_set_of_values(b, n, seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, n + 1, (b, 3, 4), generator=gen)
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


# ------------------------------------------------------------ threshold
def test_threshold_is_greater_or_equal():
    scores = torch.tensor([[0.0, 0.5, 0.49999, 0.7, 1.0]])
    assert torch.equal(lb.threshold(scores, 0.5), torch.tensor([[False, True, False, True, True]]))
    assert lb.threshold(scores, 0.0).all()
    assert torch.equal(lb.threshold(scores, 1.0), torch.tensor([[False, False, False, False, True]]))


@pytest.mark.parametrize("tau", [-0.01, 1.01, float("nan"), 2.0])
def test_threshold_tau_outside_unit_interval_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        lb.threshold(torch.tensor([0.5]), tau)


# ------------------------------------------------------------ corrupt
@st.composite
def label_matrix(draw, max_b=4, max_n=20):
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=b, max_size=b))
    return torch.tensor(rows, dtype=torch.bool)


@given(label_matrix(), st.integers(0, 25), st.one_of(st.none(), st.integers(1, 25)), st.integers(0, 2**31 - 1))
def test_corrupt_counts_and_subsets(labels, m, k, seed):
    original = labels.clone()
    out = lb.corrupt(labels, m=m, k=k, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(labels, original), "input mutated"
    assert out.dtype == torch.bool and out.shape == labels.shape
    N = labels.shape[1]
    for row in range(labels.shape[0]):
        true = labels[row]
        n = int(true.sum())
        kept = out[row] & true
        added = out[row] & ~true
        assert int(kept.sum()) == (n if k is None else min(k, n))
        assert int(added.sum()) == min(m, N - n)


@given(label_matrix(), st.integers(0, 5), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_corrupt_is_deterministic_for_a_seed(labels, m, k, seed):
    a = lb.corrupt(labels, m=m, k=k, generator=torch.Generator().manual_seed(seed))
    b = lb.corrupt(labels, m=m, k=k, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


def test_corrupt_different_seeds_eventually_differ():
    labels = torch.zeros(2, 20, dtype=torch.bool)
    labels[:, :10] = True
    first = lb.corrupt(labels, m=3, k=4, generator=torch.Generator().manual_seed(0))
    assert any(
        not torch.equal(first, lb.corrupt(labels, m=3, k=4, generator=torch.Generator().manual_seed(s)))
        for s in range(1, 20)
    )


def test_corrupt_defaults_are_identity():
    labels = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.equal(lb.corrupt(labels), labels)


def test_corrupt_does_not_mutate_or_alias_input():
    labels = torch.tensor([[True, False, True, True, False]])
    original = labels.clone()
    out = lb.corrupt(labels, m=2, k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, original)
    out[:] = False
    assert torch.equal(labels, original)
    float_labels = labels.float()
    lb.corrupt(float_labels, m=1, k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(float_labels, original.float())


@given(label_matrix(max_n=12), st.integers(0, 12), st.integers(1, 4), st.integers(0, 2**31 - 1), st.data())
def test_protected_classes_are_kept_and_count_toward_k(labels, m, k, seed, data):
    N = labels.shape[1]
    protected = data.draw(st.lists(st.integers(0, N - 1), unique=True, max_size=3))
    out = lb.corrupt(labels, m=m, k=k, generator=torch.Generator().manual_seed(seed), protected=protected)
    for row in range(labels.shape[0]):
        true = labels[row]
        n = int(true.sum())
        present_protected = [c for c in protected if true[c]]
        for c in present_protected:
            assert out[row, c], "protected class dropped"
        kept = int((out[row] & true).sum())
        assert kept == max(min(k, n), len(present_protected))
        assert int((out[row] & ~true).sum()) == min(m, N - n)


def test_protected_hand_example():
    labels = torch.tensor([[True, True, True, False]])
    for seed in range(10):
        out = lb.corrupt(labels, k=1, generator=torch.Generator().manual_seed(seed), protected=[0])
        assert torch.equal(out, torch.tensor([[True, False, False, False]]))
        out = lb.corrupt(labels, k=2, generator=torch.Generator().manual_seed(seed), protected=[0])
        assert out[0, 0] and int(out.sum()) == 2 and not out[0, 3]
        # more protected classes present than k: all of them are still kept
        out = lb.corrupt(labels, k=1, generator=torch.Generator().manual_seed(seed), protected=[0, 2])
        assert torch.equal(out, torch.tensor([[True, False, True, False]]))
        # a protected class that is absent is not forced on
        out = lb.corrupt(labels, k=1, generator=torch.Generator().manual_seed(seed), protected=[3])
        assert not out[0, 3] and int(out.sum()) == 1


@pytest.mark.parametrize("kwargs, match", [({"m": -1}, "m must"), ({"k": 0}, "k must"), ({"k": -2}, "k must")])
def test_corrupt_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lb.corrupt(torch.ones(2, 4, dtype=torch.bool), **kwargs)


def test_corrupt_bad_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        lb.corrupt(torch.ones(4, dtype=torch.bool), m=1)
