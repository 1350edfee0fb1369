"""Falsifiable tests of Eqs. 4-14 on per-image tables of measured nats (:func:`imgpix.information.audit`).

A table has one row per image, condition, seed and model (:func:`audit_frame` builds it), with
columns ``model, seed, image, condition, n, size, kept, outliers, removed, lost_fraction,
ce_unfused, ce_fused``, and where the audit measures them ``removed_mass`` (per image, the mean over
its labelled pixels of ``1 - sum_{c in L} P_c``: the mass the network puts on the classes the labels
remove) and ``removed_truth`` (the nats the *true* labels remove, over the pixels this condition
keeps), plus ``accuracy_fused`` for :func:`~imgpix.experiments.theory_checks.case2_loss`. ``model`` is
:data:`UNTRAINED` for a network whose outputs are uniform (an FCN with zero-initialised score layers at
step 0), where every equation is an identity of algebra, or any other name for a trained network, where
the equations are predictions. Conditions are matched to the paper's cases by ``roles``: role -> the exact condition
name(s) that play it (default :data:`ROLES`; an experiment passes the names of its conditions of each
role, e.g. ``{"case1": ["case1 (m=3)", "case1 (m=5)"]}``). Names are never parsed. Several Case 1
conditions are pooled; the oracle, Case 2 and Case 3 must be one condition each.

Per equation, a measured per-image value y is set against the predicted x (k' = kept true labels,
m' = outliers, both as actually used):

========== ================================================================ ==================
test       measured y (per image)                                           predicted x
========== ================================================================ ==================
assumption mass on the classes the true labels remove, ``removed_mass``     (N - n)/N
4          CE of P over labelled pixels (oracle rows)                        log N
5          CE of P' fused with the true labels                               log n
6          nats removed by the true labels                                   log(N/n)
6 vs n     the same, against n: "more is removed when n is small"           slope < 0
9/10       nats removed with m' >= 1 outliers (Case 1)                       log(N/(n+m'))
11/12      Case 2's removed - ``removed_truth``, on the pixels Case 2 keeps  log(n/k')
13/14      removed(Case 2) - removed(Case 3), same k' (same pixels)          log((m'+k')/k')
========== ================================================================ ==================

The assumption is the theory's whole content for a trained network: Eqs. 6-14 follow from "the network
spreads its mass evenly", i.e. puts (N - |L|)/N on the classes L removes. Eqs. 11/12 compare Case 2
with the oracle on the same pixels (those Case 2 keeps), where the per-pixel difference
``log(sum_{c in truth} P_c / sum_{c in L} P_c)`` is never negative; Eqs. 13/14 compare Case 2 and Case 3,
which keep the same pixels. Images are the resampled units of every CI (all seeds and conditions of
an image move together): the intervals describe the trained networks, not retraining. Beside every
fit stands a theory-free control: the in-sample R^2 of a linear fit of y on the raw counts n, k', m'.

**Verdicts**, per equation and model, follow the rules of :mod:`imgpix.experiments.verdicts` (bands of
equivalence around the prediction; "6 vs n" a direction). An equation whose x takes one value on every
image (Eq. 13/14 with one m and k) is *not testable in this design*; Eqs. 4 and 5 are *not testable here*
for a trained network: they are a pixel label's information under a uniform prior (log N, log n), not a
property of a network's cross-entropy; only their difference (Eq. 6) predicts what labels remove from a
network. The untrained network is an *identity check* of the measurement (it passes by algebra, see
tests/test_theory_tests.py), never evidence for the theory. :func:`verdicts` puts each equation's model
verdicts in words, e.g. "refuted for trained networks". Further tests on the same tables (removal
regression, count sufficiency, Case 2's accuracy cost): :mod:`imgpix.experiments.theory_checks`.

No table holds NaN or infinity. A statistic that does not exist is None (an empty cell in Markdown)
and the row's ``note`` says why, counts the images an equation leaves out (e.g. those where Case 2
equals the oracle, k >= n) and says why an equation is not tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from .. import theory as th
from ..data.common import NUM_CLASSES
from .stats import N_RESAMPLES, Estimate, mean_ci, regression
from .verdicts import (
    HOLDS,
    IDENTITY_FAILS,
    IDENTITY_PASSES,
    NOT_IN_DESIGN,
    NOT_TESTABLE,
    NOT_TESTED,
    decide,
    in_words,
    reasons,
)

UNTRAINED = "untrained"
ROLES = {"oracle": "oracle", "case1": "case1", "case2": "case2", "case3": "case3"}  # role -> its condition name(s)
COUNTS = ("n", "kept", "outliers")  # the theory-free control is a linear fit on these raw counts
X_SPREAD = 1e-9  # below this range of x over images there is no slope to fit
EQUATIONS = ("assumption", "4", "5", "6", "6 vs n", "9/10", "11/12", "13/14")
PRIOR_ONLY = ("4", "5")
PRIOR_REASON = ("a pixel label's information under a uniform prior (log N, log n), not a property of a network's "
                "cross-entropy (only their difference, Eq. 6, predicts what labels remove from a network)")
KEYS = ["model", "seed", "image"]
COUNT_NAMES = {"n": "n", "kept": "k'", "outliers": "m'"}


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


def of_conditions(table: pd.DataFrame, conditions) -> pd.DataFrame:
    """The rows of ``conditions`` (one name or several)."""
    names = [conditions] if isinstance(conditions, str) else list(conditions)
    return table[table["condition"].isin(names)]


def of_role(table: pd.DataFrame, roles: Mapping, role: str, single: bool = True) -> pd.DataFrame:
    """The rows of the conditions ``roles[role]`` names (one name or several); ``single``: at most one of
    them in the table."""
    rows = of_conditions(table, roles.get(role, ()))
    if single and rows["condition"].nunique() > 1:
        raise ValueError(f"role {role!r} is played by several conditions {sorted(rows.condition.unique())}; "
                         "pass roles= naming one")
    return rows


def paired_rows(rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Rows joined to the reference condition's row of the same model, seed and image (suffix ``_ref``)."""
    return rows.merge(reference, on=KEYS, suffixes=("", "_ref"), validate="one_to_one")


def flat(fit: Mapping[str, Estimate | None]) -> dict:
    """Estimates as columns ``name, name_low, name_high`` (None where an estimate does not exist)."""
    out = {}
    for name, interval in fit.items():
        value, low, high = (None, None, None) if interval is None else interval
        out.update({name: value, f"{name}_low": low, f"{name}_high": high})
    return out


def fit_line(rows: pd.DataFrame, x, y, x_name: str = "x", y_name: str = "y", *, seed: int,
             n_resamples: int) -> tuple[dict, list[str]]:
    """:func:`~imgpix.experiments.stats.regression` of ``y`` on ``x`` over ``rows`` (images resampled, the
    control on :data:`COUNTS`), with slope, intercept and r set to None (not tested) when ``x`` does not
    vary, and r to None when ``y`` does not; r clipped to [-1, 1]; and the notes saying so."""
    fit = regression(x, y, rows["image"], rows[list(COUNTS)], seed=seed, n_resamples=n_resamples)
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


def finite_record(record: dict, notes: list[str]) -> dict:
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


def nan_free(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns holding a missing value as objects with None, so that no table prints ``nan``."""
    for column in frame.columns[frame.isna().any()]:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


@dataclass(frozen=True)
class Spec:
    """One test: what is measured, the predicted form, the rows with ``y`` (measured) and ``x`` (predicted),
    the candidate rows, why candidates are left out, why the test is absent (no candidates, or a column the
    records lack: ``absent``), the counts x depends on, and the rule (``equivalence`` or ``direction``)."""

    tested: str
    form: str
    data: pd.DataFrame
    candidates: pd.DataFrame
    why: str
    missing: str
    counts: tuple[str, ...] = ()
    rule: str = "equivalence"
    absent: str = ""


def _column(table: pd.DataFrame, name: str) -> str:
    """"" when ``table`` has column ``name``, else why a test that needs it is not run."""
    return "" if name in table else (f"the per-image records have no {name!r} column (the information audit of "
                                     "this run does not measure it)")


def _specs(table: pd.DataFrame, N: int, roles: Mapping) -> dict[str, Spec]:
    """Every test of :data:`EQUATIONS` on ``table``."""
    oracle, case2 = of_role(table, roles, "oracle"), of_role(table, roles, "case2")
    case1 = of_role(table, roles, "case1", single=False)
    pairs3 = paired_rows(of_role(table, roles, "case3"), case2)
    lost = case2.query("kept < n and outliers == 0")
    outl = pairs3.query("outliers >= 1 and kept == kept_ref and outliers_ref == 0")
    ones = case1.query("kept == n and outliers >= 1")

    def data(rows, y, x):
        rows = rows.assign(y=y).dropna(subset=["y"])
        return rows.assign(x=x(rows))

    def measured(rows, column):  # the column, or NaN (no row) when the records lack it
        return rows[column] if column in rows else np.nan

    no_pixel, no_oracle = "no labelled pixel whose true class is kept", "no oracle rows"
    return {
        "assumption": Spec("mass on the classes the true labels remove (the theory's assumption)", "(N-n)/N",
                           data(oracle, measured(oracle, "removed_mass"), lambda r: (N - r["size"]) / N), oracle,
                           "no labelled pixel", no_oracle, ("n",), absent=_column(table, "removed_mass")),
        "4": Spec("CE of the unfused prediction, oracle rows", "log N",
                  data(oracle, oracle.ce_unfused, lambda r: th.self_information(N)), oracle, no_pixel, no_oracle),
        "5": Spec("CE of the prediction fused with the true labels", "log n",
                  data(oracle, oracle.ce_fused, lambda r: th.valid_information(r.n)), oracle, no_pixel, no_oracle,
                  ("n",)),
        "6": Spec("nats removed by the true labels", "log(N/n)",
                  data(oracle, oracle.removed, lambda r: th.removed_information(N, r.n)), oracle, no_pixel, no_oracle,
                  ("n",)),
        "6 vs n": Spec("nats removed by the true labels against n: more removed when n is small", "slope < 0",
                       data(oracle, oracle.removed, lambda r: r.n.astype(np.float64)), oracle, no_pixel, no_oracle,
                       ("n",), rule="direction"),
        "9/10": Spec("nats removed by labels with m' outliers (Case 1)", "log(N/(n+m'))",
                     data(ones, ones.removed, lambda r: th.case1_removed(N, r.n, r.outliers)), case1,
                     "Case 1 added no outlier (m' = 0)", "no Case 1 rows", ("n", "outliers")),
        "11/12": Spec("extra nats Case 2 removes on the pixels it keeps (Case 2 - oracle, same pixels)", "log(n/k')",
                      data(lost, lost.removed - measured(lost, "removed_truth"),
                           lambda r: th.case2_lost(r.n, r.kept)), case2,
                      "Case 2 equals the oracle: k >= n, every true label kept", "no Case 2 rows", ("n", "kept"),
                      absent=_column(table, "removed_truth")),
        "13/14": Spec("nats m' outliers leave in (Case 2 - Case 3, same k', same pixels)", "log((m'+k')/k')",
                      data(outl, outl.removed_ref - outl.removed, lambda r: th.case3_outlier(r.outliers, r.kept)),
                      pairs3, "Case 3 added no outlier to Case 2's kept labels", "no Case 3 rows beside Case 2 rows",
                      ("outliers", "kept")),
    }


def _coverage(rows: pd.DataFrame, candidates: pd.DataFrame, why: str) -> str:
    """``"k of K images left out: why"`` when the fit uses fewer images than it could, else ``""``."""
    total = candidates["image"].nunique()
    left = total - rows["image"].nunique()
    if left == total:
        return f"{NOT_TESTED}: all {total} images left out ({why})"
    return f"{left} of {total} images left out ({why})" if left else ""


def _one_value(spec: Spec, rows: pd.DataFrame) -> str:
    """Why x takes one value, in words: the counts that do not vary and x's value."""
    fixed = [f"{COUNT_NAMES[c]} = {int(rows[c].iloc[0])}" for c in spec.counts if rows[c].nunique() == 1]
    on = f" ({', '.join(fixed)} on every image)" if fixed else ""
    return (f"{NOT_IN_DESIGN}: {spec.form} takes one value, {float(rows.x.iloc[0]):.3g}, on every image{on}, so "
            "its dependence on the counts cannot be tested (the measured mean is shown)")


def _verdict(key: str, spec: Spec, model: str, fit: Mapping[str, Estimate], rows: pd.DataFrame,
             x_varies: bool) -> tuple[str, str]:
    """The model's verdict on test ``key`` and, where it is not a decision, why."""
    decided = decide(spec.rule, fit, x_varies)
    if model == UNTRAINED:
        return (IDENTITY_PASSES if decided == HOLDS else IDENTITY_FAILS), ""
    if key in PRIOR_ONLY:
        return NOT_TESTABLE, f"{NOT_TESTABLE}: Eqs. 4 and 5 give {PRIOR_REASON}"
    if not x_varies:
        return NOT_IN_DESIGN, _one_value(spec, rows)
    return decided, ""


def equation_tests(table: pd.DataFrame, N: int = NUM_CLASSES, *, roles: Mapping = ROLES, seed: int = 0,
                   n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per (test of :data:`EQUATIONS`, model): y against x per image, with bootstrap CIs over images,
    the control and the model's verdict.

    Columns: ``equation, tested, theory_form, model, images, rows, measured(_low/_high)`` (mean y),
    ``theory`` (mean predicted nats), ``slope, intercept, r, ratio, r2_control`` each with ``_low/_high``,
    ``theory_slope`` (1, or for "6 vs n" the slope of log(N/n) on n over the same images), ``x_varies``,
    ``verdict`` (by :func:`~imgpix.experiments.verdicts.decide`) and ``note``. Rows whose measurement is NaN
    (an image with no kept pixel) are dropped. No number is NaN or infinite: a statistic that does not exist is None and
    ``note`` says why, and how many images a test left out and why. A model with no usable row gets
    ``rows`` 0, verdict ``not tested`` and the reason in ``note`` (``model`` None when the table has no
    candidate row at all).
    """
    records = []
    for key, spec in _specs(table, N, roles).items():
        head = {"equation": key, "tested": spec.tested, "theory_form": spec.form}
        if spec.candidates.empty or spec.absent:
            records.append({**head, "model": None, "images": 0, "rows": 0, "verdict": NOT_TESTED,
                            "note": f"{NOT_TESTED}: {spec.absent or spec.missing}"})
            continue
        for model in spec.candidates["model"].unique():
            rows = spec.data[spec.data.model == model]
            coverage = _coverage(rows, spec.candidates[spec.candidates.model == model], spec.why)
            if rows.empty:
                records.append({**head, "model": model, "images": 0, "rows": 0, "verdict": NOT_TESTED,
                                "note": coverage})
                continue
            fit, notes = fit_line(rows, rows.x, rows.y, seed=seed, n_resamples=n_resamples)
            predicted = rows.x
            if spec.rule == "direction":  # x is n: the prediction is Eq. 6's log(N/n), its slope on n the theory's
                predicted = th.removed_information(N, rows.n)
                fit["ratio"] = fit["intercept"] = None
                theory_slope = np.polyfit(rows.x, predicted, 1)[0] if fit["slope"] is not None else None
            else:
                theory_slope = 1.0
            x_varies = bool(np.ptp(rows.x) > X_SPREAD)
            verdict, why = _verdict(key, spec, model, fit, rows, x_varies)
            if why:  # the verdict's reason replaces the bare "x does not vary"
                notes = [why] + [n for n in notes if not n.startswith(f"{NOT_TESTED}: x does not vary")]
            measured = mean_ci(rows.y, rows.image, seed=seed, n_resamples=n_resamples)
            records.append(finite_record({**head, "model": model, "images": rows.image.nunique(), "rows": len(rows),
                                          **flat({"measured": measured}), "theory": float(np.mean(predicted)),
                                          **flat(fit), "theory_slope": theory_slope, "x_varies": x_varies,
                                          "verdict": verdict}, [coverage] * bool(coverage) + notes))
    return nan_free(pd.DataFrame(records))


def verdicts(table: pd.DataFrame, N: int = NUM_CLASSES, *, roles: Mapping = ROLES, seed: int = 0,
             n_resamples: int = N_RESAMPLES, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per test of :data:`EQUATIONS`: its trained models' verdicts in words (``verdict``), e.g.
    "refuted for trained networks" (all agree), ``by_model`` ("unfused: refuted, fused: refuted"),
    ``identity_check`` (the untrained network's, "not run" without one) and ``note`` (why a test is not
    tested or not testable). ``tests``: :func:`equation_tests`' table, when already computed."""
    if tests is None:
        tests = equation_tests(table, N=N, roles=roles, seed=seed, n_resamples=n_resamples)
    records = []
    for key in EQUATIONS:
        group = tests[tests["equation"] == key] if len(tests) else tests
        head = group.iloc[0][["tested", "theory_form"]].to_dict() if len(group) else {}
        trained = group[group.model.notna() & (group.model != UNTRAINED)] if len(group) else group
        untrained = group[group.model == UNTRAINED] if len(group) else group
        decided = trained[trained.verdict != NOT_TESTED] if len(trained) else trained
        verdict = in_words(dict(zip(decided.model, decided.verdict))) if len(decided) else NOT_TESTED
        records.append({"equation": key, **head, "verdict": verdict,
                        "by_model": ", ".join(f"{m}: {v}" for m, v in zip(trained.model, trained.verdict)),
                        "identity_check": untrained.verdict.iloc[0] if len(untrained) else "not run",
                        "note": reasons(trained) if len(trained) else reasons(group) if untrained.empty
                        else f"{NOT_TESTED}: no trained network in the table"})
    return pd.DataFrame(records, columns=["equation", "tested", "theory_form", "verdict", "by_model",
                                          "identity_check", "note"])
