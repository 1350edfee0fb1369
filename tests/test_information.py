"""Measured nats (imgpix.information): the exact identity, the uniform limit (Eqs. 4-14), invariants,
numerics, input checks, and the real untrained segmentation net."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import MODERATE_SCALES, cases, filled

from imgpix import fuse_log
from imgpix import theory as th
from imgpix.data import IGNORE_INDEX
from imgpix.information import Audit, audit, removed_nats
from imgpix.labels import corrupt, from_masks
from imgpix.models import build_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def _like_probabilities(z: torch.Tensor) -> bool:
    """The rule that refuses input as probabilities: values in [0, 1], each pixel summing to 1."""
    return bool(((z >= 0) & (z <= 1)).all()) and bool(((z.double().sum(1) - 1).abs() <= 1e-3).all())


def logit_cases(**kwargs):
    """:func:`cases` without the logits that look like probabilities (e.g. one-hot ties of two classes)."""
    return cases(**kwargs).filter(lambda case: not _like_probabilities(case.logits))


@st.composite
def uniform_images(draw):
    """Uniform logits, a mask with exactly n of N classes (some pixels ignored), and its N, n."""
    N = draw(st.integers(2, 25))
    n = draw(st.integers(1, N))
    h, w = draw(st.integers(2, 4)), draw(st.integers(max(2, -(-(n + 1) // 2)), 14))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randperm(N, generator=gen)[:n]
    flat = classes[torch.randint(0, n, (h * w,), generator=gen)]
    flat[:n] = classes  # every class present at least once
    flat[n:][torch.rand(h * w - n, generator=gen) < 0.2] = 255
    logits = torch.full((1, N, h, w), draw(st.sampled_from([0.0, -3.0, 1e4])), dtype=torch.float64)
    return logits, flat.view(1, h, w), N, n


# ------------------------------------------------------------------ the exact identity
@given(logit_cases(dtype=torch.float64))
def test_identity_against_float64_ce_difference(case):
    """At every kept class c: log P'_c - log P_c = CE(P, c) - CE(P', c) = removed_nats."""
    z, labels = case.logits, case.labels
    diff = fuse_log(z, labels) - torch.log_softmax(z, dim=1)
    keep = filled(labels, z.shape[0])[:, :, None, None].expand_as(z) > 0
    expected = removed_nats(z, labels).unsqueeze(1).expand_as(z)
    torch.testing.assert_close(diff[keep], expected[keep], atol=1e-6, rtol=0)


@given(logit_cases(dtype=torch.float64, soft=True))
def test_soft_labels_count_as_presence(case):
    assert torch.equal(removed_nats(case.logits, case.labels), removed_nats(case.logits, case.labels > 0))


@given(logit_cases(dtype=torch.float64))
def test_audit_ce_difference_is_removed(case):
    z, labels = case.logits, case.labels
    target = torch.randint(0, z.shape[1], (z.shape[0], *z.shape[2:]), generator=torch.Generator().manual_seed(0))
    a = audit(z, labels, target)
    has_kept = ~torch.isnan(a["removed"])
    torch.testing.assert_close((a["ce_unfused"] - a["ce_fused"])[has_kept], a["removed"][has_kept], atol=1e-6, rtol=0)
    assert torch.equal(a["size"], a["kept"] + a["outliers"])


# ------------------------------------------------------------------ the uniform limit: Eqs. 4-14
def close(value):
    return pytest.approx(value, abs=1e-9)


@given(uniform_images(), st.data())
def test_uniform_prediction_gives_the_theory(image, data):
    logits, target, N, n = image
    truth = from_masks(target, N)
    m = data.draw(st.integers(0, N - n), label="m")
    k = data.draw(st.integers(1, n), label="k")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="noise seed"))
    oracle = audit(logits, truth, target)
    case1 = audit(logits, corrupt(truth, m, None, gen), target)
    case2 = audit(logits, corrupt(truth, 0, k, gen), target)
    case3 = audit(logits, corrupt(truth, m, k, gen), target)
    assert oracle["ce_unfused"].item() == close(th.self_information(N))  # Eq. 4
    assert oracle["ce_fused"].item() == close(th.valid_information(n))  # Eq. 5
    assert oracle["removed"].item() == close(th.removed_information(N, n))  # Eq. 6
    assert (case1["size"].item(), case1["lost_fraction"].item()) == (n + m, 0.0)
    assert case1["ce_fused"].item() == close(math.log(n + m))  # Eq. 9
    assert case1["removed"].item() == close(math.log(N / (n + m)))  # Eq. 10
    assert case2["ce_fused"].item() == close(math.log(k))  # Eq. 11
    assert case3["ce_fused"].item() == close(math.log(m + k))  # Eq. 13
    if m >= 1:
        assert case1["removed"].item() == close(th.case1_removed(N, n, m))
        assert case1["ce_fused"].item() == close(th.case1_learned(n, m))
        assert (case3["ce_fused"] - case2["ce_fused"]).item() == close(th.case3_outlier(m, k))  # Eq. 14
    if k < n:
        assert case2["ce_fused"].item() == close(th.case2_learned(k))
        assert (oracle["ce_fused"] - case2["ce_fused"]).item() == close(th.case2_lost(n, k))  # Eq. 12
        assert 0 < case2["lost_fraction"].item() < 1


# ------------------------------------------------------------------ invariants
@given(logit_cases())
def test_removed_is_nonnegative_and_finite(case):
    removed = removed_nats(case.logits, case.labels)
    assert removed.shape == (case.shape[0], *case.shape[2:])
    assert bool(torch.isfinite(removed).all()) and bool((removed >= 0).all())


@given(logit_cases())
def test_nothing_removed_when_every_class_is_kept(case):
    z = case.logits
    assert bool((removed_nats(z, torch.ones(z.shape[1])) == 0).all())
    assert bool((removed_nats(z, torch.zeros(z.shape[0], z.shape[1])) == 0).all())  # empty row: unfused


@given(logit_cases(dtype=torch.float64), st.data())
def test_adding_a_class_never_increases_removed(case, data):
    labels = filled(case.labels, case.shape[0]).clone()
    row, cls = data.draw(st.integers(0, labels.shape[0] - 1)), data.draw(st.integers(0, labels.shape[1] - 1))
    wider = labels.clone()
    wider[row, cls] = 1.0
    assert bool((removed_nats(case.logits, wider) <= removed_nats(case.logits, labels) + 1e-9).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(case=logit_cases(scales=MODERATE_SCALES))
def test_half_precision_computed_in_float32(dtype, case):
    z = case.logits.to(dtype)
    removed = removed_nats(z, case.labels)
    assert removed.dtype == torch.float32
    torch.testing.assert_close(removed.double(), removed_nats(z.double(), case.labels), atol=1e-5, rtol=1e-5)


def test_extreme_logits_stay_finite_and_exact():
    """Logits ±1e4: the maxima are subtracted before the logs, so the small differences stay exact."""
    z = torch.tensor([1e4, -1e4, 0.0, 1e4]).view(1, 4, 1, 1)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        z_ = z.to(dtype)
        top = z_[0, 0].item()  # bfloat16 rounds 1e4 to 9984
        assert removed_nats(z_, torch.tensor([0, 1, 1, 1])).item() == pytest.approx(math.log(2), abs=1e-6)
        assert removed_nats(z_, torch.tensor([0, 1, 1, 0])).item() == pytest.approx(top + math.log(2), rel=1e-6)
        assert removed_nats(z_, torch.ones(4)).item() == 0.0


# ------------------------------------------------------------------ audit bookkeeping
def test_audit_counts_means_and_empty_rows():
    z = torch.zeros(3, 5, 2, 3)
    target = torch.tensor([[[0, 1, 1], [2, 255, 2]], [[3, 3, 3], [3, 3, 4]], [[255] * 3] * 2])
    labels = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    a = audit(z, labels, target)
    assert a["n"].tolist() == [3, 2, 0] and a["size"].tolist() == [3, 5, 1]
    assert a["kept"].tolist() == [2, 2, 0] and a["outliers"].tolist() == [1, 3, 1]
    assert a["pixels"].tolist() == [5, 6, 0]
    assert a["lost_fraction"][:2].tolist() == pytest.approx([2 / 5, 0.0])
    assert a["removed"][:2].tolist() == pytest.approx([math.log(5 / 3), 0.0])
    assert a["entropy_fused"][:2].tolist() == pytest.approx([math.log(3), math.log(5)])
    assert a["accuracy_fused"][0].item() == pytest.approx(1 / 5)  # ties go to class 0
    assert all(torch.isnan(a[key][2]) for key in ("ce_fused", "removed", "lost_fraction", "entropy_unfused"))


def test_audit_no_kept_pixel_gives_nan_means():
    a = audit(torch.randn(1, 4, 2, 2), torch.tensor([0, 0, 1, 0]), torch.zeros(1, 2, 2, dtype=torch.long))
    assert torch.isnan(a["ce_fused"]).all() and torch.isnan(a["removed"]).all()
    assert a["lost_fraction"].item() == 1.0 and a["accuracy_fused"].item() == 0.0


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("logits, labels, match", [
    (torch.zeros(4, 2, 2), torch.ones(4), "logits must have shape"),
    (torch.zeros(1, 4, 2, 2), torch.ones(5), "label length"),
    (torch.zeros(2, 4, 2, 2), torch.ones(3, 4), "label batch size"),
    (torch.zeros(1, 4, 2, 2), torch.ones(1, 2, 4), "labels must have shape"),
    (torch.zeros(1, 4, 2, 2), torch.tensor([0.0, 2.0, 0.0, 1.0]), r"\[0, 1\]"),
    (torch.zeros(1, 4, 2, 2), torch.tensor([0.0, float("nan"), 0.0, 1.0]), "NaN"),
    (torch.full((1, 4, 2, 2), float("nan")), torch.ones(4), "NaN or infinite"),
    (torch.full((1, 4, 2, 2), float("inf")), torch.ones(4), "NaN or infinite"),
    (torch.zeros(1, 4, 2, 2, dtype=torch.long), torch.ones(4), "floating point"),
])
def test_bad_input_raises(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        removed_nats(logits, labels)
    with pytest.raises(ValueError, match=match):
        audit(logits, labels, torch.zeros(logits.shape[0], 2, 2, dtype=torch.long))


def test_probabilities_are_refused_and_their_log_is_not():
    """softmax(z) passed as logits used to give wrong nats: refused, naming the fix; probs.log() is logits."""
    z = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probs, labels, target = torch.softmax(z, 1), torch.tensor([1, 1, 0, 0, 1]), torch.randint(0, 5, (2, 3, 3))
    for call in (lambda x: removed_nats(x, labels), lambda x: audit(x, labels, target), lambda x: Audit(x, target)):
        with pytest.raises(ValueError, match=r"logits look like probabilities .* pass logits, e\.g\. probs\.log\(\)"):
            call(probs)
        with pytest.raises(ValueError, match="look like probabilities"):
            call(probs.float().half())
    torch.testing.assert_close(removed_nats(probs.log(), labels), removed_nats(z, labels))
    torch.testing.assert_close(audit(probs.log(), labels, target)["removed"], audit(z, labels, target)["removed"])


def test_the_probability_rule_on_constant_and_one_hot_logits():
    """Constant logits are uniform: zeros (an untrained net) and any c with N * c != 1 pass; the constant
    1/N sums to 1 per pixel and is refused, as are one-hot logits (documented in the module)."""
    for c in (0.0, 0.3, -2.0, 1.0):
        assert removed_nats(torch.full((1, 4, 2, 2), c), torch.tensor([1, 1, 0, 0])).flatten().tolist() == \
            pytest.approx([math.log(2)] * 4)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 4, (1, 2, 2)), 4).permute(0, 3, 1, 2).float()
    for z in (torch.full((1, 4, 2, 2), 0.25), one_hot):
        with pytest.raises(ValueError, match="look like probabilities"):
            removed_nats(z, torch.ones(4))
    assert removed_nats(torch.full((1, 4, 2, 2), 0.25) - 1, torch.ones(4)).shape == (1, 2, 2)  # shifted: logits


def test_a_batch_of_no_image_gives_empty_results():
    z = torch.zeros(0, 4, 3, 3)
    assert removed_nats(z, torch.zeros(0, 4)).shape == (0, 3, 3)
    a = audit(z, torch.zeros(0, 4), torch.zeros(0, 3, 3, dtype=torch.long))
    assert all(value.shape == (0,) for value in a.values())


@pytest.mark.parametrize("target, match", [
    (torch.zeros(1, 3, 2, dtype=torch.long), "target must have shape"),
    (torch.full((1, 2, 2), 7), "mask values"),
    (torch.zeros(1, 2, 2), "integer class ids"),
])
def test_bad_target_raises(target, match):
    with pytest.raises(ValueError, match=match):
        audit(torch.zeros(1, 4, 2, 2), torch.ones(4), target)


# ------------------------------------------------------------------ the real segmentation net, untrained
def test_untrained_segmenter_removes_exactly_log_N_over_L():
    """Zero-initialised score layers: uniform outputs at step 0, so removed = log(N/|L|) per image."""
    torch.manual_seed(0)
    net = build_segmenter("tiny", 21).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, 24, 24, generator=gen)
    target = torch.randint(0, 4, (6, 24, 24), generator=gen) * torch.arange(1, 7).view(6, 1, 1)  # n = 4 each
    truth = from_masks(target, 21)
    labels = torch.cat([truth[:2], corrupt(truth[2:4], 3, None, gen), corrupt(truth[4:], 9, None, gen)])
    with torch.no_grad():
        a = audit(net(images), labels, target)
    predicted = torch.tensor(th.removed_information(21, a["size"].numpy()))
    assert a["size"].tolist() == [4, 4, 7, 7, 13, 13]
    torch.testing.assert_close(a["removed"], predicted, atol=1e-6, rtol=0)
    torch.testing.assert_close(a["ce_unfused"], torch.full((6,), math.log(21), dtype=torch.float64), atol=1e-6,
                               rtol=0)


def test_one_audit_serves_many_label_vectors():
    """``Audit`` (built once per batch by the evaluator) against a direct computation from
    ``fuse_log``, label vector after label vector: no state leaks from one call to the next."""
    torch.manual_seed(0)
    logits, target = torch.randn(3, 5, 4, 4, dtype=torch.float64) * 4, torch.randint(0, 5, (3, 4, 4))
    target[0, 0, 0] = IGNORE_INDEX
    valid = target != IGNORE_INDEX
    y = target.clamp(max=4)
    shared = Audit(logits, target)

    def mean(values):
        return torch.where(valid, values, 0).sum((1, 2)) / valid.sum((1, 2))

    for labels in (torch.ones(5), torch.tensor([1, 0, 0, 1, 0]), torch.randint(0, 2, (3, 5)), torch.zeros(3, 5)):
        ours = shared(labels)
        for name, log_q in (("unfused", torch.log_softmax(logits, 1)), ("fused", fuse_log(logits, labels))):
            p = log_q.exp()
            entropy = -(p * torch.where(p > 0, log_q, 0)).sum(1)
            torch.testing.assert_close(ours[f"entropy_{name}"], mean(entropy))
            torch.testing.assert_close(ours[f"accuracy_{name}"], mean((log_q.argmax(1) == y).double()))
        rows = labels.expand(3, 5) if labels.dim() == 1 else labels
        assert ours["size"].tolist() == [int(r.sum()) or 5 for r in rows]


def test_removed_mass_is_the_probability_outside_the_labels():
    """1 - sum_{c in L} P_c per pixel, averaged over labelled pixels: (N - |L|)/N for uniform logits,
    0 where P sits on kept classes, the softmax mass outside L in general."""
    N = 5
    labels = torch.tensor([[1, 1, 0, 0, 0]])
    target = torch.tensor([[[0, 1], [1, 255]]])
    uniform = audit(torch.zeros(1, N, 2, 2), labels, target)
    assert uniform["removed_mass"].item() == pytest.approx((N - 2) / N, abs=1e-6)  # float32 logits
    sure = torch.full((1, N, 2, 2), -30.0)
    sure[:, 0] = 30.0
    assert audit(sure, labels, target)["removed_mass"].item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(1, N, 2, 2, dtype=torch.float64)
    probs = logits.softmax(1)
    outside = 1 - probs[:, :2].sum(1)
    expected = outside[target != 255].mean()
    assert audit(logits, labels, target)["removed_mass"].item() == pytest.approx(expected.item(), abs=1e-12)


def test_removed_truth_is_the_oracles_removal_on_this_sources_kept_pixels():
    """Oracle's nats on the pixels a label set keeps: for nested labels (Case 2 keeps a subset of the truth)
    removed - removed_truth = -log(P(kept) / P(truth)) >= 0 pixel by pixel, and 0 for the oracle itself."""
    logits = torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, 3]).repeat(2, 4, 1)
    oracle = from_masks(target, 6)
    subset = oracle.clone()
    subset[:, 3] = False  # Case 2: one true class dropped
    same = audit(logits, oracle, target)
    assert torch.allclose(same["removed_truth"], same["removed"])
    case2 = audit(logits, subset, target)
    assert bool((case2["removed"] - case2["removed_truth"] >= -1e-12).all())
    kept = target != 3
    expected = removed_nats(logits, oracle)[kept].view(2, -1).mean(1)
    assert torch.allclose(case2["removed_truth"], expected)
