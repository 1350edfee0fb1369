"""The experiments' statistics, in one home: dataset scores of confusion matrices, bootstrap CIs over
images, mean ± sd over seeds, paired tests. One confidence level (:data:`CONFIDENCE`), one resample count
(:data:`N_RESAMPLES`; the ``--quick`` CI run uses :data:`QUICK_RESAMPLES`, coarser and faster) and one
result type (:class:`Estimate`).

The design they follow: models retrained with different seeds are the units of a claim about the
method, test images are the units of a statement about the trained models, and the same image appears
under every seed and condition. So

* a bootstrap resamples *images* (a cluster bootstrap: all rows of an image move together), never
  table rows, which would treat an image's seeds and conditions as independent draws;
* a dataset score (MIOU, PA, ...) is a function of the summed confusion matrix, not a mean over
  images: its bootstrap resamples images and re-sums their matrices; every seed is scored on the same
  images, so one draw of images (or of A/B swaps) serves every seed, and the per-seed scores are
  averaged (more seeds average out training noise without pretending to add images);
* a paired test of conditions A and B compares them on the same image and seed, averages the
  difference over seeds per image, and sign-flips per image (a paired permutation test), so the
  p-value assumes only that images are exchangeable;
* dataset-level metrics (one number per seed) are compared across seeds by a paired t-test, with the
  seeds as the units (:func:`paired_seeds`). This is the test of a claim about the *method*: retraining
  is what varies between seeds, and the sd over seeds is usually far larger than the image-level
  standard error. The t interval is exact for normal per-seed differences and stays honest with 3
  seeds (wide), where a sign-flip test cannot go below p = 2/2^3 = 0.25 and a bootstrap of 3 values
  has 10 distinct resamples and too narrow an interval. It treats the evaluated images as fixed (every
  seed is scored on the same ones), so the image-level interval is shown beside it, labelled as
  conditional on the trained networks. :func:`seeds_needed` says how many seeds a decision would need
  at the measured mean and sd;
* an effect size (Cohen's d_z) is given only over at least :data:`MIN_EFFECT_UNITS` units (NaN below:
  over 3 seeds it is noise); a Monte Carlo p-value at its floor 1/(R+1) is printed as such
  (:func:`p_text`).

Everything is deterministic for a given ``seed`` argument. CIs are percentile bootstrap intervals
(``scipy.stats.bootstrap`` for means and fits): BCa is undefined on the degenerate samples an
uninformed network gives (exact nats, no spread). A statistic that cannot be computed (no spread in x,
too few units) is NaN, and so is its CI.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..metrics import batched_scores

CONFIDENCE = 0.95
N_RESAMPLES = 9999  # bootstrap resamples and permutations of every statistic
QUICK_RESAMPLES = 999  # the --quick CI run's: fewer draws, coarser CIs and p-values (p >= 1/1000)
BATCH = 1000  # resamples per vectorised call: bounds memory at BATCH x clusters counts
MIN_EFFECT_UNITS = 10  # Cohen's d_z is given over at least this many units (seeds, images), else NaN
MOST_SEEDS = 10**9  # seeds_needed searches no further


@dataclass(frozen=True)
class Estimate:
    """A statistic with its confidence interval and, for a comparison, its test: the one result type.

    ``value`` is the point estimate (a mean, a score, a difference B - A, a slope, ...), ``low`` /
    ``high`` its CI at :data:`CONFIDENCE`. A comparison also has ``p_value``, ``effect_size`` (Cohen's
    d_z, mean / sd of the paired differences; NaN over fewer than :data:`MIN_EFFECT_UNITS` units), ``n``
    (units: images or seeds), ``seed_sd`` (the sd over seeds of the per-seed value, ddof 1; 0 with one
    seed), ``per_seed`` values and the ``method``; None where a field does not apply. An Estimate
    unpacks as ``value, low, high``.
    """

    value: float
    low: float
    high: float
    p_value: float | None = None
    effect_size: float | None = None
    n: int | None = None
    seed_sd: float | None = None
    per_seed: tuple[float, ...] = ()
    method: str = ""

    def __iter__(self) -> Iterator[float]:
        return iter((self.value, self.low, self.high))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index):
        return (self.value, self.low, self.high)[index]


def _percentile_ci(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    low, high = np.nanpercentile(draws, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return float(low), float(high)


def _sd(values) -> float:
    """The sd (ddof 1) of per-seed values; 0 for one seed."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


# -- dataset scores of confusion matrices ----------------------------------------------------------


def score(matrices: np.ndarray, metric: str = "MIOU") -> np.ndarray:
    """``metric`` in percent of confusion matrices [..., N, N] (:func:`imgpix.metrics.batched_scores`)."""
    return 100 * batched_scores(matrices)[metric]


def _blocks(seeds: np.ndarray) -> list[np.ndarray]:
    blocks = [np.flatnonzero(seeds == s) for s in np.unique(seeds)]
    if len({len(b) for b in blocks}) != 1:
        raise ValueError("every seed must hold the same images (equal counts per seed)")
    return blocks


def _rows_of(matrices: np.ndarray) -> np.ndarray:
    """[images, N*N]: one flattened confusion matrix per image."""
    matrices = np.asarray(matrices, dtype=np.float64)
    return matrices.reshape(len(matrices), -1)


def _resample_counts(images: int, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """[n_resamples, images]: how often each image is drawn in each bootstrap resample."""
    return rng.multinomial(images, np.full(images, 1 / images), size=n_resamples)


def score_ci(matrices, seeds, metric: str = "MIOU", *, seed: int = 0, n_resamples: int = N_RESAMPLES,
             confidence: float = CONFIDENCE) -> Estimate:
    """Mean over seeds of the per-seed score (``value``), its sd over seeds (``seed_sd``) and a bootstrap
    CI over images, from per-image confusion matrices [images, N, N] and each image's ``seeds``."""
    flat, blocks = _rows_of(matrices), _blocks(np.asarray(seeds))
    n = int(np.sqrt(flat.shape[1]))
    counts = _resample_counts(len(blocks[0]), np.random.default_rng(seed), n_resamples)
    per_seed = np.array([score(flat[b].sum(0).reshape(n, n), metric) for b in blocks])
    draws = np.mean([score((counts @ flat[b]).reshape(-1, n, n), metric) for b in blocks], axis=0)
    low, high = _percentile_ci(draws, confidence)
    return Estimate(float(per_seed.mean()), low, high, n=len(per_seed), seed_sd=_sd(per_seed),
                    per_seed=tuple(float(v) for v in per_seed), method="per-seed scores; bootstrap over images")


def score_difference(matrices_a, matrices_b, seeds, metric: str = "MIOU", *, seed: int = 0,
                     n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> Estimate:
    """Score(B) - score(A) on the same images: mean over seeds, bootstrap CI, and a permutation p-value.

    Images are the units: the interval and p describe *these trained models* (conditional on them), not
    the method; a claim about the method is decided over seeds (:func:`paired_seeds` of ``per_seed``).

    The p-value swaps A and B per image at random (the same swaps in every seed), the exact null of
    "the two conditions are exchangeable on every image"; two-sided, ``(1 + #|d*| >= |d|) / (1 + R)``.
    ``n`` counts the images of a seed; ``per_seed`` holds each seed's difference.
    """
    flat_a, flat_b, blocks = _rows_of(matrices_a), _rows_of(matrices_b), _blocks(np.asarray(seeds))
    n = int(np.sqrt(flat_a.shape[1]))
    rng = np.random.default_rng(seed)
    counts = _resample_counts(len(blocks[0]), rng, n_resamples)
    flips = rng.integers(0, 2, size=(n_resamples, len(blocks[0]))).astype(np.float64)
    observed, boot, null = [], [], []
    for block in blocks:
        a, b = flat_a[block], flat_b[block]
        observed.append(score(b.sum(0).reshape(n, n), metric) - score(a.sum(0).reshape(n, n), metric))
        boot.append(score((counts @ b).reshape(-1, n, n), metric) - score((counts @ a).reshape(-1, n, n), metric))
        shift = flips @ (b - a)
        null.append(score((b.sum(0) - shift).reshape(-1, n, n), metric)
                    - score((a.sum(0) + shift).reshape(-1, n, n), metric))
    observed = np.array(observed)
    effect, boot, null = observed.mean(), np.mean(boot, axis=0), np.mean(null, axis=0)
    low, high = _percentile_ci(boot, confidence)
    p_value = (1 + np.sum(np.abs(null) >= abs(effect) - 1e-12)) / (1 + len(null))
    return Estimate(float(effect), low, high, p_value=float(p_value), n=len(blocks[0]), seed_sd=_sd(observed),
                    per_seed=tuple(float(v) for v in observed),
                    method="per-seed score differences; images resampled / swapped alike in every seed")


# -- means and fits of per-image values ------------------------------------------------------------


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
               confidence: float, n_resamples: int) -> list[Estimate]:
    """Percentile CIs of ``statistic(summed moments) -> [k, ...]`` over resampled clusters."""
    point = statistic(moments.sum(axis=0))
    clusters, shape = len(moments), moments.shape[1:]
    if clusters < 2:
        return [Estimate(float(v), np.nan, np.nan) for v in point]
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
    return [Estimate(float(v), float(lo), float(hi)) for v, lo, hi in zip(point, ci.low, ci.high)]


def _mean(m: np.ndarray) -> np.ndarray:
    return np.stack([m[..., 0, 1] / m[..., 0, 0]])


def mean_ci(values, clusters=None, *, seed: int = 0, confidence: float = CONFIDENCE,
            n_resamples: int = N_RESAMPLES) -> Estimate:
    """Mean of ``values`` with a bootstrap CI; with ``clusters`` (e.g. image ids) whole clusters are resampled.

    The estimate is the mean over rows (with clusters, a ratio of cluster sums).
    """
    values = np.asarray(values, dtype=np.float64)
    (ci,) = _bootstrap(_cluster_moments([values], clusters), _mean, seed=seed, confidence=confidence,
                       n_resamples=n_resamples)
    shift = float(values.mean())  # the moments are centred
    return Estimate(ci.value + shift, ci.low + shift, ci.high + shift, n=len(values))


def regression(x, y, clusters=None, controls=None, *, seed: int = 0, confidence: float = CONFIDENCE,
               n_resamples: int = N_RESAMPLES) -> dict[str, Estimate]:
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
           n_resamples: int = N_RESAMPLES) -> Estimate:
    """Condition ``a`` minus ``b`` on the same images, seeds as blocks.

    Per (block, unit) the difference of ``value``; per unit its mean over blocks, D_i. Effect =
    mean D_i with a bootstrap CI over units (conditional on the trained models: the blocks are fixed);
    effect size d_z = mean / sd of D_i (from :data:`MIN_EFFECT_UNITS` units on); p-value of the
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
    seed_sd = _sd(diff.groupby(level=block).mean())
    return Estimate(ci.value, ci.low, ci.high, float(test.pvalue), _effect_size(per_unit), len(per_unit), seed_sd,
                    method=f"per-{unit} differences averaged over {block}s; bootstrap CI; sign-flip permutation test")


def _effect_size(d: np.ndarray) -> float:
    """Cohen's d_z = mean / sd of the paired differences ``d``; NaN over fewer than :data:`MIN_EFFECT_UNITS`."""
    if len(d) < MIN_EFFECT_UNITS:
        return np.nan
    with np.errstate(all="ignore"):
        return float(np.mean(d) / np.std(d, ddof=1))


def paired_seeds(a, b, *, confidence: float = CONFIDENCE) -> Estimate:
    """A dataset-level metric under conditions A and B on the same seeds (``a[i]``, ``b[i]``: seed i).

    Paired t-test over seeds (the module docstring says why): effect = mean of the per-seed differences
    A - B (``per_seed``) with its t interval, their sd (``seed_sd``), the two-sided p-value, and d_z
    from :data:`MIN_EFFECT_UNITS` seeds on. Few seeds give wide intervals, as they should.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a and b must be 1-D, of equal length >= 2, got shapes {a.shape} and {b.shape}")
    d = a - b
    with np.errstate(all="ignore"):
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(confidence)
    return Estimate(float(d.mean()), float(ci.low), float(ci.high), float(test.pvalue), _effect_size(d), len(d),
                    float(d.std(ddof=1)), tuple(float(v) for v in d), "paired t-test over seeds")


def seed_mean(values, *, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of one value per seed with its t interval over seeds (NaN with one seed), the sd and the values."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 1:
        raise ValueError(f"values must be 1-D and non-empty, got shape {values.shape}")
    mean, sd = float(values.mean()), _sd(values)
    low = high = np.nan
    if len(values) > 1:
        half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sd / np.sqrt(len(values))
        low, high = mean - half, mean + half
    return Estimate(mean, float(low), float(high), n=len(values), seed_sd=sd,
                    per_seed=tuple(float(v) for v in values), method="t interval over seeds")


def seeds_needed(mean: float, sd: float, *, confidence: float = CONFIDENCE) -> int | None:
    """The power line: the smallest n >= 2 with ``t_{(1+confidence)/2, n-1} * sd / sqrt(n) < |mean|``.

    The number of seeds at which a paired t interval over seeds would exclude 0 if the per-seed
    differences kept the measured ``mean`` and ``sd`` (a planning figure: at that n about half of the
    reruns would decide). 2 when ``sd`` is 0 and ``mean`` is not; None when ``mean`` is 0 or not finite,
    or no n up to :data:`MOST_SEEDS` does.
    """
    mean, sd = abs(float(mean)), float(sd)
    if not (np.isfinite(mean) and np.isfinite(sd)) or mean == 0:
        return None

    def decides(n: int) -> bool:  # monotone in n: t and 1/sqrt(n) both fall
        return bool(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) < mean)

    if not decides(MOST_SEEDS):
        return None
    low, high = 1, MOST_SEEDS  # decides(high), not decides(low) (n = 1 has no interval)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return high


def p_text(p: float | None, resamples: int | None = None) -> str:
    """``"p = 0.031"``; ``"p < 1/(R+1)"`` (e.g. ``"p < 1/10000"``) for a Monte Carlo p-value of ``resamples``
    draws at its floor 1/(R+1); ``"no p-value"`` for None or NaN."""
    if p is None or not np.isfinite(p):
        return "no p-value"
    if resamples and p <= (1 + 1e-9) / (resamples + 1):
        return f"p < 1/{resamples + 1}"
    return f"p = {p:.2g}"


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
