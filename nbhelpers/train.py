"""The one training loop of the collection: device, bf16 autocast on CUDA, progress bar with an
on/off switch, atomic checkpoints with resume, seeded shuffling, and a clear stop on NaN/inf loss.

Methods call :func:`fit` with a ``loss_fn(batch) -> Tensor | dict[str, Tensor]`` (a dict must hold
``"loss"``; its other entries are logged).
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nbhelpers import distributed as dist
from nbhelpers.errors import NbhelpersError
from nbhelpers.progress import progress

CHECKPOINT_FORMAT = "nbhelpers-checkpoint-v1"


class TrainingError(NbhelpersError, RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says at which step and why."""


class CheckpointError(NbhelpersError, ValueError):
    """A checkpoint file is missing, unreadable, not ours, or of another method."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` atomically: a temporary file in the same folder, then
    ``os.replace``, so an interruption never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, expect: dict[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (data, not code).

    Args:
        expect: entries that must match (e.g. ``{"method": "thfr"}``).

    Raises:
        CheckpointError: missing/unreadable file, a file that is not an nbhelpers checkpoint, or a mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable nbhelpers checkpoint ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0]}). Only files written by nbhelpers' save() are loaded.") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an nbhelpers checkpoint (no '{CHECKPOINT_FORMAT}' marker).")
    for key, value in (expect or {}).items():
        if ckpt.get(key) != value:
            raise CheckpointError(f"{path}: checkpoint has {key}={ckpt.get(key)!r}, expected {value!r}.")
    return ckpt


@dataclass
class TrainResult:
    """What :func:`fit` returns: mean loss per epoch, per-term means per epoch, steps done."""

    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    resumed_from: int = 0


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device`` (non-blocking)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class _LossModule(nn.Module):
    """Adapter that lets DistributedDataParallel drive any ``loss_fn(batch)``: DDP's gradient hooks sit
    on ``model``'s parameters, which ``loss_fn`` uses, and its forward bookkeeping runs on this call."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(batch)


def _sharded(loader: Any, seed: int) -> Any:
    """The same loader with a ``DistributedSampler`` (each rank sees its share of every epoch)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, drop_last=loader.drop_last, pin_memory=loader.pin_memory)


def fit(model: nn.Module, loss_fn: Callable[[Any], torch.Tensor | dict[str, torch.Tensor]], loader: Iterable,
        optimizer: torch.optim.Optimizer, epochs: int, device: torch.device, *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, checkpoint: str | Path | None = None,
        resume: bool = True, amp: bool = True, show_progress: bool = True, desc: str = "train",
        seed: int = 0, grad_clip: float | None = None) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs.

    Each epoch re-seeds the loader's shuffling generator with ``seed + epoch`` (or calls
    ``sampler.set_epoch``) and ``loader.dataset.set_epoch(epoch)`` when it exists, so a run resumed
    from the checkpoint of epoch ``e`` sees exactly the batches an uninterrupted run would. After each
    epoch the model, optimizer, scheduler and history are written atomically to ``checkpoint``.

    Inside a process group (``torchrun``, see :mod:`nbhelpers.distributed`) the loader is sharded
    with ``DistributedSampler``, the model is wrapped in ``DistributedDataParallel`` (gradients are
    averaged over ranks, so per-rank batch B on N ranks equals batch N*B in one process), epoch losses
    are averaged over ranks, and only rank 0 writes the checkpoint.

    Raises:
        TrainingError: the loss became NaN/inf (the message gives the epoch, step and last finite loss).
    """
    result = TrainResult()
    start = 0
    compute: Callable[[Any], Any] = loss_fn
    if dist.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        loader = _sharded(loader, seed)
        compute = DistributedDataParallel(_LossModule(model, loss_fn),
                                          device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, expect={"kind": "train"}, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        result.losses, result.terms, result.steps = list(state["losses"]), list(state["terms"]), state["steps"]
        start = result.resumed_from = state["epoch"] + 1
    last_finite = result.losses[-1] if result.losses else float("nan")
    for epoch in range(start, epochs):
        model.train()
        generator = getattr(loader, "generator", None)
        if generator is not None:
            generator.manual_seed(seed + epoch)
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if hasattr(getattr(loader, "dataset", None), "set_epoch"):
            loader.dataset.set_epoch(epoch)
        sums: dict[str, float] = {}
        n = 0
        bar = progress(loader, desc=f"{desc} {epoch + 1}/{epochs}", enabled=show_progress)
        for batch in bar:
            batch = to_device(batch, device)
            with autocast(device, amp):
                out = compute(batch)
            terms = out if isinstance(out, dict) else {"loss": out}
            loss = terms["loss"]
            value = float(dist.all_reduce_mean(loss.detach().float()))
            if not math.isfinite(value):
                raise TrainingError(f"{desc}: loss became {value} at epoch {epoch + 1}, step {result.steps + 1}; "
                                    f"last finite loss {last_finite:.6g}. Lower the learning rate or check the data.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            last_finite = value
            result.steps += 1
            n += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if scheduler is not None:
            scheduler.step()
        means = {k: v / max(n, 1) for k, v in sums.items()}
        if dist.is_distributed():
            reduced = dist.all_reduce_mean(torch.tensor(list(means.values()), dtype=torch.float64, device=device))
            means = dict(zip(means, reduced.tolist()))
        result.losses.append(means.get("loss", float("nan")))
        result.terms.append(means)
        if checkpoint is not None and dist.is_main():
            save_checkpoint(checkpoint, {
                "kind": "train", "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "losses": result.losses, "terms": result.terms, "steps": result.steps})
        dist.barrier()
    return result
