"""The noisy-label experiment's numbers from every seed's result: the results table, the claims, the labeler's
scores, the tau curves and their tau = 0 anchor, the learning-curve plateaus and the ambiguity sweep.

A claim about the method is decided over seeds (every seed retrains every model): the per-seed differences,
their mean, sd and paired t interval and p over seeds (:func:`imgpix.experiments.stats.paired_seeds`), and the
number of seeds a decision would need at that mean and sd. The image-level interval and permutation p stand
beside it, conditional on the trained networks (they hold the models fixed and resample images)."""

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


def per_seed_scores(results: list[dict], model: str, condition: str, metric: str = "MIOU") -> np.ndarray:
    """``metric`` (%) of ``model + condition`` per seed, each from the seed's summed confusion matrix."""
    return np.array([stats.score(r["models"][model]["matrices"][condition].sum(0), metric) for r in results])


def results_table(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """One row per model and main condition: scores (mean ± sd over seeds; MIOU with its t interval over seeds
    and its bootstrap CI over images, the latter conditional on the trained networks) and label counts."""
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
                    over_seeds = stats.seed_mean(ci.per_seed)
                    row.update(MIOU_ci_low=ci.low, MIOU_ci_high=ci.high, MIOU_seeds_low=_number(over_seeds.low),
                               MIOU_seeds_high=_number(over_seeds.high))
            mine = records[(records.model == model) & (records.condition == condition)]
            row.update({name: float(mine[name].mean()) for name in ("n", "size", "kept", "outliers", "removed",
                                                                     "lost_fraction")})
            row.update(seeds=len(results), images=int(len(mine) / len(results)),
                       updates=results[0]["models"][model]["updates"])
            rows.append(row)
    return pd.DataFrame(rows)


def _number(value: float) -> float | None:
    """None for NaN (a statistic that does not exist, e.g. an interval over one seed)."""
    return None if value is None or not np.isfinite(value) else float(value)


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


SUPPORTED, CONTRADICTED, UNDECIDED, UNTESTED = "supported", "contradicted", "not decided", "not tested"


def _decision(low: float | None, high: float | None, sign: int) -> str:
    """The seed-level CI against 0: on the claimed side (``sign``), on the other, or holding 0 (or absent)."""
    if low is None or high is None:
        return UNDECIDED
    low, high = sorted((sign * low, sign * high))
    return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else UNDECIDED


def claims(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """Each claim of :data:`~.design.COMPARISONS`, B - A in MIOU points, decided over seeds.

    Columns: ``claim, a, b, expected``, ``difference`` (mean over seeds of the per-seed differences),
    ``per_seed`` (list), ``seed_sd``, ``seeds``; ``seeds_ci_low/high`` and ``seeds_p`` (paired t over seeds;
    None with one seed); ``decision`` (supported / contradicted: the seed-level CI excludes 0 on the claimed /
    the other side; not decided; not tested) and ``supported`` (``decision == "supported"``);
    ``seeds_needed``: the seeds a decision would need at the measured mean and sd
    (:func:`~imgpix.experiments.stats.seeds_needed`, None when no number would); ``images_ci_low/high`` and
    ``images_p``: bootstrap CI and permutation p over images, conditional on the trained networks; ``note``:
    why a claim is not tested (its two conditions give every image the same labels) or not decided.
    """
    records = pd.concat([r["records"] for r in results])
    rows = []
    for claim in COMPARISONS:
        a = (claim.a[0], main_condition(cfg, claim.a[1]).name)
        b = (claim.b[0], main_condition(cfg, claim.b[1]).name)
        if a[0] not in cfg.models or b[0] not in cfg.models or b[1] not in results[0]["models"][b[0]]["matrices"]:
            continue
        (ma, seeds), (mb, _) = _matrices(results, *a), _matrices(results, *b)
        images = stats.score_difference(ma, mb, seeds, "MIOU", n_resamples=cfg.resamples)
        row = {"claim": claim.name, "a": row_name(*a), "b": row_name(*b), "expected": claim.expected,
               "difference": images.value, "per_seed": list(images.per_seed), "seed_sd": images.seed_sd,
               "seeds": len(results), "seeds_ci_low": None, "seeds_ci_high": None, "seeds_p": None}
        note = ""
        if len(results) >= 2:
            test = stats.paired_seeds(per_seed_scores(results, *b), per_seed_scores(results, *a))
            row.update(seeds_ci_low=test.low, seeds_ci_high=test.high, seeds_p=test.p_value)
        else:
            note = "not decided: one seed (an interval over seeds needs at least 2)"
        row["decision"] = _decision(row["seeds_ci_low"], row["seeds_ci_high"], claim.sign)
        row["seeds_needed"] = stats.seeds_needed(images.value, images.seed_sd) if len(results) >= 2 else None
        row.update(images_ci_low=images.low, images_ci_high=images.high, images_p=images.p_value)
        same = _same_labels(records, claim, a[1], b[1], cfg.num_classes)
        if same:
            row["decision"], note = UNTESTED, f"not tested: {same}"
        row.update(supported=row["decision"] == SUPPORTED, note=note)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):  # whole numbers and None, not floats and NaN
        frame["seeds_needed"] = pd.Series([r["seeds_needed"] for r in rows], dtype=object)
    return frame


def headline(claim_table: pd.DataFrame) -> dict:
    """Predicted labels (the labeler at tau, in the paper's protocol and post hoc) against the fair unfused
    baseline, and the oracle's."""
    out = {}
    for claim in HEADLINE:
        found = claim_table[claim_table.claim == claim]
        if len(found):
            out[claim] = {key: None if isinstance(value, float) and not np.isfinite(value) else value
                          for key, value in found.iloc[0].to_dict().items()}
    return out


def labeler_summary(results: list[dict], model: str = BASELINE) -> dict | None:
    scores = [r["models"][model]["labeler"] for r in results if r["models"].get(model, {}).get("labeler")]
    if not scores:
        return None
    return {key: float(np.mean([s[key] for s in scores])) for key in ("mAP", "precision", "recall", "tau")} | {
        "mAP_sd": float(np.std([s["mAP"] for s in scores], ddof=1)) if len(scores) > 1 else 0.0}


def _tau_rows(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "seed": r["seed"], "tau": tau, "MIOU": miou}
                         for model in cfg.models for r in results
                         for tau, miou in r["models"][model]["tau_curve"].items()])


def tau_curve(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """Per model with a labeler and tau: MIOU over seeds, ``mean``, ``sd``, ``seeds`` and the t interval over
    seeds ``low`` / ``high`` (None with one seed)."""
    frame = _tau_rows(results, cfg)
    if frame.empty:
        return frame
    rows = []
    for (model, tau), group in frame.groupby(["model", "tau"], sort=False):
        est = stats.seed_mean(group.MIOU.to_numpy())
        rows.append({"model": model, "tau": tau, "mean": est.value, "sd": est.seed_sd, "seeds": est.n,
                     "low": _number(est.low), "high": _number(est.high)})
    return pd.DataFrame(rows)


def tau_anchor(results: list[dict], cfg: NoiseConfig) -> pd.DataFrame:
    """The paper's anchor: at tau = 0 the labeler keeps every class, so each curve starts at its own model's
    unfused score, and the paper reads that as the baseline's. Per model with a tau curve: MIOU at tau = 0
    (mean over seeds, t interval), the baseline's (``unfused + unfused``) and their difference over seeds
    (paired t; None with one seed)."""
    frame = _tau_rows(results, cfg)
    if frame.empty or 0.0 not in set(frame.tau):
        return pd.DataFrame()
    baseline = per_seed_scores(results, BASELINE, main_condition(cfg, "none").name)
    rows = []
    for model in frame.model.unique():
        at_zero = frame[(frame.model == model) & (frame.tau == 0.0)].sort_values("seed").MIOU.to_numpy()
        level = stats.seed_mean(at_zero)
        row = {"model": model, "MIOU_tau0": level.value, "MIOU_tau0_low": _number(level.low),
               "MIOU_tau0_high": _number(level.high), "baseline_MIOU": float(baseline.mean()),
               "difference": float((at_zero - baseline).mean()), "difference_low": None, "difference_high": None,
               "seeds_p": None}
        if len(results) >= 2:
            test = stats.paired_seeds(at_zero, baseline)
            row.update(difference_low=test.low, difference_high=test.high, seeds_p=test.p_value)
        rows.append(row)
    return pd.DataFrame(rows)


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


def budget_check(base: dict, doubled: dict, cfg: NoiseConfig, factor: int) -> pd.DataFrame:
    """Seed ``base["seed"]`` at the run's budget and at ``factor`` times its epochs: per model and main
    condition (none, oracle, labeler) the MIOU on the evaluated split at both budgets, their difference, and
    each learning curve's last-quarter change on the selection split."""
    rows = []
    for model in cfg.models:
        changes = [stats.plateau(r["models"][model]["history"].assign(model=model), "model")
                   ["last_quarter_change"].item() for r in (base, doubled)]
        for role in ("none", "oracle", "labeler"):
            name = main_condition(cfg, role).name
            if name not in base["models"][model]["matrices"]:
                continue
            at = [float(stats.score(r["models"][model]["matrices"][name].sum(0), "MIOU")) for r in (base, doubled)]
            rows.append({"row": row_name(model, name), "updates": base["models"][model]["updates"],
                         "MIOU": at[0], f"updates_x{factor}": doubled["models"][model]["updates"],
                         f"MIOU_x{factor}": at[1], "change": at[1] - at[0], "last_quarter_change": changes[0],
                         f"last_quarter_change_x{factor}": changes[1]})
    return pd.DataFrame(rows)
