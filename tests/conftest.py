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


@pytest.fixture(scope="session")
def smoke_reports(synth_root, tmp_path_factory):
    """Every notebook executed once with the smoke preset by ``run_collection`` (standalone HTML pages,
    index and course site): ``(reports folder, runs)``."""
    from pathlib import Path

    from nbhelpers.runner import run_collection

    reports = tmp_path_factory.mktemp("smoke") / "reports"
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    runs = run_collection(notebooks, reports, preset="smoke", data_root=synth_root, timeout=600)
    return reports, runs
