"""The ``--device`` option, checked before any work: one line that says what this machine has."""

from __future__ import annotations

import re

FORMS = "cpu, cuda, cuda:N or mps"


def check_device(text: str) -> str:
    """``text`` if it names a device this machine has, else ValueError naming what is available."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(text)):
        raise ValueError(f"--device {text!r} is not a device name: use {FORMS}")
    if text == "cpu":
        return text
    import torch

    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device mps: Apple's MPS is not available on this machine; use --device cpu")
        return text
    if not torch.cuda.is_available():
        raise ValueError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
    count, index = torch.cuda.device_count(), int(text.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return text
