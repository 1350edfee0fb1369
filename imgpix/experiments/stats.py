"""Statistics shared by the experiments: bootstrap CIs over images, mean ± sd over seeds, paired tests.

The design they follow: test images are the sampled units, models retrained with different seeds
are blocks, and the same image appears under every seed and condition. So

* a bootstrap resamples *images* (a cluster bootstrap: all rows of an image move together), never
  table rows, which would treat an image's seeds and conditions as independent draws;
* a paired test of conditions A and B compares them on the same image and seed, averages the
  difference over seeds per image, and sign-flips per image (a paired permutation test), so the
  p-value assumes only that images are exchangeable;
* dataset-level metrics (one number per seed, e.g. MIOU) are compared across seeds by a paired
  t-test, with the seeds as the units.

Everything is deterministic for a given ``seed`` argument. CIs are percentile bootstrap intervals
(``scipy.stats.bootstrap``): BCa is undefined on the degenerate samples an uninformed network
gives (exact nats, no spread). A statistic that cannot be computed (no spread in x, too few
units) is NaN, and so is its CI.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BATCH = 1000  # resamples per vectorised call: bounds memory at BATCH x clusters counts


class Interval(NamedTuple):
    """A point estimate and its confidence interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """A paired comparison A - B: mean difference, its CI, a standardised effect and a p-value.

    ``effect_size`` is Cohen's d_z (mean / sd of the paired differences); ``n`` the number of units
    (images or seeds); ``seed_sd`` the sd over seeds of the per-seed mean difference (NaN with one
    seed); ``method`` names the test.
    """

    effect: float
    low: float
    high: float
    effect_size: float
    p_value: float
    n: int
    seed_sd: float
    method: str


def _cluster_moments(columns: Sequence[np.ndarray], clusters) -> np.ndarray:
    """Per-cluster sums of ``z z^T`` for rows ``z = (1, columns...)``, centred: [G, q, q]."""
    if len(columns[0]) == 0:
        raise ValueError("no values to summarise")
    z = np.column_stack([np.ones(len(columns[0]))] + [c - np.mean(c) for c in columns])
    outer = z[:, :, None] * z[:, None, :]
    if clusters is None:
        return outer
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    moments = np.zeros((index.max() + 1, *outer.shape[1:]))
    np.add.at(moments, index, outer)
    return moments


def _bootstrap(moments: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], *, seed: int,
               confidence: float, n_resamples: int) -> list[Interval]:
    """Percentile CIs of ``statistic(summed moments) -> [k, ...]`` over resampled clusters."""
    point = statistic(moments.sum(axis=0))
    clusters, shape = len(moments), moments.shape[1:]
    if clusters < 2:
        return [Interval(float(v), np.nan, np.nan) for v in point]
    flat = moments.reshape(clusters, -1)

    def resampled(index, axis=-1):  # index [..., clusters] -> how often each cluster is drawn -> summed moments
        rows = index.reshape(-1, clusters)
        offsets = rows + clusters * np.arange(len(rows))[:, None]
        counts = np.bincount(offsets.ravel(), minlength=rows.size).reshape(rows.shape)
        return statistic((counts @ flat).reshape(*index.shape[:-1], *shape))

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        ci = stats.bootstrap((np.arange(len(moments)),), resampled, vectorized=True, n_resamples=n_resamples,
                             batch=BATCH, confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed)).confidence_interval
    return [Interval(float(v), float(lo), float(hi)) for v, lo, hi in zip(point, ci.low, ci.high)]


def _mean(m: np.ndarray) -> np.ndarray:
    return np.stack([m[..., 0, 1] / m[..., 0, 0]])


def mean_ci(values, clusters=None, *, seed: int = 0, confidence: float = CONFIDENCE,
            n_resamples: int = N_RESAMPLES) -> Interval:
    """Mean of ``values`` with a bootstrap CI; with ``clusters`` (e.g. image ids) whole clusters are resampled.

    The estimate is the mean over rows (with clusters, a ratio of cluster sums).
    """
    values = np.asarray(values, dtype=np.float64)
    (ci,) = _bootstrap(_cluster_moments([values], clusters), _mean, seed=seed, confidence=confidence,
                       n_resamples=n_resamples)
    shift = float(values.mean())  # the moments are centred
    return Interval(ci.value + shift, ci.low + shift, ci.high + shift)


def regression(x, y, clusters=None, controls=None, *, seed: int = 0, confidence: float = CONFIDENCE,
               n_resamples: int = N_RESAMPLES) -> dict[str, Interval]:
    """Least-squares line ``y = slope * x + intercept`` with bootstrap CIs (resampling clusters, else rows).

    Keys: ``slope``, ``intercept``, ``r`` (Pearson), ``ratio`` = mean(y) / mean(x); with
    ``controls`` [rows, p] also ``r2_control``, the in-sample R^2 of a least-squares fit of y on
    ``(1, controls)`` (rank-deficient controls are fine: a pseudo-inverse solves the fit).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    extra = [] if controls is None else list(np.asarray(controls, dtype=np.float64).reshape(len(x), -1).T)
    mx, my = x.mean(), y.mean()

    def statistic(m):
        count = m[..., 0, 0]
        cx, cy = m[..., 0, 1] / count, m[..., 0, 2] / count
        sxx, syy = m[..., 1, 1] / count - cx**2, m[..., 2, 2] / count - cy**2
        sxy = m[..., 1, 2] / count - cx * cy
        slope = sxy / sxx
        out = [slope, (cy + my) - slope * (cx + mx), sxy / np.sqrt(sxx * syy), (cy + my) / (cx + mx)]
        if extra:
            keep = [0, *range(3, m.shape[-1])]
            xtx, xty = m[..., keep, :][..., keep], m[..., keep, 2]
            fitted = (np.linalg.pinv(xtx) @ xty[..., None])[..., 0]
            sse = m[..., 2, 2] - (fitted * xty).sum(-1)
            out.append(1 - sse / (m[..., 2, 2] - count * cy**2))
        return np.stack(out)

    names = ["slope", "intercept", "r", "ratio"] + (["r2_control"] if extra else [])
    moments = _cluster_moments([x, y, *extra], clusters)
    with np.errstate(all="ignore"):
        return dict(zip(names, _bootstrap(moments, statistic, seed=seed, confidence=confidence,
                                          n_resamples=n_resamples)))


def over_seeds(table: pd.DataFrame, value: str, by: Sequence[str] = ("condition",), seed: str = "seed") -> pd.DataFrame:
    """Mean ± sd (ddof 1) over seeds of ``value``, one row per group ``by``: columns ``*by, mean, sd, seeds``.

    ``table`` holds one row per seed and group (e.g. a dataset-level metric per trained model).
    """
    by = list(by)
    if table.duplicated([*by, seed]).any():
        raise ValueError(f"several rows per ({', '.join(by)}, {seed}); aggregate per seed first")
    return table.groupby(by, sort=False)[value].agg(mean="mean", sd="std", seeds="count").reset_index()


def paired(table: pd.DataFrame, value: str, a: str, b: str, *, condition: str = "condition", unit: str = "image",
           block: str = "seed", seed: int = 0, confidence: float = CONFIDENCE,
           n_resamples: int = N_RESAMPLES) -> Paired:
    """Condition ``a`` minus ``b`` on the same images, seeds as blocks.

    Per (block, unit) the difference of ``value``; per unit its mean over blocks, D_i. Effect =
    mean D_i with a bootstrap CI over units; effect size d_z = mean / sd of D_i; p-value of the
    two-sided sign-flip permutation test on D_i (exact when 2^units <= ``n_resamples``).
    Pairs missing either condition are dropped.
    """
    rows = table[table[condition].isin([a, b])]
    if rows.duplicated([block, unit, condition]).any():
        raise ValueError(f"several rows per ({block}, {unit}, {condition}); filter the table first")
    wide = rows.set_index([block, unit, condition])[value].unstack(condition)
    if a not in wide or b not in wide:
        raise ValueError(f"conditions {a!r} and {b!r} must both be in the table")
    diff = (wide[a] - wide[b]).dropna()
    per_unit = diff.groupby(level=unit).mean().to_numpy()
    if len(per_unit) < 2:
        raise ValueError(f"a paired test needs at least 2 {unit}s with both {a!r} and {b!r}")
    ci = mean_ci(per_unit, seed=seed, confidence=confidence, n_resamples=n_resamples)
    with np.errstate(all="ignore"):
        test = stats.permutation_test((per_unit,), lambda d, axis: d.mean(axis=axis), permutation_type="samples",
                                      vectorized=True, n_resamples=n_resamples, rng=np.random.default_rng(seed))
        size = ci.value / per_unit.std(ddof=1)
    seed_sd = float(diff.groupby(level=block).mean().std(ddof=1))
    return Paired(ci.value, ci.low, ci.high, float(size), float(test.pvalue), len(per_unit), seed_sd,
                  f"per-{unit} differences averaged over {block}s; bootstrap CI; sign-flip permutation test")


def paired_seeds(a, b, *, confidence: float = CONFIDENCE) -> Paired:
    """A dataset-level metric under conditions A and B on the same seeds (``a[i]``, ``b[i]``: seed i).

    Paired t-test: effect = mean difference with its t interval, d_z and the two-sided p-value.
    With seeds as the units, few seeds give wide intervals, as they should.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a and b must be 1-D, of equal length >= 2, got shapes {a.shape} and {b.shape}")
    d = a - b
    with np.errstate(all="ignore"):
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(confidence)
        size = d.mean() / d.std(ddof=1)
    return Paired(float(d.mean()), float(ci.low), float(ci.high), float(size), float(test.pvalue), len(d),
                  float(d.std(ddof=1)), "paired t-test over seeds")


def plateau(history: pd.DataFrame, by: str, value: str = "MIOU") -> pd.DataFrame:
    """Per ``by`` group of learning curves (columns ``epoch``, ``updates``, ``value``; one row per seed and
    epoch): the final value of the seed-mean curve and its change from the third to the last quarter of the
    epochs (the mean over the last quarter minus the mean over the one before; near 0 on a plateau)."""
    rows = []
    for key, group in history.groupby(by, sort=False):
        mean = group.groupby("epoch")[value].mean().sort_index().to_numpy()
        quarter = max(len(mean) // 4, 1)
        change = mean[-quarter:].mean() - mean[-2 * quarter:-quarter].mean() if len(mean) >= 2 else np.nan
        rows.append({by: key, "updates": int(group["updates"].max()), "epochs": int(group["epoch"].max()),
                     f"final_val_{value}": float(mean[-1]), "last_quarter_change": float(change)})
    return pd.DataFrame(rows)
