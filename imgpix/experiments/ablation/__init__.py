"""The paper's ablations (Tables 1-3) on synthetic scenes: matched segmenter updates, several seeds, paired tests.

Seven variants are trained per seed (:data:`VARIANTS`), each to the same number of *segmenter updates*:
the 3-step iteration with a generator or a discriminator updates the segmentation net twice, so the
variants without one train twice the epochs (:func:`plan`). Every variant's SGD learning rate decays from
``lr`` to 0 along a cosine over its updates (:data:`LR_SCHEDULE`), so that each run ends on a plateau of its
budget (the learning-curve table measures how flat). Each trained network is evaluated on the
same validation images under the test labels of its table rows (:data:`TABLES`), keeping one
confusion matrix per image. Per row: every metric as mean ± sd over seeds (bootstrap CI over images),
and the MIOU difference to its reference row, tested twice with the shared statistics code: images
resampled / swapped within seeds (:func:`imgpix.experiments.stats.score_difference`) and a paired
t-test with the seeds as units (:func:`imgpix.experiments.stats.paired_seeds`). The paper's figures
and deltas are printed beside ours, with whether the signs agree.

Table 3 compares the fusion operators of :func:`imgpix.fusion.fused_log_probs` twice: trained with
each operator, and applied at test to the network trained with ``dot``. For binary labels with at
least one class, ``argmax (P + L) / (1 + n)`` equals ``argmax P`` over the labelled classes (``P_c + 1 > 1
>= P_u`` for c in L, u not in L), so the addition applied to the dot-trained net predicts what dot predicts
up to floating-point ties (the ``agree %`` column).

Modules: :mod:`.design` (variants, rows and tables, budgets, AblationConfig), :mod:`.run` (training,
evaluation, cells as work units), :mod:`.analysis` (per-row statistics) and :mod:`.report` (files, plots,
Markdown).
"""

from .analysis import COMPARISON, Cells, curves, plateau, table
from .design import (
                     DEFAULT_SEEDS,
                     DOT,
                     LR_SCHEDULE,
                     PAPER_BASELINE,
                     PAPER_NOTE,
                     PRESETS,
                     TABLES,
                     VARIANTS,
                     AblationConfig,
                     Row,
                     curve_name,
                     label_source,
                     plan,
                     row_specs,
                     train_config,
)
from .report import OUTPUTS, docs_markdown, markdown_frame, plot_learning_curves, plot_tables, write_outputs
from .run import cell_path, evaluate_rows, run, run_cell

__all__ = [
    "COMPARISON", "Cells", "DEFAULT_SEEDS", "DOT", "LR_SCHEDULE", "OUTPUTS", "PAPER_BASELINE", "PAPER_NOTE",
    "PRESETS", "Row", "TABLES", "VARIANTS", "AblationConfig", "cell_path", "curve_name", "curves", "docs_markdown",
    "evaluate_rows", "label_source", "markdown_frame", "plan", "plateau", "plot_learning_curves", "plot_tables",
    "row_specs", "run", "run_cell", "table", "train_config", "write_outputs",
]
