"""Shared pytest configuration: hypothesis profiles and the ``one_thread`` fixture.

``ci`` (selected when the environment has ``CI=true``) is derandomised and
bounded so the suite is reproducible and fast; ``dev`` (the default) runs
more examples. Override with ``HYPOTHESIS_PROFILE=<name>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_default = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and on a busy 2-core machine ~50x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write into: made read-only, or for the superuser (whom permissions do
    not stop) sysfs."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    folder = Path("/sys")
    try:
        (folder / "imgpix-write-test").mkdir()
    except OSError:
        yield folder
        return
    (folder / "imgpix-write-test").rmdir()
    pytest.skip("no directory here that the superuser cannot write into")
