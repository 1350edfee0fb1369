"""imgpix.device.check_device: a malformed or absent device is refused in one line naming what exists."""

from __future__ import annotations

import pytest
import torch

from imgpix.device import check_device


@pytest.mark.parametrize("text", ["gpu", "gpu0", "cuda0", "cuda:", "cuda:x", "CPU", "", "cpu:0 "])
def test_malformed_names_are_refused(text):
    with pytest.raises(ValueError, match=r"is not a device name: use cpu, cuda, cuda:N or mps"):
        check_device(text)


def test_cpu_is_always_there():
    assert check_device("cpu") == "cpu"


@pytest.mark.parametrize("text", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda(monkeypatch, text):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = rf"^--device {text}: CUDA is not available on this machine; use --device cpu$"
    with pytest.raises(ValueError, match=message):
        check_device(text)


def test_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    assert check_device("cuda") == "cuda"
    with pytest.raises(ValueError, match=r"this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        check_device("cuda:2")


def test_mps_without_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available on this machine; use --device cpu"):
        check_device("mps")
