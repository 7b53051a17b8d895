"""Reliability checks that every registered method must pass, as functions: ``test_reliability``
runs them over the registry, and a new method's own test can run them on it (see test_one_shape)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nbhelpers import train as train_module
from nbhelpers.data.layouts import load_split
from nbhelpers.methods import available, create, get
from nbhelpers.methods.base import AnomalyMethod
from nbhelpers.train import load_checkpoint


def trained_methods() -> list[str]:
    """Registered methods that train a ``net`` by gradient (they declare a ``training_step``)."""
    return [m for m in available() if get(m).training_step is not AnomalyMethod.training_step]


def count_steps(monkeypatch: pytest.MonkeyPatch, interrupt_at: int | None = None) -> dict[str, int]:
    """Count the training steps of :func:`nbhelpers.train.fit`; with ``interrupt_at`` raise
    KeyboardInterrupt (Ctrl-C) instead of running that step."""
    real, calls = train_module._step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", step)
    return calls


def check_resume_matches_uninterrupted(method: str, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       category: str = "brick") -> None:
    """Ctrl-C in the last or second-last epoch, then ``--resume``: the same scores, maps and losses as
    an uninterrupted fit, and no training checkpoint left once the model is saved."""
    split = load_split(root, category)
    seen = [s for s in split.test if s.label][:2]

    def model():
        return create(method, "smoke", device="cpu", epochs=3, seed=4)

    steps = count_steps(monkeypatch)
    full = model()
    full.fit_and_save(tmp_path / "full.pt", split.train, anomalies=seen)
    expected = full.predict_all(split.test)
    assert not (tmp_path / "full.train").exists()  # training checkpoints go once the model is saved

    count_steps(monkeypatch, interrupt_at=steps["n"] - 1)
    with pytest.raises(KeyboardInterrupt):
        model().fit_and_save(tmp_path / "part.pt", split.train, anomalies=seen)
    monkeypatch.undo()
    (ckpt,) = (tmp_path / "part.train").iterdir()
    assert load_checkpoint(ckpt)["epoch"] in (0, 1) and not (tmp_path / "part.pt").exists()

    resumed = model()
    resumed.fit_and_save(tmp_path / "part.pt", split.train, anomalies=seen, resume=True)
    got = resumed.predict_all(split.test)
    assert torch.equal(got["scores"], expected["scores"]) and torch.equal(got["maps"], expected["maps"])
    assert resumed.train_result.losses == full.train_result.losses


def check_same_seed_same_scores(method: str, root: Path, category: str = "brick") -> None:
    """Two fits with the same seed give bit-identical, finite, non-constant scores and maps."""
    split = load_split(root, category)
    seen = [s for s in split.test if s.label][:2]
    runs = [create(method, "smoke", device="cpu", seed=7).fit(split.train, anomalies=seen).predict_all(split.test)
            for _ in range(2)]
    assert torch.equal(runs[0]["scores"], runs[1]["scores"]) and torch.equal(runs[0]["maps"], runs[1]["maps"])
    assert torch.isfinite(runs[0]["scores"]).all() and runs[0]["scores"].std() > 0
