"""What the training-side tests share: a tiny synthetic TrainConfig and a silent log."""

from __future__ import annotations

from imgpix.config import TrainConfig

SIZE = 32


def cfg_for(**overrides) -> TrainConfig:
    """A tiny synthetic run: 8 training and 6 validation images of SIZE px, batch 4, one epoch, quiet."""
    base = dict(image_size=SIZE, num_train=8, num_val=6, batch_size=4, epochs=1, labeler="tiny", seed=0,
                progress=False)
    return TrainConfig(**{**base, **overrides})


def quiet(line: str) -> None:
    pass


def default_sigint() -> None:
    """``preexec_fn`` of a subprocess that must receive Ctrl-C: a test run started in the background (``cmd &``)
    ignores SIGINT, and its children would inherit that and never see the interrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
