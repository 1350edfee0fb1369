"""The noisy image-label experiment (the paper's §3.2), made fair.

Per seed, networks are trained on the same budget of segmenter updates: ``unfused`` (no labels: the
baseline), ``fused`` (oracle labels fused, the paper's training) and ``fused-labeler`` (the labeler's
labels fused in training, the paper's protocol); optional ``fused-noisy``. Claims about the method are
decided over seeds. The segmenter's learning rate decays along a cosine (:data:`LR_SCHEDULE`) so each
model ends on its budget's plateau; the learning-curve table measures how flat. Every model is
evaluated under every condition (label source): unfused, oracle, Case 1 / 2 / 3 (m, k) and the
labeler at tau, post-hoc fusion into the unfused model included, plus the tau curve. Per image the
evaluation keeps a confusion matrix (for paired, image-resampled CIs of MIOU) and the measured
information of :func:`imgpix.information.audit` (for the theory tests of
:mod:`imgpix.experiments.theory_tests`).

Modules: :mod:`.design` (models, conditions with their roles, claims, budgets, NoiseConfig), :mod:`.run`
(training, evaluation, seeds as work units, shards), :mod:`.analysis` (tables and claims) and
:mod:`.report` (outputs, summary, ``report.md``), :mod:`.markdown` (tables) and :mod:`.plots` (figures).
"""

from .analysis import (
                     ambiguity_table,
                     budget_check,
                     claims,
                     headline,
                     labeler_summary,
                     learning_plateaus,
                     results_table,
                     tau_curve,
)
from .design import (
                     AMBIGUITIES,
                     BASELINE,
                     BUDGET_FACTOR,
                     CLAIMS,
                     COMPARISONS,
                     LR_SCHEDULE,
                     MODELS,
                     PRESETS,
                     ROLES,
                     TAUS,
                     THEORY_MS,
                     Claim,
                     Condition,
                     NoiseConfig,
                     ambiguities,
                     condition_names,
                     conditions,
                     main_condition,
                     scaled,
                     train_config,
)
from .report import OUTPUTS, headline_markdown, report_markdown, write_outputs
from .run import affinities, run, run_seed, seed_path

__all__ = [
    "AMBIGUITIES", "BASELINE", "BUDGET_FACTOR", "CLAIMS", "COMPARISONS", "Claim", "Condition", "LR_SCHEDULE",
    "MODELS", "NoiseConfig", "OUTPUTS", "PRESETS", "ROLES", "TAUS", "THEORY_MS", "affinities", "ambiguities",
    "ambiguity_table", "budget_check", "claims", "condition_names", "conditions", "headline", "headline_markdown",
    "labeler_summary", "learning_plateaus", "main_condition", "report_markdown", "results_table", "run", "run_seed",
    "scaled", "seed_path", "tau_curve", "train_config", "write_outputs",
]
