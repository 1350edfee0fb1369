"""Shared statistics (imgpix.experiments.stats) against known and hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from imgpix.experiments import stats

FAST = {"n_resamples": 999}


def sign_flip_p(d) -> float:
    """Exact two-sided sign-flip p-value of mean(d), by enumeration."""
    d = np.asarray(d, dtype=float)
    null = [np.mean(d * s) for s in itertools.product([-1, 1], repeat=len(d))]
    return float(np.mean(np.abs(null) >= abs(d.mean()) - 1e-12))


# ------------------------------------------------------------------ bootstrap mean
def test_mean_ci_covers_the_true_mean_of_a_normal_sample():
    values = np.random.default_rng(1).normal(3.0, 1.0, 400)
    ci = stats.mean_ci(values, seed=0)
    assert ci.value == pytest.approx(values.mean())
    assert ci.low < 3.0 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)  # the normal-theory width


def test_mean_ci_is_deterministic_per_seed():
    values = np.random.default_rng(2).exponential(size=50)
    assert stats.mean_ci(values, seed=3, **FAST) == stats.mean_ci(values, seed=3, **FAST)
    assert stats.mean_ci(values, seed=3, **FAST) != stats.mean_ci(values, seed=4, **FAST)


def test_clusters_move_together():
    """Equal-sized clusters: resampling clusters = resampling their means; rows would give a narrower CI."""
    means = np.random.default_rng(3).normal(size=30)
    rows = np.repeat(means, 4) + np.tile([-0.1, 0.1, -0.2, 0.2], 30)
    clustered = stats.mean_ci(rows, np.repeat(np.arange(30), 4), **FAST)
    assert clustered == pytest.approx(stats.mean_ci(means, **FAST), abs=1e-12)
    naive = stats.mean_ci(rows, **FAST)
    assert naive.high - naive.low < 0.7 * (clustered.high - clustered.low)


def test_degenerate_sample_gives_a_point_interval():
    assert stats.mean_ci(np.full(10, 2.5), **FAST) == pytest.approx((2.5, 2.5, 2.5), abs=1e-12)
    assert stats.mean_ci([1.0], **FAST).value == 1.0
    with pytest.raises(ValueError, match="no values"):
        stats.mean_ci([])


# ------------------------------------------------------------------ regression
@pytest.mark.parametrize("slope, intercept", [(1.0, 0.0), (2.0, 1.0), (-0.4, 0.3)])
def test_noiseless_line_is_exact(slope, intercept):
    x = np.linspace(0.1, 3, 40)
    fit = stats.regression(x, slope * x + intercept, **FAST)
    for key, value in (("slope", slope), ("intercept", intercept), ("r", np.sign(slope))):
        assert fit[key] == pytest.approx((value, value, value), abs=1e-9)


def test_regression_matches_scipy_and_has_sensible_cis():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 3, 300)
    y = 0.5 * x + 0.2 + rng.normal(0, 0.3, 300)
    fit, ref = stats.regression(x, y, **FAST), sps.linregress(x, y)
    assert (fit["slope"].value, fit["intercept"].value, fit["r"].value) == pytest.approx(
        (ref.slope, ref.intercept, ref.rvalue))
    assert fit["ratio"].value == pytest.approx(y.mean() / x.mean())
    assert fit["slope"].low < 0.5 < fit["slope"].high and fit["intercept"].low < 0.2 < fit["intercept"].high
    assert fit["slope"].high - fit["slope"].low == pytest.approx(2 * 1.96 * ref.stderr, rel=0.25)


def test_control_r2_matches_least_squares():
    rng = np.random.default_rng(5)
    controls = rng.integers(1, 6, (200, 2)).astype(float)
    y = np.log(controls.sum(1)) + rng.normal(0, 0.1, 200)
    fit = stats.regression(np.log(controls.sum(1)), y, controls=np.c_[controls, controls[:, 0]], **FAST)  # collinear
    design = np.c_[np.ones(200), controls]
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    assert fit["r2_control"].value == pytest.approx(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean())))
    assert fit["r2_control"].low <= fit["r2_control"].value <= fit["r2_control"].high


def test_regression_without_spread_in_x_is_nan():
    fit = stats.regression(np.ones(10), np.arange(10.0), **FAST)
    assert np.isnan(fit["slope"].value) and np.isnan(fit["r"].low)
    assert fit["ratio"].value == pytest.approx(4.5)


# ------------------------------------------------------------------ seeds
def test_over_seeds_mean_and_sd():
    table = pd.DataFrame({"condition": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                          "MIOU": [50.0, 52.0, 54.0, 40.0, 40.0, 43.0]})
    out = stats.over_seeds(table, "MIOU").set_index("condition")
    assert out.loc["a"].tolist() == pytest.approx([52.0, 2.0, 3])
    assert out.loc["b", "sd"] == pytest.approx(np.std([40, 40, 43], ddof=1))
    with pytest.raises(ValueError, match="aggregate per seed"):
        stats.over_seeds(pd.concat([table, table]), "MIOU")


def test_paired_seeds_is_the_paired_t_test():
    a, b = [61.0, 63.5, 60.2, 64.0], [60.0, 61.0, 60.5, 62.0]
    out, ref = stats.paired_seeds(a, b), sps.ttest_rel(a, b)
    d = np.subtract(a, b)
    assert (out.effect, out.p_value, out.n) == pytest.approx((d.mean(), ref.pvalue, 4))
    assert out.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert (out.low, out.high) == pytest.approx(tuple(ref.confidence_interval()))
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_seeds([1.0, 2.0], [1.0])


# ------------------------------------------------------------------ paired test, seeds as blocks
def _long(values_a, values_b) -> pd.DataFrame:
    """A [seeds, images] pair of arrays as a long table."""
    rows = []
    for cond, values in (("A", values_a), ("B", values_b)):
        for (s, i), v in np.ndenumerate(np.asarray(values, dtype=float)):
            rows.append({"condition": cond, "seed": s, "image": i, "v": v})
    return pd.DataFrame(rows)


def test_paired_permutation_p_is_exact_on_a_tiny_example():
    out = stats.paired(_long([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]), "v", "A", "B")
    assert out.p_value == 0.25  # 2 of the 8 sign flips reach |mean| >= 2
    assert (out.effect, out.effect_size, out.n) == (2.0, 2.0, 3)
    d = [1.0, -1.0, 2.0, 3.0, 0.5]
    assert stats.paired(_long([d], [[0.0] * 5]), "v", "A", "B").p_value == pytest.approx(sign_flip_p(d))


def test_paired_averages_over_seeds_per_image():
    a = np.array([[1.0, 2.0, 0.0, 4.0], [3.0, 0.0, 1.0, 2.0]])
    out = stats.paired(_long(a, np.zeros_like(a)), "v", "A", "B", **FAST)
    per_image = a.mean(0)
    assert out.effect == pytest.approx(per_image.mean())
    assert out.p_value == pytest.approx(sign_flip_p(per_image))
    assert out.seed_sd == pytest.approx(np.std(a.mean(1), ddof=1))
    assert out.low <= out.effect <= out.high


def test_more_identical_seeds_do_not_shrink_the_p_value():
    """Repeating the same per-image differences under more seeds is no new evidence about images."""
    d = np.array([[0.3, -0.1, 0.4, 0.2, 0.1, -0.2]])
    one = stats.paired(_long(d, 0 * d), "v", "A", "B")
    five = stats.paired(_long(np.repeat(d, 5, 0), 0 * np.repeat(d, 5, 0)), "v", "A", "B")
    assert five.p_value == one.p_value and five.n == one.n == 6


def test_paired_rejects_ambiguous_or_missing_pairs():
    table = _long([[1.0, 2.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="filter the table"):
        stats.paired(pd.concat([table, table]), "v", "A", "B")
    with pytest.raises(ValueError, match="must both be"):
        stats.paired(table, "v", "A", "C")
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired(table[table.image == 0], "v", "A", "B")
