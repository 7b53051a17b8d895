"""The checked exercises of POUTA (notebook 04): each compares a student's function with the package's."""

from __future__ import annotations

from typing import Any

import torch

from nbhelpers.exercises.core import Exercise, register
from nbhelpers.exercises.trials import random_int, random_ints, seeded_module, trial_generator
from nbhelpers.methods import pouta


def _hsg_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    b, d, d_deep, h, w = random_ints(g, (1, 3), (2, 5), (2, 5), (2, 4), (2, 4))
    module = seeded_module(seed, lambda: pouta.SemanticGuidance(d_deep, d))
    return {
        "hsg": module,
        "f_c": torch.randn(b, d, 2 * h, 2 * w, generator=g),
        "deep": torch.randn(b, d_deep, h, w, generator=g),
    }


def _semantic_guidance(hsg: pouta.SemanticGuidance, f_c: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    return hsg(f_c, deep)


def _segmentation_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    shape = (random_int(g, 1, 3), 1, random_int(g, 4, 8), random_int(g, 4, 8))
    return {
        "prob": 0.02 + 0.96 * torch.rand(shape, generator=g),
        "mask": (torch.rand(shape, generator=g) < 0.3).float(),
    }


def _segmentation_loss(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return pouta.segmentation_loss(prob, mask, gamma=2.0, alpha=None)


def _score_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    maps = torch.rand(random_int(g, 1, 4), random_int(g, 8, 14), random_int(g, 8, 14), generator=g)
    return {"maps": maps, "window": 2 * random_int(g, 1, 3) + 1}


register(
    Exercise(
        "pouta_semantic_guidance",
        "04",
        "POUTA Eq. 2-4",
        "my_semantic_guidance",
        "HSG: weight a contrastive map by a spatial and a channel weight computed from the deeper map.",
        _semantic_guidance,
        _hsg_inputs,
        grad=("f_c", "deep"),
    )
)
register(
    Exercise(
        "pouta_segmentation_loss",
        "04",
        "POUTA Eq. 5 / Eq. 7",
        "my_segmentation_loss",
        "Focal loss (gamma 2, no class weights) plus the L1 distance between predicted and true mask.",
        _segmentation_loss,
        _segmentation_inputs,
        grad=("prob",),
    )
)
register(
    Exercise(
        "pouta_image_score",
        "04",
        "POUTA §III-B, image score",
        "my_image_score",
        "The maximum of the window x window average pooling (stride 1, zero padding counted) of each map.",
        pouta.image_score,
        _score_inputs,
        grad=("maps",),
    )
)
