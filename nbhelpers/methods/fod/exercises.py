"""The checked exercises of FOD (notebook 06): each compares a student's function with the package's."""

from __future__ import annotations

from typing import Any

import torch

from nbhelpers.exercises.core import Exercise, register
from nbhelpers.exercises.trials import random_int, trial_generator
from nbhelpers.methods import fod


def _rbf_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    h, w, heads = random_int(g, 2, 4), random_int(g, 2, 5), random_int(g, 1, 3)
    pos = fod.grid_positions(h, w)
    keys = pos[torch.randperm(h * w, generator=g)[: random_int(g, 2, h * w)]]
    sigma = 0.3 + 1.7 * torch.rand(random_int(g, 1, 2), heads, h * w, 2, generator=g)
    return {"sigma": sigma, "distances": fod.squared_axis_distances(pos, keys)}


def _distribution_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    shape = (random_int(g, 1, 3), random_int(g, 2, 4), random_int(g, 3, 9))
    p, q = (torch.softmax(2 * torch.randn(shape, generator=g), -1) for _ in range(2))
    return {"p": p, "q": q}


def _patches_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    x = torch.randn(random_int(g, 1, 3), random_int(g, 3, 9), random_int(g, 2, 6), generator=g)
    return {"x": x, "x_hat": x + 0.5 * torch.randn(x.shape, generator=g)}


register(
    Exercise(
        "fod_rbf_target",
        "06",
        "FOD Eq. 5",
        "my_rbf_target",
        "RBF target correlation over the patch grid with one width per axis, each row normalised to sum 1.",
        fod.rbf_target,
        _rbf_inputs,
        grad=("sigma",),
    )
)
register(
    Exercise(
        "fod_symmetric_kl",
        "06",
        "FOD Eq. 6",
        "my_symmetric_kl",
        "Row-wise KL(p||q) + KL(q||p) with log(x + 1e-4), as in the official code.",
        fod.symmetric_kl,
        _distribution_inputs,
        grad=("p", "q"),
    )
)
register(
    Exercise(
        "fod_reconstruction_discrepancy",
        "06",
        "FOD Eq. 3 / Eq. 12",
        "my_reconstruction_discrepancy",
        "Per patch: the mean squared error plus the cosine distance between features and reconstruction.",
        fod.reconstruction_discrepancy,
        _patches_inputs,
        grad=("x", "x_hat"),
    )
)
