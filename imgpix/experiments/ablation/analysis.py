"""The ablations' numbers from every (variant, seed) cell: per-row scores over seeds, each row against its
reference (a paired t-test over seeds decides; images resampled / swapped within seeds give the interval
conditional on the trained networks), collapsed runs, the tuning choices, the learning curves."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from ...metrics import METRIC_NAMES
from .. import stats
from .design import TABLES, VARIANTS, Row, curve_name

COLLAPSE_MARGIN = 1.0  # MIOU points above the constant prediction that still count as collapsed
COMPARISON = ("delta", "delta_ci_low", "delta_ci_high", "p_images", "delta_seeds_ci_low", "delta_seeds_ci_high",
              "p_seeds", "per_seed_delta", "verdict")


def constant_score(matrix: np.ndarray, metric: str = "MIOU") -> float:
    """``metric`` (%) of predicting the most frequent true class everywhere, on the pixels of ``matrix``
    ([N, N], rows: truth)."""
    truth = np.asarray(matrix).sum(1)
    constant = np.zeros_like(np.asarray(matrix))
    constant[:, truth.argmax()] = truth
    return float(stats.score(constant, metric))


def collapsed(matrix: np.ndarray) -> bool:
    """Failed training: MIOU within :data:`COLLAPSE_MARGIN` points of the constant prediction of the most
    frequent class (a net that predicts that class almost everywhere is as useless as one that always does)."""
    return float(stats.score(np.asarray(matrix), "MIOU")) <= constant_score(matrix) + COLLAPSE_MARGIN


def choose(sweep: list[dict]) -> dict[str, float]:
    """Per swept variant, the value with the highest selection-split MIOU among the runs that neither diverged
    nor collapsed (ties: the earlier value of the grid); the grid's first value when every run failed."""
    chosen = {}
    for variant, points in pd.DataFrame(sweep).groupby("variant", sort=False):
        best, best_score = points["value"].iloc[0], -np.inf
        for point in points.itertuples():
            if point.diverged or collapsed(point.matrix):
                continue
            value = float(stats.score(point.matrix, "MIOU"))
            if value > best_score:
                best, best_score = point.value, value
        chosen[variant] = float(best)
    return chosen


def tuning_table(sweep: list[dict], choices: dict[str, float]) -> pd.DataFrame:
    """One row per tuning point: its selection-split MIOU, whether it failed, and whether it was chosen."""
    rows = []
    for point in sweep:
        failed = "diverged" if point["diverged"] else ("collapsed" if collapsed(point["matrix"]) else "")
        rows.append({"variant": point["variant"], "setting": point["field"], "value": point["value"],
                     "selection_MIOU": np.nan if point["diverged"] else float(stats.score(point["matrix"], "MIOU")),
                     "failed": failed, "chosen": choices.get(point["variant"]) == point["value"]})
    return pd.DataFrame(rows)


def verdict(low: float, high: float, failed: bool) -> str:
    """The sign the seeds decide: ``higher`` / ``lower`` when the t interval over seeds excludes 0."""
    if failed:
        return "failed training"
    return "higher" if low > 0 else "lower" if high < 0 else "undecided"


def against_paper(ours: str, paper_delta: float | None) -> str:
    """Whether our decided sign agrees with the paper's difference."""
    if paper_delta is None or ours in ("undecided", "failed training"):
        return "n/a" if paper_delta is None else ours
    return "agrees" if (ours == "higher") == (paper_delta > 0) else "contradicts"


class Cells:
    """Every (variant, seed) result; per-row statistics computed once however many tables show the row."""

    def __init__(self, cells: dict[tuple[str, int], dict], seeds: int, resamples: int = stats.N_RESAMPLES):
        self.cells, self.seeds, self.resamples = cells, seeds, resamples

    def matrices(self, row: Row) -> tuple[np.ndarray, np.ndarray]:
        """Per-image confusion matrices of ``row`` over all seeds, and each image's seed."""
        stacks = [self.cells[(row.variant, s)]["matrices"][row.spec] for s in range(self.seeds)]
        return np.concatenate(stacks), np.concatenate([np.full(len(m), s) for s, m in enumerate(stacks)])

    def per_seed(self, row: Row, metric: str) -> np.ndarray:
        """``metric`` (%) of ``row`` per seed, from the seed's summed confusion matrix."""
        return np.array([stats.score(self.cells[(row.variant, s)]["matrices"][row.spec].sum(0), metric)
                         for s in range(self.seeds)])

    @functools.cache
    def scores(self, row: Row) -> dict:
        """Every metric as mean and sd over seeds; MIOU's bootstrap CI over images (within seeds)."""
        record = {}
        for metric in METRIC_NAMES:
            values = self.per_seed(row, metric)
            record[metric], record[f"{metric}_sd"] = float(values.mean()), float(values.std(ddof=1))
        ci = stats.score_ci(*self.matrices(row), "MIOU", n_resamples=self.resamples)
        record["MIOU_ci_low"], record["MIOU_ci_high"] = ci.low, ci.high
        return record

    def collapsed_seeds(self, row: Row) -> list[int]:
        """The seeds whose ``row`` collapsed (:func:`collapsed`)."""
        return [s for s in range(self.seeds) if collapsed(self.cells[(row.variant, s)]["matrices"][row.spec].sum(0))]

    @functools.cache
    def compare(self, row: Row, reference: Row) -> dict:
        """MIOU of ``row`` minus ``reference``: a paired t-test over seeds (the verdict), and images swapped /
        resampled within seeds (conditional on the trained networks)."""
        matrices, image_seeds = self.matrices(row)
        images = stats.score_difference(self.matrices(reference)[0], matrices, image_seeds, "MIOU",
                                        n_resamples=self.resamples)  # row - reference
        by_seed = stats.paired_seeds(self.per_seed(row, "MIOU"), self.per_seed(reference, "MIOU"))
        failed = bool(self.collapsed_seeds(row) or self.collapsed_seeds(reference))
        return {"delta": images.value, "delta_ci_low": images.low, "delta_ci_high": images.high,
                "p_images": images.p_value, "delta_seeds_ci_low": by_seed.low,
                "delta_seeds_ci_high": by_seed.high, "p_seeds": by_seed.p_value,
                "per_seed_delta": list(by_seed.per_seed), "verdict": verdict(by_seed.low, by_seed.high, failed)}

    def agreement(self, row: Row) -> float:
        if not row.fusion:
            return np.nan
        return float(np.mean([self.cells[(row.variant, s)]["agreement"][row.spec] for s in range(self.seeds)]))


def table(results: Cells, key: str) -> pd.DataFrame:
    """One table of :data:`~.design.TABLES`: scores (mean ± sd over seeds, MIOU CI over images), collapsed
    seeds, the MIOU difference to the reference row with both paired tests and the verdict over seeds, and
    the paper's figures beside ours."""
    _, rows = TABLES[key]
    by_name = {row.name: row for row in rows}
    out = []
    for row in rows:
        reference = by_name[row.reference] if row.reference else None
        first = results.cells[(row.variant, 0)]
        record = {"row": row.name, "variant": row.variant, "test_labels": row.labels,
                  "test_fusion": row.fusion or "as trained", "updates": first["updates"], "seeds": results.seeds,
                  "images": len(first["matrices"][row.spec]), **results.scores(row),
                  "collapsed_seeds": results.collapsed_seeds(row), "agree_%": results.agreement(row),
                  "reference": reference.name if reference else "", "paper_MIOU": row.paper, "paper_delta": None}
        if reference is None:
            record.update(dict.fromkeys(COMPARISON, np.nan), verdict="", vs_paper="n/a")
        else:
            record.update(results.compare(row, reference))
            if row.paper is not None and reference.paper is not None:
                record["paper_delta"] = round(row.paper - reference.paper, 2)
            record["vs_paper"] = against_paper(record["verdict"], record["paper_delta"])
        out.append(record)
    return pd.DataFrame(out)


def curves(cells: dict, seeds: int) -> pd.DataFrame:
    """Per-epoch validation MIOU of every variant and seed (oracle labels for fused variants, none otherwise)."""
    frames = [cells[(v, s)]["history"][["epoch", "updates", "MIOU"]].assign(variant=v, seed=s)
              for v in VARIANTS for s in range(seeds)]
    return pd.concat(frames, ignore_index=True)


def plateau(history: pd.DataFrame) -> pd.DataFrame:
    """Per variant, its row name beside :func:`imgpix.experiments.stats.plateau`."""
    found = stats.plateau(history, "variant")
    found.insert(1, "row", found["variant"].map(curve_name))
    return found
