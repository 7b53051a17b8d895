"""DistributedDataParallel through the shared training loop: 2 CPU processes (gloo) under torchrun
follow the same loss trajectory as one process with the doubled batch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from nbhelpers import distributed
from nbhelpers.train import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import problem, train  # noqa: E402


def test_single_process_helpers_are_identities():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    t = torch.arange(3.0)
    assert distributed.broadcast(t) is t and torch.equal(distributed.all_reduce_mean(t), t)
    assert distributed.init_from_env() is False  # outside torchrun nothing happens
    assert distributed.computed_once(lambda: t, "cpu") is t


def test_to_device_rebuilds_containers_and_dataclasses():
    from nbhelpers.methods.prn import KMeansResult
    from nbhelpers.methods.thfr import TemplateBank

    bank = TemplateBank([torch.randn(3, 2, 2, 2, dtype=torch.float64)], ["a", "b", "c"])
    moved = distributed.to_device({"bank": bank, "k": KMeansResult(torch.ones(2), torch.zeros(2), 1.0, [1.0])},
                                  torch.device("cpu"))
    assert isinstance(moved["bank"], TemplateBank) and moved["bank"].paths == ["a", "b", "c"]
    assert torch.equal(moved["bank"].keys, bank.keys)  # __post_init__ ran again on the moved features
    assert isinstance(moved["k"], KMeansResult) and moved["k"].inertia == 1.0


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one_process(tmp_path):
    out, ckpt = tmp_path / "ddp.json", tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "ddp_worker.py"), str(out), str(ckpt)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["world_size"] == 2
    # reference: one process, batch 8, the permutation a DistributedSampler of one replica draws
    ds = problem()
    ref = train(8, DataLoader(ds, batch_size=8, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=0)))
    assert ddp["steps"] == ref["steps"] == 3 * 6
    assert ddp["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert ddp["weight"] == pytest.approx(ref["weight"], rel=1e-5, abs=1e-6)
    assert load_checkpoint(ckpt)["losses"] == pytest.approx(ddp["losses"])  # written once, by rank 0
    # banks / prototypes / reference features: computed on rank 0 only, the same copy on both ranks
    rank0, rank1 = ddp["computed_once"]
    assert rank0["calls"] == [0] and rank1["calls"] == []
    assert rank0["bank"] == rank1["bank"] == [[0.0] * 3] * 2 and rank1["names"] == ["a", "b"]
