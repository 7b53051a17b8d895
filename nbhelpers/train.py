"""The one training loop of the collection: device, bf16 autocast on CUDA, progress bar with an
on/off switch, atomic checkpoints with resume, seeded shuffling, and a clear stop on NaN/inf loss
or when the device runs out of memory.

Methods call :func:`fit` with a ``loss_fn(batch) -> Tensor | dict[str, Tensor]`` (a dict must hold
``"loss"``; its other entries are logged). Inside a :func:`checkpointing` block every such call
writes a checkpoint after each epoch and resumes from it, without the method passing a path.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from nbhelpers import distributed as dist
from nbhelpers.errors import DeviceMemoryError, NbhelpersError
from nbhelpers.outputs import atomic_file
from nbhelpers.progress import progress

T = TypeVar("T")

CHECKPOINT_FORMAT = "nbhelpers-checkpoint-v1"


class TrainingError(NbhelpersError, RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says at which step and why."""


class CheckpointError(NbhelpersError, ValueError):
    """A checkpoint file is missing, unreadable, not ours, or of another method."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` atomically: a temporary file in the same folder, then
    ``os.replace``, so an interruption never leaves a half-written checkpoint."""
    with atomic_file(path, "wb") as fh:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, fh)
    return Path(path)


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


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`save_checkpoint` (a torch zip archive holding the
    format marker); other files are not read beyond their first bytes."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return False
        load_checkpoint(path)
    except (OSError, CheckpointError):
        return False
    return True


_CHECKPOINTING: ContextVar[tuple[Path, bool] | None] = ContextVar("nbhelpers_checkpointing", default=None)


@contextlib.contextmanager
def checkpointing(folder: str | Path, resume: bool = True) -> Iterator[Path]:
    """Checkpoint every :func:`fit` call inside the block that has no ``checkpoint`` of its own.

    Each training loop writes ``folder/<desc>.pt`` (``desc`` as passed to :func:`fit`, spaces as
    ``_``) after every epoch; with ``resume`` a loop whose file exists continues after its last
    epoch, otherwise it starts afresh and overwrites it. This makes any method's ``fit`` resumable
    without the method handling paths (:meth:`~nbhelpers.methods.base.AnomalyMethod.fit_and_save`,
    ``nbhelpers train --resume``).
    """
    token = _CHECKPOINTING.set((Path(folder), resume))
    try:
        yield Path(folder)
    finally:
        _CHECKPOINTING.reset(token)


def _rng_state(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """Every random state a training step may draw from, as plain tensors and numbers (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
            "generators": [g.get_state() for g in generators]}


def _set_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator]) -> None:
    """Inverse of :func:`_rng_state` (its tensors may come back on the training device)."""
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    for g, g_state in zip(generators, state["generators"]):
        g.set_state(g_state.cpu())


def _restore(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None, generators: Sequence[torch.Generator],
             device: torch.device) -> dict[str, Any]:
    """Load a training checkpoint of :func:`fit` into the model, optimizer, scheduler and random states."""
    state = load_checkpoint(checkpoint, expect={"kind": "train"}, map_location=device)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint}: training checkpoint does not fit this model or optimizer "
                              f"({str(exc).splitlines()[0]}). It was written with other settings: delete it "
                              "or train without resuming.") from exc
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    if state.get("rng"):
        _set_rng_state(state["rng"], generators)
    return state


def _batch_images(batch: Any) -> int | None:
    """Images in a batch (groups x members for ``[G,M,3,H,W]``), or its length; ``None`` if unknown."""
    x = batch.get("image") if isinstance(batch, dict) else batch
    if isinstance(x, (list, tuple)) and x:
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    return x.numel() // math.prod(x.shape[-3:]) if x.dim() >= 4 else x.shape[0]


def reporting_out_of_memory(run: Callable[[], T], what: str, batch: Any, device: torch.device) -> T:
    """``run()``, with CUDA out-of-memory turned into a :class:`DeviceMemoryError` for ``batch`` during
    ``what`` that gives the batch size and what to lower.

    The error is raised after the ``except`` block is left, so the activations the traceback of the
    ``OutOfMemoryError`` holds are released (and the CUDA cache emptied) before a notebook goes on.
    """
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        pass
    if device.type == "cuda":
        torch.cuda.empty_cache()
    n = _batch_images(batch)
    size = f"a batch of {n} images" if n is not None else "one batch"
    raise DeviceMemoryError(
        f"{what}: out of memory on {device} with {size}. Lower the method's batch_size (e.g. "
        f"--set batch_size={max(1, (n or 2) // 2)} or get_config(..., batch_size={max(1, (n or 2) // 2)})), "
        "or its image_size, or pick a smaller backbone; on CUDA, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
        "also reduces fragmentation.")


@dataclass
class TrainResult:
    """What :func:`fit` returns: mean loss per epoch, per-term means per epoch, steps done."""

    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    resumed_from: int = 0


BF16_ON_CPU = "NBHELPERS_BF16_CPU"
"""Environment switch: ``1`` turns bf16 autocast on for CPU too, so the tests run the mixed-precision
code path of every method (dtype promotion, float32 islands) on a machine without a GPU."""


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (and on CPU when ``NBHELPERS_BF16_CPU=1``); a no-op context elsewhere."""
    on = device.type == "cuda" or (device.type == "cpu" and os.environ.get(BF16_ON_CPU) == "1")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and on)


def full_precision(device: torch.device):
    """A float32 island inside :func:`autocast` (distances, losses, maps): autocast off for ``device``
    (tensors on other devices, e.g. ``meta`` for FLOP counting, count as CPU)."""
    return torch.autocast(device_type="cuda" if device.type == "cuda" else "cpu", enabled=False)


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


def _step(compute: Callable[[Any], Any], batch: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
          device: torch.device, amp: bool, grad_clip: float | None) -> tuple[float, dict[str, float]]:
    """One optimisation step. Returns the loss (mean over ranks) and the logged terms as floats; a
    non-finite loss returns ``(loss, {})`` before anything is updated."""
    with autocast(device, amp):
        out = compute(batch)
    terms = out if isinstance(out, dict) else {"loss": out}
    loss = terms["loss"]
    value = float(dist.all_reduce_mean(loss.detach().float()))
    if not math.isfinite(value):
        return value, {}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return value, {k: float(v.detach()) for k, v in terms.items()}


def fit(model: nn.Module, loss_fn: Callable[[Any], torch.Tensor | dict[str, torch.Tensor]], loader: Iterable,
        optimizer: torch.optim.Optimizer, epochs: int, device: torch.device, *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, checkpoint: str | Path | None = None,
        resume: bool = True, amp: bool = True, show_progress: bool = True, desc: str = "train",
        seed: int = 0, grad_clip: float | None = None, generators: Sequence[torch.Generator] = ()) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs.

    Each epoch re-seeds the loader's shuffling generator with ``seed + epoch`` (or calls
    ``sampler.set_epoch``) and ``loader.dataset.set_epoch(epoch)`` when it exists, so a run resumed
    from the checkpoint of epoch ``e`` sees exactly the batches an uninterrupted run would. After each
    epoch the model, optimizer, scheduler, history and random states (global ones and those of
    ``generators``, the private generators ``loss_fn`` draws from) are written atomically to
    ``checkpoint`` (default inside a :func:`checkpointing` block: ``<folder>/<desc>.pt``); with
    ``resume`` an existing checkpoint is continued, so an interrupted run (Ctrl-C, SIGTERM) resumed
    on the CPU ends with the same weights as an uninterrupted one.

    Inside a process group (``torchrun``, see :mod:`nbhelpers.distributed`) the loader is sharded
    with ``DistributedSampler``, the model is wrapped in ``DistributedDataParallel`` (gradients are
    averaged over ranks, so per-rank batch B on N ranks equals batch N*B in one process), epoch losses
    are averaged over ranks, and only rank 0 writes the checkpoint.

    Raises:
        TrainingError: the loss became NaN/inf (the message gives the epoch, step and last finite
            loss; with a checkpoint the model is first restored to it).
        DeviceMemoryError: the device ran out of memory (the message gives the batch size and what to lower).
        CheckpointError: the checkpoint to resume from is not ours or does not fit the model.
    """
    result = TrainResult()
    start = 0
    compute: Callable[[Any], Any] = loss_fn
    if checkpoint is None and (auto := _CHECKPOINTING.get()) is not None:
        checkpoint, resume = auto[0] / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', desc)}.pt", auto[1]
    if dist.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        loader = _sharded(loader, seed)
        compute = DistributedDataParallel(_LossModule(model, loss_fn),
                                          device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        state = _restore(Path(checkpoint), model, optimizer, scheduler, generators, device)
        result.losses, result.terms, result.steps = list(state["losses"]), list(state["terms"]), state["steps"]
        start = result.resumed_from = state["epoch"] + 1
        if dist.is_main():
            print(f"[{desc}] resumed from {checkpoint}: {start} of {epochs} epochs done", file=sys.stderr)
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
            value, terms = reporting_out_of_memory(
                lambda: _step(compute, to_device(batch, device), model, optimizer, device, amp, grad_clip),
                f"{desc}: epoch {epoch + 1}, step {result.steps + 1}", batch, device)
            if not math.isfinite(value):
                restored = ""
                if checkpoint is not None and Path(checkpoint).is_file():
                    done = _restore(Path(checkpoint), model, optimizer, scheduler, generators, device)["epoch"] + 1
                    restored = f" The model was restored from the last checkpoint {checkpoint} ({done} epochs)."
                raise TrainingError(f"{desc}: loss became {value} at epoch {epoch + 1}, step {result.steps + 1}; "
                                    f"last finite loss {last_finite:.6g}.{restored} Lower the learning rate "
                                    "(lr) or check the data.")
            last_finite = value
            result.steps += 1
            n += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
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
                "losses": result.losses, "terms": result.terms, "steps": result.steps,
                "rng": _rng_state(generators)})
        dist.barrier()
    return result
