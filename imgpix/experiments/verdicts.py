"""How a confidence interval decides a prediction, and verdicts in words.

**By equivalence** (:func:`equivalence`): a prediction *holds* when the CI of ``ratio`` = mean y / mean x
lies inside 1 ± :data:`RATIO_TOL` and, where x varies over images, the CIs of the slope inside 1 ±
:data:`SLOPE_TOL` and of the intercept inside 0 ± :data:`INTERCEPT_TOL` nats; it is *refuted* when one of
these CIs lies entirely outside its band, and *inconclusive* otherwise (a wide CI decides nothing). **By
direction** (:func:`direction`): holds when the slope's CI lies below 0, refuted above, inconclusive when
it holds 0. The words for what is not decided (not tested, not testable) and for the untrained network's
identity check are constants here too.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .stats import Estimate

SLOPE_TOL = 0.1
INTERCEPT_TOL = 0.1  # nats
RATIO_TOL = 0.1
HOLDS, REFUTED, INCONCLUSIVE = "holds", "refuted", "inconclusive"
NOT_TESTED, NOT_TESTABLE, NOT_IN_DESIGN = "not tested", "not testable here", "not testable in this design"
IDENTITY_PASSES, IDENTITY_FAILS = "identity check: passes", "identity check: FAILS"


def _bounds(interval: Estimate | None) -> tuple[float, float]:
    return (np.nan, np.nan) if interval is None else (interval.low, interval.high)


def equivalence(interval: Estimate | None, target: float, tolerance: float) -> str:
    """:data:`HOLDS` when the CI ``[low, high]`` lies inside ``target ± tolerance`` (bounds included),
    :data:`REFUTED` when it lies entirely outside, :data:`INCONCLUSIVE` when it straddles a bound or is
    missing (None or NaN)."""
    low, high = _bounds(interval)
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if target - tolerance <= low and high <= target + tolerance:
        return HOLDS
    if high < target - tolerance or low > target + tolerance:
        return REFUTED
    return INCONCLUSIVE


def direction(interval: Estimate | None, sign: int = -1) -> str:
    """:data:`HOLDS` when the CI lies on the ``sign`` side of 0, :data:`REFUTED` when on the other,
    :data:`INCONCLUSIVE` when it holds 0 or is missing."""
    low, high = (bound * sign for bound in _bounds(interval))
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    return HOLDS if min(low, high) > 0 else REFUTED if max(low, high) < 0 else INCONCLUSIVE


def combine(verdicts) -> str:
    """Several statistics of one prediction: refuted when one is, holds when all do, else inconclusive."""
    verdicts = list(verdicts)
    if REFUTED in verdicts:
        return REFUTED
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def decide(rule: str, fit: Mapping[str, Estimate], x_varies: bool) -> str:
    """A fit's verdict under ``rule``: ``"direction"`` (the slope's sign) or ``"equivalence"`` (the ratio,
    and where x varies the slope and intercept, each inside its band)."""
    if rule == "direction":
        return direction(fit["slope"])
    found = [equivalence(fit["ratio"], 1.0, RATIO_TOL)]
    if x_varies:
        found += [equivalence(fit["slope"], 1.0, SLOPE_TOL), equivalence(fit["intercept"], 0.0, INTERCEPT_TOL)]
    return combine(found)


def in_words(verdicts: Mapping[str, str]) -> str:
    """Trained models' verdicts in words: "refuted for trained networks" when they agree, else per verdict
    ("holds for fused; refuted for unfused")."""
    groups: dict[str, list[str]] = {}
    for model, verdict in verdicts.items():
        groups.setdefault(verdict, []).append(model)
    if len(groups) == 1:
        return f"{next(iter(groups))} for trained networks"
    return "; ".join(f"{verdict} for {', '.join(models)}" for verdict, models in groups.items())


def reasons(rows: pd.DataFrame) -> str:
    """The parts of ``rows``' notes that say why a test is not tested or not testable (once each)."""
    parts = [part for note in rows.get("note", []) if note for part in note.split("; ")]
    found = [p for p in dict.fromkeys(parts) if p.startswith((NOT_TESTED, NOT_TESTABLE, NOT_IN_DESIGN))]
    return "; ".join(found) or ("" if len(rows) else f"{NOT_TESTED}: the table has no rows for it")
