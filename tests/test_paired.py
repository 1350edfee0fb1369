"""imgpix.experiments.paired: dataset scores of summed confusion matrices, their bootstrap CIs and paired tests.

Images are rows of a stack of per-image confusion matrices [I, N, N]; ``seeds`` says which retrained
model (block) each row belongs to. In the noisy-label experiment every seed is evaluated on the same
validation images (the synthetic val split is one fixed set), so row i of every seed is the same image.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imgpix.experiments import paired
from imgpix.metrics import METRIC_NAMES, scores


@st.composite
def confusion_matrices(draw, max_n: int = 8) -> np.ndarray:
    """An [N, N] count matrix; some classes absent from truth (zero row), some from truth and prediction."""
    n = draw(st.integers(2, max_n))
    cm = draw(hnp.arrays(np.int64, (n, n), elements=st.integers(0, 40)))
    for c, absence in enumerate(draw(st.lists(st.sampled_from(["present", "truth", "both"]), min_size=n, max_size=n))):
        if absence != "present":
            cm[c, :] = 0
        if absence == "both":
            cm[:, c] = 0
    assume(cm.sum() > 0)
    return cm


def two_class_images(rng: np.random.Generator, images: int, pixels: int = 100) -> np.ndarray:
    """[images, 2, 2]: class 0 misread as 1 at a per-image rate ~ Beta(2, 18) (mean 0.1), class 1 as 0 at
    ~ Beta(6, 14) (mean 0.3); the expected confusion matrix is :func:`two_class_expected`."""
    wrong0 = rng.binomial(pixels, rng.beta(2, 18, images))
    wrong1 = rng.binomial(pixels, rng.beta(6, 14, images))
    return np.stack([np.array([[pixels - a, a], [b, pixels - b]]) for a, b in zip(wrong0, wrong1)])


def two_class_expected(pixels: int = 100) -> np.ndarray:
    return np.array([[0.9, 0.1], [0.3, 0.7]]) * pixels


def improved(rng: np.random.Generator, images: int, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A and B on the same images; B fixes at least one of A's errors on every image and adds none."""
    a = np.zeros((images, n, n), dtype=np.int64)
    for i in range(images):
        truth = rng.integers(20, 60, n)
        wrong = rng.integers(2, 10, n)
        a[i] = np.diag(truth - wrong) + np.diag(wrong)[:, np.roll(np.arange(n), 1)]  # c misread as c+1
    b = a.copy()
    for i in range(images):
        c = rng.integers(0, n)
        fixed = rng.integers(1, a[i, c, (c + 1) % n] + 1)
        b[i, c, (c + 1) % n] -= fixed
        b[i, c, c] += fixed
    return a, b


def noisy_pair(rng: np.random.Generator, images: int, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A and B on the same images with a small average gain for B and much per-image noise (p ~ 0.1-0.5)."""
    a, b = np.zeros((images, n, n)), np.zeros((images, n, n))
    for i in range(images):
        truth = rng.integers(50, 100, n)
        wrong_a = rng.integers(0, 30, n)
        wrong_b = np.clip(wrong_a + rng.integers(-12, 10, n), 0, truth)
        for m, wrong in ((a, wrong_a), (b, wrong_b)):
            m[i][np.arange(n), np.arange(n)] = truth - wrong
            m[i][np.arange(n), (np.arange(n) + 1) % n] = wrong
    return a, b


def width(result: dict) -> float:
    return result["ci_high"] - result["ci_low"]


# ------------------------------------------------------------------ score
@given(confusion_matrices())
def test_score_equals_metrics_scores(cm):
    expected = scores(cm)
    for metric in METRIC_NAMES:
        assert paired.score(cm, metric) == pytest.approx(100 * expected[metric], rel=1e-12, abs=1e-12)


@given(st.lists(confusion_matrices(max_n=5), min_size=1, max_size=4), st.sampled_from(METRIC_NAMES))
def test_score_of_a_stack_is_the_score_of_each_matrix(matrices, metric):
    n = min(len(m) for m in matrices)
    stack = np.stack([m[:n, :n] for m in matrices])
    assume(all(m.sum() > 0 for m in stack))
    assert paired.score(stack, metric) == pytest.approx([paired.score(m, metric) for m in stack], rel=1e-12)


def test_score_by_hand_with_a_predicted_but_absent_class_and_an_absent_one():
    cm = np.array([[5, 1, 0], [0, 0, 0], [0, 0, 0]])  # class 1 predicted, not true: IoU 0; class 2 left out
    assert paired.score(cm, "PA") == pytest.approx(100 * 5 / 6)
    assert paired.score(cm, "MPA") == pytest.approx(100 * 5 / 6)
    assert paired.score(cm, "MIOU") == pytest.approx(100 * (5 / 6 + 0) / 2)
    assert paired.score(cm, "FWAA") == pytest.approx(100 * 5 / 6)


# ------------------------------------------------------------------ score_interval
def test_score_interval_mean_and_sd_are_over_the_per_seed_scores():
    rng = np.random.default_rng(0)
    images = two_class_images(rng, 30)
    seeds = np.repeat([4, 7, 9], 10)
    per_seed = [paired.score(images[seeds == s].sum(0)) for s in (4, 7, 9)]
    result = paired.score_interval(images, seeds)
    assert result["mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert result["sd"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)
    assert result["seeds"] == 3
    assert paired.score_interval(images[:10], np.zeros(10))["sd"] == 0.0


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_score_interval_covers_the_population_score(metric):
    """Datasets of 200 images from a known population: the 95% CI covers its score in about 95% of them,
    and is as wide as +-1.96 times the score's sd over datasets."""
    truth = paired.score(two_class_expected(), metric)
    covered, estimates, widths = [], [], []
    for repeat in range(40):
        images = two_class_images(np.random.default_rng(100 + repeat), 200)
        ci = paired.score_interval(images, np.zeros(200), metric, rng_seed=repeat)
        assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"]
        covered.append(ci["ci_low"] <= truth <= ci["ci_high"])
        estimates.append(ci["mean"])
        widths.append(width(ci))
    assert np.mean(covered) >= 0.85
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.std(estimates, ddof=1), rel=0.3)


def test_score_interval_narrows_as_one_over_root_images():
    rng = np.random.default_rng(1)
    small, large = two_class_images(rng, 100), two_class_images(rng, 400)
    ratio = width(paired.score_interval(small, np.zeros(100))) / width(paired.score_interval(large, np.zeros(400)))
    assert ratio == pytest.approx(2.0, rel=0.25)


def test_score_interval_is_deterministic_for_a_seed():
    images = two_class_images(np.random.default_rng(2), 50)
    seeds = np.repeat([0, 1], 25)
    assert paired.score_interval(images, seeds, rng_seed=5) == paired.score_interval(images, seeds, rng_seed=5)
    assert paired.score_interval(images, seeds, rng_seed=5) != paired.score_interval(images, seeds, rng_seed=6)


def test_copies_of_one_seed_do_not_narrow_the_score_interval():
    """The same images under k seeds whose models agree: the image sample is still one sample of 60."""
    images = two_class_images(np.random.default_rng(3), 60)
    one = paired.score_interval(images, np.zeros(60))
    four = paired.score_interval(np.tile(images, (4, 1, 1)), np.repeat(np.arange(4), 60))
    assert four["mean"] == pytest.approx(one["mean"])
    assert width(four) == pytest.approx(width(one), rel=0.2)


@pytest.mark.xfail(strict=True, reason="known bias: resamples that miss a rare class leave it out of the "
                   "mean, so MIOU's percentile CI sits above the estimate when rare classes score 0")
def test_miou_interval_contains_the_estimate_when_classes_are_rare():
    """16 images predicted all background; 8 of them hold one object class each (as in a tiny quick run)."""
    images = np.zeros((16, 9, 9))
    images[:, 0, 0] = 100
    for i in range(8):
        images[i, 1 + i, 0] = 20
    ci = paired.score_interval(images, np.zeros(16))
    assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"]


# ------------------------------------------------------------------ paired_difference
def test_identical_conditions_differ_by_nothing():
    a = two_class_images(np.random.default_rng(4), 40)
    result = paired.paired_difference(a, a.copy(), np.repeat([0, 1], 20))
    assert result["difference"] == 0.0 and result["p_value"] == 1.0
    assert result["ci_low"] == 0.0 == result["ci_high"]
    assert result["per_seed"] == [0.0, 0.0] and result["sd_over_seeds"] == 0.0


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_better_on_every_image_is_significant(metric):
    a, b = improved(np.random.default_rng(5), 40)
    seeds = np.repeat([0, 1], 20)
    result = paired.paired_difference(a, b, seeds, metric)
    assert result["difference"] > 0 and result["ci_low"] > 0
    assert 1 / (1 + paired.RESAMPLES) <= result["p_value"] < 0.01


def test_difference_is_the_mean_of_the_per_seed_differences():
    a, b = noisy_pair(np.random.default_rng(6), 30)
    seeds = np.repeat([2, 0, 1], 10)
    result = paired.paired_difference(a, b, seeds)
    per_seed = [paired.score(b[seeds == s].sum(0)) - paired.score(a[seeds == s].sum(0)) for s in (0, 1, 2)]
    assert result["per_seed"] == pytest.approx(per_seed, rel=1e-12)
    assert result["difference"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert result["sd_over_seeds"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)


@given(st.integers(0, 2**32 - 1), st.integers(2, 10), st.integers(1, 3), st.sampled_from(METRIC_NAMES))
def test_swapping_a_and_b_negates_the_difference_and_keeps_p(seed, images, blocks, metric):
    a, b = noisy_pair(np.random.default_rng(seed), images * blocks)
    seeds = np.repeat(np.arange(blocks), images)
    ab = paired.paired_difference(a, b, seeds, metric, rng_seed=seed)
    ba = paired.paired_difference(b, a, seeds, metric, rng_seed=seed)
    assert ba["difference"] == pytest.approx(-ab["difference"], abs=1e-9)
    assert ba["p_value"] == ab["p_value"]
    assert (ba["ci_low"], ba["ci_high"]) == pytest.approx((-ab["ci_high"], -ab["ci_low"]), abs=1e-9)
    assert 0 < ab["p_value"] <= 1


def test_paired_difference_is_deterministic_for_a_seed():
    a, b = noisy_pair(np.random.default_rng(7), 30)
    seeds = np.zeros(30)
    assert paired.paired_difference(a, b, seeds, rng_seed=1) == paired.paired_difference(a, b, seeds, rng_seed=1)
    assert paired.paired_difference(a, b, seeds, rng_seed=1) != paired.paired_difference(a, b, seeds, rng_seed=2)


@pytest.mark.parametrize("copies", [2, 4, 8])
def test_copies_of_one_seed_do_not_shrink_the_p_value(copies):
    """Seeds are retrained models evaluated on the *same* images. k seeds whose models agree exactly carry
    no more evidence about unseen images than one: p-value and CI must stay (up to Monte Carlo error) those
    of one seed. Resampling or swapping images independently in each seed counts each image k times."""
    a, b = noisy_pair(np.random.default_rng(9), 30)
    one = paired.paired_difference(a, b, np.zeros(30))
    assert 0.1 < one["p_value"] < 0.5 and one["ci_low"] < 0 < one["ci_high"]  # the case is borderline
    seeds = np.repeat(np.arange(copies), 30)
    many = paired.paired_difference(np.tile(a, (copies, 1, 1)), np.tile(b, (copies, 1, 1)), seeds)
    assert many["difference"] == pytest.approx(one["difference"])
    assert many["p_value"] == pytest.approx(one["p_value"], abs=0.05)
    assert width(many) == pytest.approx(width(one), rel=0.2)
