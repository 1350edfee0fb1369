"""Falsifiable tests of Eqs. 4-14 on per-image tables of measured nats (:func:`imgpix.information.audit`).

A table has one row per image, condition, seed and model (:func:`audit_frame` builds it), with
columns ``model, seed, image, condition, n, size, kept, outliers, removed, lost_fraction,
ce_unfused, ce_fused`` (and ``accuracy_fused`` for :func:`case2_loss`). ``model`` is
:data:`UNTRAINED` for a network whose outputs are uniform (an FCN with zero-initialised score
layers at step 0), where the equations are exact, or any other name for an informed (trained) one,
where they are predictions. Conditions are matched to the paper's cases by ``roles``: role -> the
exact condition name(s) that play it (default :data:`ROLES`, each role's own name; an experiment
passes the names of its conditions of each role, e.g. ``{"case1": ["case1 (m=3)", "case1 (m=5)"]}``).
Names are never parsed. Several Case 1 conditions are pooled; the oracle, Case 2 and Case 3 must be
one condition each.

Per equation, a measured per-image value y is regressed on the predicted x (k' = kept true
labels, m' = outliers, both as actually used):

====== ==================================================== ==================
Eq.    measured y (per image)                               predicted x
====== ==================================================== ==================
4      CE of P over labelled pixels (oracle rows)           log N
5      CE of P' fused with the true labels                  log n
6      nats removed by the true labels                      log(N/n)
9/10   nats removed with m' >= 1 outliers (Case 1)          log(N/(n+m'))
11/12  removed(Case 2) - removed(oracle), k' < n            log(n/k')
13/14  removed(Case 2) - removed(Case 3), same k', m' >= 1   log((m'+k')/k')
====== ==================================================== ==================

(Eqs. 9, 11 and 13 are the complements ``log|L| = log N - removed`` of 10, 12 and 14 at the
uniform limit.) Images are the resampled units of every CI (all seeds and conditions of an image
move together). Beside every fit stands a theory-free control: the in-sample R^2 of a linear fit
of y on the raw counts n, k', m' (with its free parameters it is favoured over the theory's
fixed prediction).

Verdict rule, per model: the equation *holds* when the CIs of ``ratio`` = mean y / mean x, widened
by :data:`RATIO_TOL`, contain 1 and, when x varies over images, the CIs of the slope (widened by
:data:`SLOPE_TOL`) contain 1 and of the intercept (widened by :data:`INTERCEPT_TOL` nats) contain
0. A NaN statistic never holds. Then per equation: ``holds`` when it holds on every model tested
and an informed one is among them; ``holds for an uninformed network only`` when it holds on the
untrained model and not on an informed one (or only the untrained one was tested); ``refuted``
otherwise (including a failure on the untrained model, where the equations are exact); ``not
tested`` when the table has no rows for it. A wide CI cannot refute: read the CI widths beside the
verdict.

No table holds NaN or infinity. A statistic that does not exist is None (an empty cell in Markdown)
and the row's ``note`` says why: slope, intercept and r are "not tested" where x does not vary over
images (Eq. 4's log N, Eq. 14's log((m'+k')/k') for one m and k); r where y does not vary. ``note``
also counts the images an equation leaves out, e.g. those where Case 2 equals the oracle (k >= n),
so an equation tested on few images is flagged, and says why an equation is not tested.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .. import theory as th
from ..data.common import NUM_CLASSES
from .stats import N_RESAMPLES, Estimate, mean_ci, paired, regression

UNTRAINED = "untrained"
ROLES = {"oracle": "oracle", "case1": "case1", "case2": "case2", "case3": "case3"}  # role -> its condition name(s)
COUNTS = ("n", "kept", "outliers")  # the theory-free control is a linear fit on these raw counts
SLOPE_TOL = 0.1
INTERCEPT_TOL = 0.1  # nats
RATIO_TOL = 0.1
X_SPREAD = 1e-9  # below this range of x over images there is no slope to fit
HOLDS, UNINFORMED, REFUTED, NOT_TESTED = "holds", "holds for an uninformed network only", "refuted", "not tested"
EQUATIONS = ("4", "5", "6", "9/10", "11/12", "13/14")
KEYS = ["model", "seed", "image"]


def audit_frame(result: Mapping, image=None, **columns) -> pd.DataFrame:
    """An :func:`~imgpix.information.audit` result as a table, one row per image.

    ``image``: image ids (default 0..B-1); ``columns``: constants such as ``model``, ``seed``,
    ``condition``.
    """
    frame = pd.DataFrame({key: value.detach().cpu().numpy() for key, value in result.items()})
    frame.insert(0, "image", np.arange(len(frame)) if image is None else np.asarray(image))
    for name, value in reversed(columns.items()):
        frame.insert(0, name, value)
    return frame


def _rows(table: pd.DataFrame, conditions) -> pd.DataFrame:
    names = [conditions] if isinstance(conditions, str) else list(conditions)
    return table[table["condition"].isin(names)]


def _role(table: pd.DataFrame, roles: Mapping, role: str, single: bool = True) -> pd.DataFrame:
    """The rows of the conditions ``roles[role]`` names (one name or several); ``single``: at most one of
    them in the table."""
    rows = _rows(table, roles.get(role, ()))
    if single and rows["condition"].nunique() > 1:
        raise ValueError(f"role {role!r} is played by several conditions {sorted(rows.condition.unique())}; "
                         "pass roles= naming one")
    return rows


def _pairs(rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Rows joined to the reference condition's row of the same model, seed and image (suffix ``_ref``)."""
    return rows.merge(reference, on=KEYS, suffixes=("", "_ref"), validate="one_to_one")


def _lost_nats(n, kept) -> np.ndarray:
    """Eq. 12 per image, ``log(n/k')``; 0 where every true label is kept."""
    n, kept = np.asarray(n), np.asarray(kept)
    out = np.zeros(len(n))
    out[kept < n] = th.case2_lost(n[kept < n], kept[kept < n])
    return out


def _equation_data(table: pd.DataFrame, N: int, roles: Mapping) -> dict[str, tuple]:
    """Per equation: (what is tested, the predicted form, rows with measured ``y`` and predicted ``x``,
    the candidate rows, why candidates are left out, what a missing candidate means)."""
    oracle, case2 = _role(table, roles, "oracle"), _role(table, roles, "case2")
    case1 = _role(table, roles, "case1", single=False)
    pairs2 = _pairs(case2, oracle)
    pairs3 = _pairs(_role(table, roles, "case3"), case2)
    lost = pairs2.query("kept < n and outliers == 0")
    outl = pairs3.query("outliers >= 1 and kept == kept_ref and outliers_ref == 0")
    ones = case1.query("kept == n and outliers >= 1")

    def data(rows, y, x):
        rows = rows.assign(y=y).dropna(subset=["y"])
        return rows.assign(x=x(rows))

    no_pixel = "no labelled pixel whose true class is kept"
    return {
        "4": ("CE of the unfused prediction, oracle rows", "log N",
              data(oracle, oracle.ce_unfused, lambda r: th.self_information(N)), oracle, no_pixel, "no oracle rows"),
        "5": ("CE of the prediction fused with the true labels", "log n",
              data(oracle, oracle.ce_fused, lambda r: th.valid_information(r.n)), oracle, no_pixel, "no oracle rows"),
        "6": ("nats removed by the true labels", "log(N/n)",
              data(oracle, oracle.removed, lambda r: th.removed_information(N, r.n)), oracle, no_pixel,
              "no oracle rows"),
        "9/10": ("nats removed by labels with m' outliers (Case 1)", "log(N/(n+m'))",
                 data(ones, ones.removed, lambda r: th.case1_removed(N, r.n, r.outliers)), case1,
                 "Case 1 added no outlier (m' = 0)", "no Case 1 rows"),
        "11/12": ("extra nats removed keeping k' < n true labels (Case 2 - oracle)", "log(n/k')",
                  data(lost, lost.removed - lost.removed_ref, lambda r: th.case2_lost(r.n, r.kept)), pairs2,
                  "Case 2 equals the oracle: k >= n, every true label kept", "no Case 2 rows beside oracle rows"),
        "13/14": ("nats m' outliers leave in (Case 2 - Case 3, same k')", "log((m'+k')/k')",
                  data(outl, outl.removed_ref - outl.removed, lambda r: th.case3_outlier(r.outliers, r.kept)), pairs3,
                  "Case 3 added no outlier to Case 2's kept labels", "no Case 3 rows beside Case 2 rows"),
    }


def _coverage(rows: pd.DataFrame, candidates: pd.DataFrame, why: str) -> str:
    """``"k of K images left out: why"`` when the fit uses fewer images than it could, else ``""``."""
    total = candidates["image"].nunique()
    left = total - rows["image"].nunique()
    if left == total:
        return f"{NOT_TESTED}: all {total} images left out ({why})"
    return f"{left} of {total} images left out ({why})" if left else ""


def _flat(fit: Mapping[str, Estimate | None]) -> dict:
    out = {}
    for name, interval in fit.items():
        value, low, high = (None, None, None) if interval is None else interval
        out.update({name: value, f"{name}_low": low, f"{name}_high": high})
    return out


def _fit(rows: pd.DataFrame, x, y, *, seed: int, n_resamples: int) -> dict[str, Estimate]:
    return regression(x, y, rows["image"], rows[list(COUNTS)], seed=seed, n_resamples=n_resamples)


def _line(fit: dict[str, Estimate], x, y, x_name: str = "x", y_name: str = "y") -> tuple[dict, list[str]]:
    """``fit`` with slope, intercept and r set to None (not tested) when ``x`` does not vary over the
    rows, and r to None when ``y`` does not; r clipped to [-1, 1]; and the notes saying so."""
    fit, notes = dict(fit), []
    if np.ptp(np.asarray(x, dtype=np.float64)) <= X_SPREAD:
        fit.update(dict.fromkeys(("slope", "intercept", "r")))
        notes.append(f"{NOT_TESTED}: {x_name} does not vary (no slope, intercept or r)")
    elif np.ptp(np.asarray(y, dtype=np.float64)) <= X_SPREAD:
        fit["r"] = None
        notes.append(f"no r: {y_name} does not vary")
    if fit["r"] is not None:
        fit["r"] = Estimate(*np.clip(fit["r"], -1.0, 1.0))
    return fit, notes


def _finite(record: dict, notes: list[str]) -> dict:
    """``record`` with every NaN or infinite number set to None and ``note`` (the ``notes`` and the
    names of the numbers so set, when the notes did not explain them already)."""
    out, bad = {}, []
    for key, value in record.items():
        number = isinstance(value, (float, np.floating)) and not isinstance(value, bool)
        if number and not np.isfinite(value):
            bad.append(key)
            value = None
        out[key] = value
    if bad:
        notes = [*notes, f"no value ({', '.join(bad)}): too few images or no variance"]
    return {**out, "note": "; ".join(notes)}


def _nan_free(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns holding a missing value as objects with None, so that no table prints ``nan``."""
    for column in frame.columns[frame.isna().any()]:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _within(interval: Estimate, target: float, tolerance: float) -> bool:
    return bool(interval.low - tolerance <= target <= interval.high + tolerance)  # False for NaN


def _holds(fit: Mapping[str, Estimate], x_varies: bool) -> bool:
    ok = _within(fit["ratio"], 1.0, RATIO_TOL)
    if x_varies:
        ok = ok and _within(fit["slope"], 1.0, SLOPE_TOL) and _within(fit["intercept"], 0.0, INTERCEPT_TOL)
    return ok


def equation_tests(table: pd.DataFrame, N: int = NUM_CLASSES, *, roles: Mapping = ROLES, seed: int = 0,
                   n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per (equation, model): y regressed on x per image, with bootstrap CIs and the control.

    Columns: ``equation, tested, theory_form, model, images, rows, measured(_low/_high)`` (mean y),
    ``theory`` (mean x), ``slope, intercept, r, ratio, r2_control`` each with ``_low/_high``,
    ``x_varies``, ``holds`` (the rule of the module docstring) and ``note``. Rows whose measurement
    is NaN (an image with no kept pixel) are dropped. No number is NaN or infinite: where x does not
    vary, slope, intercept and r are None ("not tested"), as is r where y does not vary; ``note``
    says so, and how many images an equation left out and why (e.g. Case 2 equal to the oracle where
    k >= n). A model with no usable row gets ``rows`` 0, ``holds`` None and the reason in ``note``
    (``model`` None when the table has no candidate row at all).
    """
    records = []
    for equation, (tested, form, data, candidates, why, missing) in _equation_data(table, N, roles).items():
        head = {"equation": equation, "tested": tested, "theory_form": form}
        if candidates.empty:
            records.append({**head, "model": None, "images": 0, "rows": 0, "holds": None,
                            "note": f"{NOT_TESTED}: {missing}"})
        for model in candidates["model"].unique():
            rows = data[data.model == model]
            coverage = _coverage(rows, candidates[candidates.model == model], why)
            if rows.empty:
                records.append({**head, "model": model, "images": 0, "rows": 0, "holds": None, "note": coverage})
                continue
            fit, notes = _line(_fit(rows, rows.x, rows.y, seed=seed, n_resamples=n_resamples), rows.x, rows.y)
            measured = mean_ci(rows.y, rows.image, seed=seed, n_resamples=n_resamples)
            x_varies = bool(np.ptp(rows.x) > X_SPREAD)
            records.append(_finite({**head, "model": model, "images": rows.image.nunique(), "rows": len(rows),
                                    **_flat({"measured": measured}), "theory": float(rows.x.mean()), **_flat(fit),
                                    "x_varies": x_varies, "holds": _holds(fit, x_varies)},
                                   [coverage] * bool(coverage) + notes))
    return _nan_free(pd.DataFrame(records))


def _verdict(holds_untrained: bool | None, holds_informed: bool | None) -> str:
    if holds_untrained is False:
        return REFUTED
    if holds_informed:
        return HOLDS
    return UNINFORMED if holds_untrained else REFUTED


def verdicts(table: pd.DataFrame, N: int = NUM_CLASSES, *, roles: Mapping = ROLES, seed: int = 0,
             n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per equation (4, 5, 6, 9/10, 11/12, 13/14) with its verdict, from :func:`equation_tests`.

    Columns: ``equation, tested, theory_form``, then the first informed model's numbers (else the
    untrained one's): ``model, measured, ci_low, ci_high`` (mean measured nats and its CI),
    ``theory`` (mean predicted nats), ``ratio, slope, intercept`` with ``_low/_high``, ``r,
    r2_control, images``; ``holds_untrained`` / ``holds_informed`` (all informed models; None when
    not tested), ``holds_by_model``, ``verdict`` and ``note`` (that model's note from
    :func:`equation_tests`, or why the equation is not tested). Never NaN or infinite: a number
    that does not exist (e.g. a slope where x does not vary) is None, an empty cell in Markdown.
    """
    tests = equation_tests(table, N=N, roles=roles, seed=seed, n_resamples=n_resamples)
    columns = ["tested", "theory_form", "model", "measured", "measured_low", "measured_high", "theory",
               "ratio", "ratio_low", "ratio_high", "slope", "slope_low", "slope_high",
               "intercept", "intercept_low", "intercept_high", "r", "r2_control", "images"]
    records = []
    for equation in EQUATIONS:
        group = tests[tests["equation"] == equation] if len(tests) else tests
        done = group[group["rows"] > 0] if len(group) else group
        if done.empty:
            head = group.iloc[0][["tested", "theory_form"]].to_dict() if len(group) else {}
            notes = [note for note in group.get("note", []) if note]
            records.append({"equation": equation, **head, "holds_untrained": None, "holds_informed": None,
                            "holds_by_model": "", "verdict": NOT_TESTED,
                            "note": "; ".join(notes) or f"{NOT_TESTED}: the table has no rows for it"})
            continue
        untrained, informed = done[done.model == UNTRAINED], done[done.model != UNTRAINED]
        holds_u = bool(untrained.holds.all()) if len(untrained) else None
        holds_i = bool(informed.holds.all()) if len(informed) else None
        shown = (informed if len(informed) else untrained).iloc[0]
        by_model = ", ".join(f"{m}: {'not tested' if h is None else 'yes' if h else 'no'}"
                             for m, h in zip(group.model, group.holds))
        records.append({"equation": equation, **shown[columns].to_dict(), "holds_untrained": holds_u,
                        "holds_informed": holds_i, "holds_by_model": by_model, "verdict": _verdict(holds_u, holds_i),
                        "note": shown["note"]})
    out = pd.DataFrame(records, columns=["equation", *columns, "holds_untrained", "holds_informed", "holds_by_model",
                                         "verdict", "note"])
    return _nan_free(out.rename(columns={"measured_low": "ci_low", "measured_high": "ci_high"}))


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
        fit, notes = _line(_fit(rows, x, rows.removed, seed=seed, n_resamples=n_resamples), x, rows.removed,
                           "log(N/|L|)", "removed")
        ratio = fit["ratio"]
        records.append(_finite({**dict(zip(by, key)), "images": rows.image.nunique(),
                                "measured": float(rows.removed.mean()), "theory": float(np.mean(x)), **_flat(fit),
                                **_flat({"absorbed": Estimate(1 - ratio.value, 1 - ratio.high, 1 - ratio.low)})},
                               notes))
    return _nan_free(pd.DataFrame(records))


def count_sufficiency(table: pd.DataFrame, a: str, b: str, *, value: str = "removed", seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Eqs. 10/14 say the damage depends only on (n, m', k'): condition ``a`` vs ``b``, same counts.

    ``a`` and ``b`` are two corruption processes (e.g. outliers drawn from confusable vs from
    unrelated classes) giving every image the same counts; the theory predicts a difference of 0.
    Per model: the paired difference a - b of ``value`` (:func:`imgpix.experiments.stats.paired`,
    seeds as blocks) with its CI, effect size and p. Raises ``ValueError`` if a pair's counts differ.
    """
    pairs = _pairs(_rows(table, a), _rows(table, b))
    if len(pairs) == 0:
        raise ValueError(f"no image has both conditions {a!r} and {b!r}")
    for count in COUNTS:
        if (pairs[count] != pairs[f"{count}_ref"]).any():
            raise ValueError(f"conditions {a!r} and {b!r} give some image different {count!r}; "
                             "count sufficiency compares label sets with equal counts")
    records = []
    for model, rows in _rows(table, [a, b]).groupby("model", sort=False):
        test = paired(rows, value, a, b, seed=seed, n_resamples=n_resamples)
        records.append({"model": model, "a": a, "b": b, "value": value, "theory": 0.0,
                        "mean_a": float(_rows(rows, a)[value].mean()), "mean_b": float(_rows(rows, b)[value].mean()),
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
    pairs = _pairs(_role(table, roles, "case2"), _role(table, roles, "oracle"))
    pairs = pairs.assign(pa_drop=pairs[f"{accuracy}_ref"] - pairs[accuracy], lost_nats=_lost_nats(pairs.n, pairs.kept))
    for model, rows in pairs.dropna(subset=["pa_drop", "lost_fraction"]).groupby("model", sort=False):
        kw = {"seed": seed, "n_resamples": n_resamples}
        by_fraction, notes = _line(_fit(rows, rows.lost_fraction, rows.pa_drop, **kw), rows.lost_fraction,
                                   rows.pa_drop, "lost_fraction", "pa_drop")
        by_nats, more = _line(_fit(rows, rows.lost_nats, rows.pa_drop, **kw), rows.lost_nats, rows.pa_drop,
                              "log(n/k')", "pa_drop")
        equal, images = rows[rows.kept >= rows.n].image.nunique(), rows.image.nunique()
        if equal:
            notes.insert(0, f"Case 2 equals the oracle on {equal} of {images} images (k >= n: every true label kept)")
        records.append(_finite({"model": model, "images": images, "oracle_images": equal,
                                **_flat({"lost_fraction": mean_ci(rows.lost_fraction, rows.image, **kw),
                                         "pa_drop": mean_ci(rows.pa_drop, rows.image, **kw)}),
                                "lost_nats": float(rows.lost_nats.mean()),
                                **_flat({"r_fraction": by_fraction["r"], "slope_fraction": by_fraction["slope"],
                                         "r_nats": by_nats["r"], "r2_control": by_nats["r2_control"]})},
                               list(dict.fromkeys(notes + more))))
    return _nan_free(pd.DataFrame(records))
