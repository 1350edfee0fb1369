"""The noisy-label experiment's tables as page-wide Markdown, and the cells they are made of.

Markdown never shows ``nan`` or ``inf``: a number that does not exist is a dash, and a sentence beside the
table says why (e.g. "one seed: no interval over seeds").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..report import markdown_table
from ..stats import CONFIDENCE, p_text
from ..theory_tests import UNTRAINED
from ..verdicts import IDENTITY_FAILS
from .analysis import CONTRADICTED, SUPPORTED, UNTESTED

DASH = "—"
LEVEL = f"{100 * CONFIDENCE:g}%"


# -- cells ----------------------------------------------------------------------------------------------------


def missing(value) -> bool:
    """None, NaN or infinite: a number that does not exist."""
    return value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value))


def num(value, fmt: str = ".3g") -> str:
    """A number as text (below 1e-6 in size: 0, rounding noise); a dash where it does not exist (None, NaN,
    infinite)."""
    if missing(value):
        return DASH
    return format(0.0 if abs(value) < 1e-6 else value, fmt)


def interval(value, low, high, fmt: str = ".3g") -> str:
    """``"9.71 [7.85, 12.2]"``; the value alone where the interval does not exist."""
    if missing(low) or missing(high):
        return num(value, fmt)
    return f"{num(value, fmt)} [{num(low, fmt)}, {num(high, fmt)}]"


def bounds(low, high, fmt: str = ".1f") -> str:
    """``"[7.9, 12.2]"``, or a dash where the interval does not exist."""
    return DASH if missing(low) or missing(high) else f"[{num(low, fmt)}, {num(high, fmt)}]"


def _md(header: list[str], rows: list[list]) -> str:
    return markdown_table(pd.DataFrame(rows, columns=header)).rstrip("\n")


# -- the tables ---------------------------------------------------------------------------------------------


def scores_markdown(table: pd.DataFrame) -> str:
    """Scores per row: MIOU with its intervals over seeds and over images, the other metrics."""
    rows = [[r.row, f"{r.MIOU:.2f} ± {r.MIOU_sd:.2f}", bounds(r.MIOU_seeds_low, r.MIOU_seeds_high),
             bounds(r.MIOU_ci_low, r.MIOU_ci_high), f"{r.PA:.2f}", f"{r.MPA:.2f}", f"{r.FWAA:.2f}"]
            for r in table.itertuples()]
    text = _md(["row", "MIOU ± sd", "CI (seeds)", "CI (images)", "PA", "MPA", "FWAA"], rows)
    if (table.seeds < 2).any():
        text += "\n\nOne seed: no sd and no interval over seeds (a dash)."
    return text


def labels_markdown(table: pd.DataFrame) -> str:
    """Label counts per condition (means over images and seeds) and the nats the labels remove, per model."""
    models = list(table.model.unique())
    removed = table.pivot(index="condition", columns="model", values="removed")
    rows = [[r.condition, f"{r.n:.2f}", f"{r.size:.2f}", f"{r.kept:.2f}", f"{r.outliers:.2f}", f"{r.lost_fraction:.3f}",
             " / ".join(num(removed.loc[r.condition, m], ".3f") for m in models)]
            for r in table.drop_duplicates("condition").itertuples()]
    return _md(["labels", "n", "|L|", "k'", "m'", "lost fraction", f"nats removed ({' / '.join(models)})"], rows)


def power_text(claim: dict) -> str:
    """The seeds a decision would need, in words; "" where the claim is decided or untested, or one seed ran."""
    needed = claim.get("seeds_needed")
    if claim["decision"] in (SUPPORTED, CONTRADICTED, UNTESTED) or claim["seeds"] < 2:
        return ""
    if needed is None:
        return "no number of seeds would decide a mean difference of 0" if claim["difference"] == 0 else \
            "more seeds than can be trained"
    return f"{needed} seeds would decide it at this mean and sd"


def decision_text(claim: dict) -> str:
    """A claim's decision over seeds in words (bold), or why it is not decided."""
    if claim["decision"] == UNTESTED:
        return claim["note"]
    if claim["seeds"] < 2:
        return "not decided: one seed, no interval over seeds"
    words = {SUPPORTED: "**supported**", CONTRADICTED: "**contradicted** (the other direction)"}
    return words.get(claim["decision"], "**not decided**")


def _needed(claim: dict) -> str:
    """The seeds-needed cell: only where the run does not decide the claim."""
    if not power_text(claim):
        return DASH
    return str(claim["seeds_needed"]) if claim.get("seeds_needed") else "none"


def claims_markdown(table: pd.DataFrame, resamples: int) -> str:
    """Three page-wide tables: what is compared, the decision over seeds, the image-level interval."""
    claims = table.to_dict("records")
    what = _md(["claim", "B", "A", "expected"], [[c["claim"], c["b"], c["a"], c["expected"]] for c in claims])
    seeds = _md(["claim", "B - A", "per seed", "sd", "CI (seeds)", "p (seeds)", "decision", "needed"],
                [[c["claim"], f"{c['difference']:+.2f}", ", ".join(f"{v:+.1f}" for v in c["per_seed"]),
                  num(c["seed_sd"], ".2f"), bounds(c["seeds_ci_low"], c["seeds_ci_high"], "+.1f"),
                  DASH if missing(c["seeds_p"]) else p_text(c["seeds_p"]), c["decision"], _needed(c)]
                 for c in claims])
    given = _md(["claim", "CI (images)", "p (images)"],
                [[c["claim"], bounds(c["images_ci_low"], c["images_ci_high"], "+.2f"),
                  p_text(c["images_p"], resamples)] for c in claims])
    notes = [f"- `{c['claim']}`: {c['note']}" for c in claims if c["note"]]
    return "\n\n".join([what, seeds, given] + (["\n".join(notes)] if notes else []))


def _grouped(notes: list[tuple[str, str]]) -> str:
    """``(text, who)`` pairs as bullets, each text once with everyone it applies to."""
    found: dict[str, list[str]] = {}
    for text, who in notes:
        found.setdefault(text, []).append(who)
    return "\n".join(f"- {text} ({', '.join(dict.fromkeys(who))})" for text, who in found.items())


def equation_markdown(tests: pd.DataFrame) -> str:
    """Per test and model, two page-wide tables: the measured mean, the predicted, the ratio and the verdict;
    then, where x varies, the fit (slope, intercept, r) beside the theory-free control; then the notes (the
    uniform network's only when its identity check fails)."""
    shown = tests[tests.rows > 0]
    main = [[t.equation, t.model, interval(t.measured, t.measured_low, t.measured_high), num(t.theory),
             interval(t.ratio, t.ratio_low, t.ratio_high), t.verdict] for t in shown.itertuples()]
    fits = [[t.equation, t.model, interval(t.slope, t.slope_low, t.slope_high), num(t.theory_slope),
             interval(t.intercept, t.intercept_low, t.intercept_high), num(t.r, ".2f"), num(t.r2_control, ".2f")]
            for t in shown.itertuples() if t.x_varies]
    notes = [(f"{t.equation}: {part}", t.model or "every model") for t in tests.itertuples()
             if t.model != UNTRAINED or t.verdict == IDENTITY_FAILS
             for part in (t.note or "").split("; ") if part]
    lines = [_md(["test", "model", f"measured [{LEVEL} CI]", "predicted", "ratio [CI]", "verdict"], main)]
    if fits:
        lines.append(_md(["test", "model", "slope [CI]", "theory", "intercept [CI]", "r",
                          "control R²"], fits))
    if notes:
        lines.append(_grouped(notes))
    return "\n\n".join(lines)


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    legend = _md(["test", "measured per image", "predicted"],
                 [[v.equation, v.tested, v.theory_form] for v in verdicts.itertuples()])
    words = _md(["test", "verdict (trained networks)", "uniform network"],
                [[v.equation, v.verdict, v.identity_check] for v in verdicts.itertuples()])
    notes = [f"- {v.equation}: {v.note}" for v in verdicts.itertuples() if v.note]
    return "\n\n".join([legend, words] + (["\n".join(notes)] if notes else []))


def sufficiency_markdown(frame: pd.DataFrame, resamples: int) -> str:
    rows = [[r.model, r.value, f"{r.mean_a:.3g}", f"{r.mean_b:.3g}", interval(r.effect, r.effect_low, r.effect_high),
             p_text(r.p_value, resamples), num(r.effect_size, ".2f")] for r in frame.itertuples()]
    return _md(["model", "value", "confusable", "distant", "a - b [CI]", "p", "d_z"], rows)


def case2_markdown(frame: pd.DataFrame) -> str:
    rows = [[r.model, f"{r.oracle_images} of {r.images}", interval(r.lost_fraction, r.lost_fraction_low,
                                                                    r.lost_fraction_high),
             interval(r.pa_drop, r.pa_drop_low, r.pa_drop_high), num(r.lost_nats),
             f"{num(r.r_fraction, '.2f')}, {num(r.r_nats, '.2f')}", num(r.r2_control, ".2f")]
            for r in frame.itertuples()]
    table = _md(["model", "k >= n", "lost fraction", "PA drop", "log(n/k')", "r", "control R²"], rows)
    notes = [(part, r.model) for r in frame.itertuples() for part in (r.note or "").split("; ") if part]
    return "\n\n".join([table] + ([_grouped(notes)] if notes else []))


def tau_markdown(curve: pd.DataFrame, anchor: pd.DataFrame) -> str:
    """The tau curve (mean [CI] per model and tau; none for an empty ``curve``), then the tau = 0 anchor."""
    models = list(curve.model.unique())
    rows = []
    for tau, group in curve.groupby("tau", sort=True):
        cells = {r.model: interval(r.mean, r.low, r.high, ".1f") for r in group.itertuples()}
        rows.append([f"{tau:.2f}"] + [cells.get(m, DASH) for m in models])
    lines = [_md(["tau"] + [f"{m} + labeler@tau" for m in models], rows)] if rows else []
    if len(anchor):
        lines.append(_md(["model", "MIOU at tau = 0", "baseline MIOU", f"difference [{LEVEL} CI, seeds]",
                          "p (t, seeds)"],
                         [[a.model, interval(a.MIOU_tau0, a.MIOU_tau0_low, a.MIOU_tau0_high, ".2f"),
                           f"{a.baseline_MIOU:.2f}",
                           interval(a.difference, a.difference_low, a.difference_high, "+.2f"),
                           p_text(a.seeds_p) if not missing(a.seeds_p) else DASH] for a in anchor.itertuples()]))
    return "\n\n".join(lines)


def plateau_markdown(plateaus: pd.DataFrame) -> str:
    rows = [[p.model, p.updates, p.epochs, f"{p.final_val_MIOU:.2f}", num(p.last_quarter_change, "+.2f")]
            for p in plateaus.itertuples()]
    text = _md(["model", "updates", "epochs", "final MIOU", "last-quarter change"], rows)
    if plateaus.last_quarter_change.isna().any():
        text += "\n\nA dash: too few epochs for a last-quarter change."
    return text


def ambiguity_markdown(frame: pd.DataFrame) -> str:
    """Rows: the baseline's MIOU, each gain and the nats oracle labels remove; columns: the ambiguities."""
    names = [c for c in frame.columns.levels[0] if c != "ambiguity"]
    rows = [[name.replace("gain ", "gain: ")] + [f"{r[(name, 'mean')]:.2f} ± {num(r[(name, 'std')], '.2f')}"
                                                 for _, r in frame.iterrows()] for name in names]
    return _md(["ambiguity"] + [f"{a:g}" for a in frame["ambiguity"]], rows)


def budget_markdown(frame: pd.DataFrame, factor: int, seed: int) -> str:
    """The convergence check: seed ``seed`` of every model at the budget and at ``factor`` times it."""
    rows = [[r["row"], r["updates"], num(r["MIOU"], ".2f"), r[f"updates_x{factor}"], num(r[f"MIOU_x{factor}"], ".2f"),
             f"{r['change']:+.2f}", f"{r['last_quarter_change']:+.2f}", f"{r[f'last_quarter_change_x{factor}']:+.2f}"]
            for r in frame.to_dict("records")]
    header = ["row", "updates", "MIOU", "updates", f"MIOU at {factor}x", "change",
              "curve's last quarter", f"at {factor}x"]
    return (f"#### Convergence: seed {seed} of every model at the budget and at {factor}x its epochs (MIOU on the "
            "evaluated split; the last-quarter change of each learning curve on the selection split)\n\n"
            + _md(header, rows))
