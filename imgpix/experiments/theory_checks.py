"""Further tests of the theory on the per-image tables of :mod:`imgpix.experiments.theory_tests`.

:func:`removal_regression` (Eqs. 6/10 per model and condition), :func:`count_sufficiency` (Eqs. 10/14: the
damage depends on the counts alone) and :func:`case2_loss` (Eq. 12 beside the accuracy Case 2 costs). CIs
resample images, as there; no table holds NaN or infinity.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .. import theory as th
from ..data.common import NUM_CLASSES
from .stats import N_RESAMPLES, Estimate, mean_ci, paired
from .theory_tests import (
    COUNTS,
    ROLES,
    finite_record,
    fit_line,
    flat,
    nan_free,
    of_conditions,
    of_role,
    paired_rows,
)


def _lost_nats(n, kept) -> np.ndarray:
    """Eq. 12 per image, ``log(n/k')``; 0 where every true label is kept."""
    n, kept = np.asarray(n), np.asarray(kept)
    out = np.zeros(len(n))
    out[kept < n] = th.case2_lost(n[kept < n], kept[kept < n])
    return out


def removal_regression(table: pd.DataFrame, N: int = NUM_CLASSES, *, by=("model", "condition"), seed: int = 0,
                       n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Eqs. 6/10 per group ``by``: measured ``removed`` against ``log(N/|L|)`` per image.

    ``log(N/|L|)`` is what a uniform prediction loses to any label set L: Eq. 6 for the true
    labels, Eq. 10 with |L| = n + m' for Case 1. Columns: ``*by, images, measured, theory``, the
    fit (``slope, intercept, r, ratio, r2_control`` with ``_low/_high``), ``absorbed`` = 1 -
    ratio with its CI: the share of the predicted nats an informed network had already learned,
    and ``note``. Numbers that do not exist (slope where |L| does not vary) are None, never NaN.
    """
    records = []
    for key, rows in table.dropna(subset=["removed"]).groupby(list(by), sort=False):
        x = th.removed_information(N, rows["size"])
        fit, notes = fit_line(rows, x, rows.removed, "log(N/|L|)", "removed", seed=seed, n_resamples=n_resamples)
        ratio = fit["ratio"]
        records.append(finite_record({**dict(zip(by, key)), "images": rows.image.nunique(),
                                      "measured": float(rows.removed.mean()), "theory": float(np.mean(x)),
                                      **flat(fit),
                                      **flat({"absorbed": Estimate(1 - ratio.value, 1 - ratio.high, 1 - ratio.low)})},
                                     notes))
    return nan_free(pd.DataFrame(records))


def count_sufficiency(table: pd.DataFrame, a: str, b: str, *, value: str = "removed", seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Eqs. 10/14 say the damage depends only on (n, m', k'): condition ``a`` vs ``b``, same counts.

    ``a`` and ``b`` are two corruption processes (e.g. outliers drawn from confusable vs from
    unrelated classes) giving every image the same counts; the theory predicts a difference of 0.
    Per model: the paired difference a - b of ``value`` (:func:`imgpix.experiments.stats.paired`,
    seeds as blocks) with its CI, effect size and p. Raises ``ValueError`` if a pair's counts differ.
    """
    pairs = paired_rows(of_conditions(table, a), of_conditions(table, b))
    if len(pairs) == 0:
        raise ValueError(f"no image has both conditions {a!r} and {b!r}")
    for count in COUNTS:
        if (pairs[count] != pairs[f"{count}_ref"]).any():
            raise ValueError(f"conditions {a!r} and {b!r} give some image different {count!r}; "
                             "count sufficiency compares label sets with equal counts")
    records = []
    for model, rows in of_conditions(table, [a, b]).groupby("model", sort=False):
        test = paired(rows, value, a, b, seed=seed, n_resamples=n_resamples)
        records.append({"model": model, "a": a, "b": b, "value": value, "theory": 0.0,
                        "mean_a": float(of_conditions(rows, a)[value].mean()),
                        "mean_b": float(of_conditions(rows, b)[value].mean()),
                        "effect": test.value, "effect_low": test.low, "effect_high": test.high,
                        "effect_size": test.effect_size, "p_value": test.p_value, "images": test.n,
                        "seed_sd": test.seed_sd})
    return pd.DataFrame(records)


def case2_loss(table: pd.DataFrame, *, roles: Mapping = ROLES, accuracy: str = "accuracy_fused", seed: int = 0,
               n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Eq. 12 beside what Case 2 costs: per model, lost_fraction, the PA drop and log(n/k') per image.

    PA drop = ``accuracy`` (oracle) - ``accuracy`` (Case 2), a fraction like ``lost_fraction``.
    Columns: ``model, images``, means with CIs of ``lost_fraction`` and ``pa_drop``, ``lost_nats``
    (mean log(n/k'), Eq. 12), the correlations of the PA drop with lost_fraction (``r_fraction``)
    and with log(n/k') (``r_nats``), slope of PA drop on lost_fraction, and the control's R^2
    (PA drop on the raw counts n, k', m'), each with ``_low/_high``; ``oracle_images``, the images
    where Case 2 equals the oracle (k >= n: nothing lost), and ``note``. Never NaN or infinite: a
    correlation or slope whose x or y does not vary (e.g. Case 2 equal to the oracle on every
    image) is None, and ``note`` says why.
    """
    records = []
    pairs = paired_rows(of_role(table, roles, "case2"), of_role(table, roles, "oracle"))
    pairs = pairs.assign(pa_drop=pairs[f"{accuracy}_ref"] - pairs[accuracy], lost_nats=_lost_nats(pairs.n, pairs.kept))
    for model, rows in pairs.dropna(subset=["pa_drop", "lost_fraction"]).groupby("model", sort=False):
        kw = {"seed": seed, "n_resamples": n_resamples}
        by_fraction, notes = fit_line(rows, rows.lost_fraction, rows.pa_drop, "lost_fraction", "pa_drop", **kw)
        by_nats, more = fit_line(rows, rows.lost_nats, rows.pa_drop, "log(n/k')", "pa_drop", **kw)
        equal, images = rows[rows.kept >= rows.n].image.nunique(), rows.image.nunique()
        if equal:
            notes.insert(0, f"Case 2 equals the oracle on {equal} of {images} images (k >= n: every true label kept)")
        records.append(finite_record({"model": model, "images": images, "oracle_images": equal,
                                      **flat({"lost_fraction": mean_ci(rows.lost_fraction, rows.image, **kw),
                                              "pa_drop": mean_ci(rows.pa_drop, rows.image, **kw)}),
                                      "lost_nats": float(rows.lost_nats.mean()),
                                      **flat({"r_fraction": by_fraction["r"], "slope_fraction": by_fraction["slope"],
                                              "r_nats": by_nats["r"], "r2_control": by_nats["r2_control"]})},
                                     list(dict.fromkeys(notes + more))))
    return nan_free(pd.DataFrame(records))
