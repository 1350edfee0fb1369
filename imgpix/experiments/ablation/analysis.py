"""The ablations' numbers from every (variant, seed) cell: per-row scores over seeds, each row against its
reference (images resampled / swapped within seeds, and a paired t-test over seeds), the learning curves."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from ...metrics import METRIC_NAMES
from .. import stats
from .design import TABLES, VARIANTS, Row, curve_name

COMPARISON = ("delta", "delta_ci_low", "delta_ci_high", "p_images", "delta_seeds_ci_low", "delta_seeds_ci_high",
              "p_seeds", "d_z_seeds")


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

    @functools.cache
    def compare(self, row: Row, reference: Row) -> dict:
        """MIOU of ``row`` minus ``reference``: images swapped / resampled within seeds, and a paired
        t-test over seeds."""
        matrices, image_seeds = self.matrices(row)
        images = stats.score_difference(self.matrices(reference)[0], matrices, image_seeds, "MIOU",
                                        n_resamples=self.resamples)  # row - reference
        by_seed = stats.paired_seeds(self.per_seed(row, "MIOU"), self.per_seed(reference, "MIOU"))
        return {"delta": images.value, "delta_ci_low": images.low, "delta_ci_high": images.high,
                "p_images": images.p_value, "delta_seeds_ci_low": by_seed.low,
                "delta_seeds_ci_high": by_seed.high, "p_seeds": by_seed.p_value, "d_z_seeds": by_seed.effect_size}

    def agreement(self, row: Row) -> float:
        if not row.fusion:
            return np.nan
        return float(np.mean([self.cells[(row.variant, s)]["agreement"][row.spec] for s in range(self.seeds)]))


def _sign_agrees(ours: float, theirs: float | None) -> str:
    if theirs is None or math.isnan(ours):
        return "n/a"
    return "yes" if np.sign(ours) == np.sign(theirs) else "no"


def table(results: Cells, key: str) -> pd.DataFrame:
    """One table of :data:`~.design.TABLES`: scores (mean ± sd over seeds, MIOU CI over images), the MIOU
    difference to the reference row with both paired tests, and the paper's figures beside ours."""
    _, rows = TABLES[key]
    by_name = {row.name: row for row in rows}
    out = []
    for row in rows:
        reference = by_name[row.reference] if row.reference else None
        first = results.cells[(row.variant, 0)]
        record = {"row": row.name, "variant": row.variant, "test_labels": row.labels,
                  "test_fusion": row.fusion or "as trained", "updates": first["updates"], "seeds": results.seeds,
                  "images": len(first["matrices"][row.spec]), **results.scores(row),
                  "agree_%": results.agreement(row), "reference": reference.name if reference else "",
                  "paper_MIOU": row.paper, "paper_delta": None}
        if reference is None:
            record.update(dict.fromkeys(COMPARISON, np.nan), sign_agrees="n/a")
        else:
            record.update(results.compare(row, reference))
            if row.paper is not None and reference.paper is not None:
                record["paper_delta"] = round(row.paper - reference.paper, 2)
            record["sign_agrees"] = _sign_agrees(record["delta"], record["paper_delta"])
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
