"""Which split the experiments report and which one every choice is made on: always disjoint.

On real data the numbers come from ``test`` and the choices (budgets, learning curves, tuned weights) from
``val``; synthetic scenes draw any split name afresh, so their choices use a ``select`` set of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import TrainConfig

SPLITS = {"synthetic": {"eval": "val", "select": "select"}, "real": {"eval": "test", "select": "val"}}


def evaluated_split(real: bool, eval_split: str | None) -> str:
    """The split every reported number comes from: ``eval_split``, else the data kind's default."""
    return eval_split or SPLITS["real" if real else "synthetic"]["eval"]


def select_split(real: bool) -> str:
    """The split of the learning curves and of every choice."""
    return SPLITS["real" if real else "synthetic"]["select"]


def check_disjoint(real: bool, eval_split: str | None) -> None:
    if evaluated_split(real, eval_split) == select_split(real):
        raise ValueError(f"the evaluated split must not be the one choices are made on ({select_split(real)})")


def check_data(train: TrainConfig, evaluated: TrainConfig) -> None:
    """Open the training and selection splits of ``train`` and the evaluated split of ``evaluated`` once, so that
    a missing folder or a split smaller than the images asked of it is one error before any work."""
    from ..data.loaders import build_split

    build_split(train, "train")
    build_split(train, train.eval_split)
    build_split(evaluated, evaluated.eval_split)
