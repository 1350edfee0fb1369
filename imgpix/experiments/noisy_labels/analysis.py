"""The noisy-label experiment's numbers from every seed's result: the results table, the claims, the labeler's
scores, the tau curve, the learning-curve plateaus and the ambiguity sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...metrics import METRIC_NAMES
from .. import stats
from .design import BASELINE, COMPARISONS, HEADLINE, Claim, NoiseConfig, condition_names, main_condition


def row_name(model: str, condition: str) -> str:
    return f"{model} + {condition}"


def _matrices(results: list[dict], model: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image confusion matrices of ``model + condition`` over all seeds, and each image's seed."""
    stacks = [r["models"][model]["matrices"][condition] for r in results]
    return np.concatenate(stacks), np.concatenate([np.full(len(m), r["seed"]) for m, r in zip(stacks, results)])


def results_table(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """One row per model and main condition: scores (mean ± sd over seeds, MIOU bootstrap CI over images)
    and label counts."""
    records = pd.concat([r["records"] for r in results])
    main = condition_names(cfg, main=True)
    rows = []
    for model in cfg.models:
        for condition in results[0]["models"][model]["matrices"]:
            if condition not in main:
                continue
            matrices, seeds = _matrices(results, model, condition)
            row = {"row": row_name(model, condition), "model": model, "condition": condition}
            for metric in METRIC_NAMES:
                ci = stats.score_ci(matrices, seeds, metric, n_resamples=cfg.resamples)
                row[metric], row[f"{metric}_sd"] = ci.value, ci.seed_sd
                if metric == "MIOU":
                    row["MIOU_ci_low"], row["MIOU_ci_high"] = ci.low, ci.high
            mine = records[(records.model == model) & (records.condition == condition)]
            row.update({name: float(mine[name].mean()) for name in ("n", "size", "kept", "outliers", "removed",
                                                                     "lost_fraction")})
            row.update(seeds=len(results), images=int(len(mine) / len(results)),
                       updates=results[0]["models"][model]["updates"])
            rows.append(row)
    return pd.DataFrame(rows)


def _same_labels(records: pd.DataFrame, claim: Claim, a: str, b: str, num_classes: int) -> str:
    """Why conditions ``a`` and ``b`` of ``claim`` give every image the same labels, or "" when they do not
    (read from the label counts of every image)."""
    rows = records[records.model == claim.b[0]]
    role_a, role_b = claim.a[1], claim.b[1]
    if role_a in ("none", "oracle"):
        other = rows[rows.condition == b]
        if len(other) == 0:
            return ""
        if role_a == "none" and (other["size"] == num_classes).all():
            return f"{b} keeps every class on every image (no labels)"
        if role_a == "oracle" and ((other.kept == other.n) & (other.outliers == 0)).all():
            hint = " (k >= n on every image: Case 2 keeps every true label)" if role_b == "case2" else ""
            return f"{b} gives the true labels on every image{hint}"
    if (role_a, role_b) == ("case2", "case3"):
        case3 = rows[rows.condition == b]
        if len(case3) and (case3.outliers == 0).all():
            return "Case 3 adds no outlier to Case 2's labels on any image (m = 0)"
    return ""


def claims(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """Each claim of :data:`~.design.COMPARISONS`: B - A in MIOU points (mean over seeds), bootstrap CI,
    permutation p, and whether the CI lies on the claimed side of 0 (``supported``). A claim whose two
    conditions give every image the same labels is not tested: its ``note`` says why (the column is there
    only when a claim has a note)."""
    records = pd.concat([r["records"] for r in results])
    rows = []
    for claim in COMPARISONS:
        a = (claim.a[0], main_condition(cfg, claim.a[1]).name)
        b = (claim.b[0], main_condition(cfg, claim.b[1]).name)
        if a[0] not in cfg.models or b[0] not in cfg.models or b[1] not in results[0]["models"][b[0]]["matrices"]:
            continue
        (ma, seeds), (mb, _) = _matrices(results, *a), _matrices(results, *b)
        test = stats.score_difference(ma, mb, seeds, "MIOU", n_resamples=cfg.resamples)
        bound = test.low if claim.sign > 0 else -test.high
        row = {"claim": claim.name, "a": row_name(*a), "b": row_name(*b), "expected": claim.expected,
               "difference": test.value, "ci_low": test.low, "ci_high": test.high, "p_value": test.p_value,
               "sd_over_seeds": test.seed_sd, "supported": bool(bound > 0)}
        same = _same_labels(records, claim, a[1], b[1], cfg.num_classes)
        if same:
            row.update(supported=False, note=f"not tested: {same}")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "note" in frame:
        frame["note"] = frame["note"].fillna("")
    return frame


def headline(claim_table: pd.DataFrame) -> dict:
    """Predicted labels (the labeler at tau) against the fair unfused baseline, and the oracle's."""
    out = {}
    for claim in HEADLINE:
        found = claim_table[claim_table.claim == claim]
        if len(found):
            out[claim] = found.iloc[0].to_dict()
    return out


def labeler_summary(results: list[dict], model: str = BASELINE) -> dict | None:
    scores = [r["models"][model]["labeler"] for r in results if r["models"].get(model, {}).get("labeler")]
    if not scores:
        return None
    return {key: float(np.mean([s[key] for s in scores])) for key in ("mAP", "precision", "recall", "tau")} | {
        "mAP_sd": float(np.std([s["mAP"] for s in scores], ddof=1)) if len(scores) > 1 else 0.0}


def tau_curve(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    rows = []
    for model in cfg.models:
        for r in results:
            for tau, miou in r["models"][model]["tau_curve"].items():
                rows.append({"model": model, "seed": r["seed"], "tau": tau, "MIOU": miou})
    frame = pd.DataFrame(rows)
    return frame.groupby(["model", "tau"])["MIOU"].agg(["mean", "std"]).reset_index() if len(frame) else frame


def learning_plateaus(results: list[dict]) -> pd.DataFrame:
    """Per model: final validation MIOU of the seed-mean learning curve and its last-quarter change."""
    curves = pd.concat([info["history"][["epoch", "updates", "MIOU"]].assign(model=model, seed=r["seed"])
                        for r in results for model, info in r["models"].items()], ignore_index=True)
    return stats.plateau(curves, "model")


def ambiguity_table(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """Per ambiguity (mean and sd over seeds): the baseline's MIOU, the gain of oracle and labeler labels
    in every model over it, and the nats oracle labels remove from the baseline's prediction."""
    sweep = pd.concat([r["sweep"] for r in results])
    unfused, oracle = main_condition(cfg, "none").name, main_condition(cfg, "oracle").name
    gains = set(condition_names(cfg, "oracle") + condition_names(cfg, "labeler"))
    pivot = sweep.pivot_table(index=["seed", "ambiguity"], columns=["model", "condition"], values="MIOU")
    out = []
    for (seed, ambiguity), row in pivot.iterrows():
        baseline = row[(BASELINE, unfused)]
        entry = {"seed": seed, "ambiguity": ambiguity, "baseline_MIOU": baseline}
        for model, condition in row.index:
            if condition in gains:
                entry[f"gain {model} + {condition}"] = row[(model, condition)] - baseline
        found = sweep[(sweep.seed == seed) & (sweep.ambiguity == ambiguity) & (sweep.model == BASELINE)
                      & (sweep.condition == oracle)]
        entry["oracle_removed_nats"] = float(found.removed.iloc[0])
        out.append(entry)
    frame = pd.DataFrame(out)
    return frame.drop(columns="seed").groupby("ambiguity").agg(["mean", "std"]).reset_index()
