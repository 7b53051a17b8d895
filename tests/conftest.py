"""Shared fixtures: offline hub, a tiny SynthAD benchmark generated once per session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NBHELPERS_PROGRESS", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """SynthAD with the smoke preset (all categories), generated once for the test session."""
    from nbhelpers.data.synth import generate

    return generate(tmp_path_factory.mktemp("synthad"), preset="smoke", seed=0, progress=False)
