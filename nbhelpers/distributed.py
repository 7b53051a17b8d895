"""Multi-process training on PyTorch's own engine (``torch.distributed`` + DistributedDataParallel).

Launch any training command with ``torchrun --nproc_per_node=N -m nbhelpers.cli train ...``:
:func:`init_from_env` joins the process group that torchrun describes in the environment, the
training loop (:func:`nbhelpers.train.fit`) shards batches with ``DistributedSampler`` and wraps the
model in ``DistributedDataParallel``; methods compute banks/prototypes on rank 0 and
:func:`broadcast` them; only rank 0 writes checkpoints and reports.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the process that writes files and reports."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's ``WORLD_SIZE`` / ``RANK`` / ``MASTER_ADDR`` variables.

    Returns False (and does nothing) outside torchrun. The backend defaults to NCCL with CUDA, else gloo;
    with CUDA each process takes GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return is_distributed()
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return True


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (shape and dtype must agree); identity in one process."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def to_device(obj: T, device: torch.device | str) -> T:
    """``obj`` with every tensor moved to ``device``: tensors, lists, tuples (named too), dicts and
    dataclasses (rebuilt, so ``__post_init__`` derivations follow), recursively; other values as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_device(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def computed_once(fn: Callable[[], T], device: torch.device | str) -> T:
    """``fn()`` computed on rank 0 only and sent to every rank, its tensors on ``device``.

    For what every process would otherwise compute alike before training — memory banks, template
    banks, k-means prototypes, reference features: the other ranks wait instead of repeating the pass
    over the training set, and all ranks hold bit-identical copies. ``fn`` must not call collectives.
    The result travels pickled through CPU (``broadcast_object_list``). In one process: ``fn()``.
    """
    if not is_distributed():
        return fn()
    box: list[Any] = [to_device(fn(), "cpu") if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return to_device(box[0], device)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (identity in one process)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def barrier() -> None:
    if is_distributed():
        dist.barrier()
