"""The paper's ablations (Tables 1-3) on real photographs or synthetic scenes: matched budgets, tuned auxiliary
weights, several seeds, claims decided over seeds.

The variants (:data:`VARIANTS`) are trained per seed, each to the same number of *segmenter updates*:
the 3-step iteration with a generator or a discriminator updates the segmentation net twice, so the
variants without one train twice the epochs (:func:`plan`); one generator arm is matched on epochs instead
(images seen, and the paper's iterations), so it makes twice the updates. Before the reported cells, the
auxiliary weight of the generator and of the discriminator and the addition fusion's learning rate are swept
on seed 0 and the selection split (:data:`TUNING`, :func:`choose`); a run barely better than predicting the
most frequent class everywhere is flagged as collapsed (:func:`collapsed`), never reported as an effect.
Every variant's SGD learning rate decays from ``lr`` to 0 along a cosine over its updates
(:data:`LR_SCHEDULE`); the learning-curve table measures how flat each run ends.
Each trained network is evaluated on the
same evaluated images (test on real data) under the test labels of its table rows (:data:`TABLES`), keeping
one confusion matrix per image. Per row: every metric as mean ± sd over seeds, and the MIOU difference to
its reference row: decided by a paired t-test with the seeds as units
(:func:`imgpix.experiments.stats.paired_seeds`), with the interval over images resampled / swapped within
seeds (:func:`imgpix.experiments.stats.score_difference`) beside it, conditional on the trained networks.
The paper's figures and deltas are printed beside ours, with whether our decided sign agrees.

Table 3 compares the fusion operators of :func:`imgpix.fusion.fused_log_probs` twice: trained with
each operator, and applied at test to the network trained with ``dot``. For binary labels with at
least one class, ``argmax (P + L) / (1 + n)`` equals ``argmax P`` over the labelled classes (``P_c + 1 > 1
>= P_u`` for c in L, u not in L), so the addition applied to the dot-trained net predicts what dot predicts
up to floating-point ties (the ``agree %`` column).

Modules: :mod:`.design` (variants, rows and tables, budgets, AblationConfig), :mod:`.run` (training,
evaluation, cells as work units), :mod:`.analysis` (per-row statistics) and :mod:`.report` (files, plots,
Markdown).
"""

from .analysis import COMPARISON, Cells, choose, collapsed, constant_score, curves, plateau, table, tuning_table
from .design import (
    DEFAULT_SEEDS,
    DOT,
    EPOCH_MATCHED,
    LR_SCHEDULE,
    PAPER_BASELINE,
    PAPER_NOTE,
    PAPER_SETTINGS,
    PRESETS,
    TABLES,
    TUNING,
    VARIANTS,
    AblationConfig,
    Row,
    curve_name,
    label_source,
    plan,
    row_specs,
    train_config,
    tuned_settings,
)
from .report import OUTPUTS, docs_markdown, markdown_frames, plot_learning_curves, plot_tables, write_outputs
from .run import cell_path, evaluate_rows, run, run_cell, run_tuning

__all__ = [
    "COMPARISON", "Cells", "DEFAULT_SEEDS", "DOT", "EPOCH_MATCHED", "LR_SCHEDULE", "OUTPUTS", "PAPER_BASELINE",
    "PAPER_NOTE", "PAPER_SETTINGS", "PRESETS", "Row", "TABLES", "TUNING", "VARIANTS", "AblationConfig", "cell_path",
    "choose", "collapsed", "constant_score", "curve_name", "curves", "docs_markdown", "evaluate_rows",
    "label_source", "markdown_frames", "plan", "plateau", "plot_learning_curves", "plot_tables", "row_specs", "run",
    "run_cell", "run_tuning", "table", "train_config", "tuned_settings", "tuning_table", "write_outputs",
]
