import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nbhelpers import get_device, seed_everything
from nbhelpers.data.torchdata import make_loader
from nbhelpers.errors import ConfigError
from nbhelpers.train import CheckpointError, TrainingError, fit, load_checkpoint, save_checkpoint


def _problem(seed=0, n=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    return TensorDataset(x, y)


def _run(tmp_path, epochs, name="ck.pt", resume=True, lr=0.05):
    seed_everything(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = make_loader(_problem(), batch_size=8, shuffle=True, seed=0)
    loss_fn = lambda b: nn.functional.mse_loss(model(b[0])[:, 0], b[1])  # noqa: E731
    res = fit(model, loss_fn, loader, opt, epochs, torch.device("cpu"), checkpoint=tmp_path / name,
              resume=resume, show_progress=False)
    return model, res


def test_training_lowers_loss(tmp_path):
    _, res = _run(tmp_path, 5)
    assert res.losses[-1] < 0.2 * res.losses[0]
    assert res.steps == 5 * 6


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full, res_full = _run(tmp_path, 4, name="full.pt")
    _run(tmp_path, 2, name="part.pt")  # "interrupted" after epoch 2
    resumed, res_res = _run(tmp_path, 4, name="part.pt")  # continues from the checkpoint
    assert res_res.resumed_from == 2
    assert res_res.losses == pytest.approx(res_full.losses, rel=1e-6)
    torch.testing.assert_close(full.weight, resumed.weight)


def test_nan_loss_stops_with_step_and_last_finite(tmp_path):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = make_loader(_problem(), batch_size=8)
    calls = {"n": 0}

    def loss_fn(b):
        calls["n"] += 1
        loss = nn.functional.mse_loss(model(b[0])[:, 0], b[1])
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(TrainingError, match=r"step 3; last finite loss \d"):
        fit(model, loss_fn, loader, opt, 1, torch.device("cpu"), show_progress=False)


def test_checkpoint_atomic_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "c.pt", {"kind": "x", "t": torch.ones(2)})
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["t"].sum() == 2
    with pytest.raises(CheckpointError, match="expected 'y'"):
        load_checkpoint(path, expect={"kind": "y"})
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="not an nbhelpers checkpoint"):
        load_checkpoint(foreign)
    code = tmp_path / "code.pt"
    torch.save({"format": "nbhelpers-checkpoint-v1", "f": math.floor}, code)
    with pytest.raises(CheckpointError, match="code.pt"):
        load_checkpoint(code)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"v": torch.tensor(1)})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"v": torch.tensor(2)})
    monkeypatch.undo()
    assert int(load_checkpoint(path)["v"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_device_selection():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            get_device("cuda")


def test_seed_everything_repeats():
    seed_everything(3)
    a = torch.randn(5)
    seed_everything(3)
    assert torch.equal(a, torch.randn(5))
