"""bf16 autocast (the CUDA fast path) for every method, run without a GPU: ``NBHELPERS_BF16_CPU=1``
turns the same ``torch.autocast(dtype=bfloat16)`` on for CPU, so the dtype rules a CUDA run meets
(bf16 matmuls and convolutions, float32 islands for losses, distances and maps) are exercised here."""
from __future__ import annotations

import math

import pytest
import torch

from nbhelpers.data.layouts import load_split
from nbhelpers.methods import available, create
from nbhelpers.train import BF16_ON_CPU, autocast


def test_the_switch_turns_cpu_autocast_on_only_when_set(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(BF16_ON_CPU, raising=False)
    with autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv(BF16_ON_CPU, "1")
    with autocast(cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(cpu, enabled=False):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("method", available())
def test_every_method_trains_and_predicts_under_bf16_autocast(method, synth_root, monkeypatch):
    monkeypatch.setenv(BF16_ON_CPU, "1")
    split = load_split(synth_root, "brick")
    seen = [s for s in split.test if s.label][:2]
    dtypes: set[torch.dtype] = set()

    def record(module, args, output):
        for t in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(t, torch.Tensor):
                dtypes.add(t.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        model = create(method, "smoke", device="cpu", epochs=1, seed=0).fit(split.train, anomalies=seen)
        out = model.predict_all(split.test)
    finally:
        handle.remove()
    assert torch.bfloat16 in dtypes  # autocast really ran: some layer computed in bf16
    assert out["maps"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert torch.isfinite(out["maps"]).all() and torch.isfinite(out["scores"]).all()
    assert out["scores"].std() > 0
    assert all(math.isfinite(loss) for loss in model.train_result.losses)
