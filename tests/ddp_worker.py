"""Launched by tests/test_distributed.py under torchrun: trains a small model with nbhelpers.train.fit
and (rank 0) writes the loss trajectory and final weights as JSON to argv[1]."""
import json
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nbhelpers import distributed, seed_everything
from nbhelpers.train import fit


def problem(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1)


def train(batch_size: int, loader: DataLoader | None = None, checkpoint: str | None = None) -> dict:
    seed_everything(0)
    torch.set_num_threads(1)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = loader or DataLoader(problem(), batch_size=batch_size, shuffle=True)
    res = fit(model, lambda b: nn.functional.mse_loss(model(b[0])[:, 0], b[1]), loader, opt, 3,
              torch.device("cpu"), show_progress=False, checkpoint=checkpoint)
    return {"losses": res.losses, "weight": model.weight.detach().flatten().tolist(), "steps": res.steps,
            "world_size": distributed.world_size()}


def bank_on_rank() -> dict:
    """What ``computed_once`` hands every rank: rank 0's value, computed there only."""
    calls = []

    def build():
        calls.append(distributed.rank())
        return {"bank": torch.full((2, 3), float(distributed.rank())), "names": ["a", "b"]}

    got = distributed.computed_once(build, "cpu")
    return {"bank": got["bank"].tolist(), "names": got["names"], "calls": calls}


if __name__ == "__main__":
    assert distributed.init_from_env()
    once = [None, None]
    torch.distributed.all_gather_object(once, bank_on_rank())
    out = train(batch_size=4, checkpoint=sys.argv[2] if len(sys.argv) > 2 else None)
    out["computed_once"] = once
    if distributed.is_main():
        with open(sys.argv[1], "w") as fh:
            json.dump(out, fh)
    # an orderly shutdown: without it the gloo threads can be torn down mid-exit (SIGABRT, "terminate called
    # without an active exception"), which failed this test once in a loaded full run
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
