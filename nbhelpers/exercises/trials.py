"""Random trial inputs of the exercises: one seeded generator per trial, so a failure repeats."""
from __future__ import annotations

from collections.abc import Callable

import torch


def trial_generator(seed: int) -> torch.Generator:
    """The generator of trial ``seed`` (one per trial: a failure repeats with the same inputs)."""
    return torch.Generator().manual_seed(1000 + seed)


def random_int(gen: torch.Generator, low: int, high: int) -> int:
    """A random integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def random_ints(gen: torch.Generator, *ranges: tuple[int, int]) -> tuple[int, ...]:
    """One :func:`random_int` per ``(low, high)`` range, in order."""
    return tuple(random_int(gen, low, high) for low, high in ranges)


def seeded_module(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` with weights drawn from ``seed`` (global RNG state restored), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()
