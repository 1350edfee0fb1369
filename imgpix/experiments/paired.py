"""Dataset-level scores (MIOU, PA, ...) with uncertainty, from per-image confusion matrices.

A dataset score is a function of the summed confusion matrix, not a mean over images, so its
bootstrap resamples images and re-sums their matrices. Every seed is scored on the same images,
so one draw of images (or of A/B swaps) is applied to every seed; the score is computed per seed
and averaged. More seeds then average out training noise without pretending to add images.
"""

from __future__ import annotations

import numpy as np

from ..metrics import batched_scores

RESAMPLES = 2000
CONFIDENCE = 0.95


def score(matrices: np.ndarray, metric: str = "MIOU") -> np.ndarray:
    """``metric`` in percent of confusion matrices [..., N, N] (:func:`imgpix.metrics.batched_scores`)."""
    return 100 * batched_scores(matrices)[metric]


def _blocks(seeds: np.ndarray) -> list[np.ndarray]:
    blocks = [np.flatnonzero(seeds == s) for s in np.unique(seeds)]
    if len({len(b) for b in blocks}) != 1:
        raise ValueError("every seed must hold the same images (equal counts per seed)")
    return blocks


def _flat(matrices: np.ndarray) -> np.ndarray:
    matrices = np.asarray(matrices, dtype=np.float64)
    return matrices.reshape(len(matrices), -1)


def _resample_counts(images: int, rng: np.random.Generator) -> np.ndarray:
    """[RESAMPLES, images]: how often each image is drawn in each bootstrap resample."""
    return rng.multinomial(images, np.full(images, 1 / images), size=RESAMPLES)


def score_interval(matrices, seeds, metric: str = "MIOU", rng_seed: int = 0) -> dict:
    """Mean over seeds of the per-seed score, its sd over seeds, and a bootstrap CI over images."""
    flat, blocks = _flat(matrices), _blocks(np.asarray(seeds))
    n = int(np.sqrt(flat.shape[1]))
    counts = _resample_counts(len(blocks[0]), np.random.default_rng(rng_seed))
    per_seed = np.array([score(flat[b].sum(0).reshape(n, n), metric) for b in blocks])
    draws = np.mean([score((counts @ flat[b]).reshape(-1, n, n), metric) for b in blocks], axis=0)
    low, high = np.nanpercentile(draws, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"mean": float(per_seed.mean()), "sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
            "ci_low": float(low), "ci_high": float(high), "seeds": len(per_seed)}


def paired_difference(matrices_a, matrices_b, seeds, metric: str = "MIOU", rng_seed: int = 0) -> dict:
    """Score(B) - score(A) on the same images: mean over seeds, bootstrap CI, and a permutation p-value.

    The p-value swaps A and B per image at random (the same swaps in every seed), the exact null of
    "the two conditions are exchangeable on every image"; two-sided, ``(1 + #|d*| >= |d|) / (1 + R)``.
    """
    flat_a, flat_b, blocks = _flat(matrices_a), _flat(matrices_b), _blocks(np.asarray(seeds))
    n = int(np.sqrt(flat_a.shape[1]))
    rng = np.random.default_rng(rng_seed)
    counts = _resample_counts(len(blocks[0]), rng)
    flips = rng.integers(0, 2, size=(RESAMPLES, len(blocks[0]))).astype(np.float64)
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
    low, high = np.nanpercentile(boot, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    p_value = (1 + np.sum(np.abs(null) >= abs(effect) - 1e-12)) / (1 + len(null))
    return {"difference": float(effect), "ci_low": float(low), "ci_high": float(high), "p_value": float(p_value),
            "sd_over_seeds": float(observed.std(ddof=1)) if len(observed) > 1 else 0.0,
            "per_seed": [float(v) for v in observed]}
