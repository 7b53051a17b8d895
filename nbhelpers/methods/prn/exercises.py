"""The checked exercises of PRN (notebook 05): each compares a student's function with the package's."""

from __future__ import annotations

from typing import Any

import torch

from nbhelpers.exercises.core import Exercise, register
from nbhelpers.exercises.trials import random_int, random_ints, seeded_module, trial_generator
from nbhelpers.methods import prn


def _residual_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    b, k, c, h, w = random_ints(g, (2, 5), (2, 5), (2, 6), (2, 4), (2, 5))
    prototypes = torch.randn(k, c, h, w, generator=g)
    near = prototypes[torch.randint(k, (b,), generator=g)]
    return {"features": near + 0.7 * torch.randn(b, c, h, w, generator=g), "prototypes": prototypes}


def _nearest_residual(features: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mp = prn.MultiScalePrototypes(1)
    mp.assign([prototypes])
    residuals, index = mp([features])
    return residuals[0], index[:, 0]


def _attention_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    c, ph, pw = random_int(g, 2, 4), random_int(g, 1, 2), random_int(g, 1, 2)
    size = (ph * random_int(g, 2, 3), pw * random_int(g, 2, 3))
    head = seeded_module(seed, lambda: prn.PatchAttentionHead(c, size, (ph, pw)))
    return {"head": head, "x": torch.randn(random_int(g, 1, 3), c, *size, generator=g)}


def _patch_attention(head: prn.PatchAttentionHead, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return head(x)


def _loss_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    shape = (random_int(g, 1, 4), 1, random_int(g, 4, 8), random_int(g, 4, 8))
    return {
        "logits": 3 * torch.randn(shape, generator=g).clamp(-1.3, 1.3),
        "mask": (torch.rand(shape, generator=g) < 0.3).float(),
    }


def _prn_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return prn.prn_loss(logits, mask, alpha=0.5, gamma=4.0, weight=5.0)["loss"]


register(
    Exercise(
        "prn_nearest_residual",
        "05",
        "PRN Eq. 1",
        "my_nearest_residual",
        "The nearest prototype of each feature map (L2 over the whole map) and the element-wise residual |F - P*|.",
        _nearest_residual,
        _residual_inputs,
        grad=("features",),
    )
)
register(
    Exercise(
        "prn_patch_attention",
        "05",
        "PRN Eq. 3",
        "my_patch_attention",
        "One MSA head: self-attention between the patches of a map, scaled by 1 / (C p_h p_w).",
        _patch_attention,
        _attention_inputs,
        grad=("x",),
    )
)
register(
    Exercise(
        "prn_loss",
        "05",
        "PRN Eq. 5",
        "my_prn_loss",
        "Smooth-L1 plus 5 x focal loss (alpha 0.5, gamma 4) between sigmoid(logits) and the mask.",
        _prn_loss,
        _loss_inputs,
        grad=("logits",),
    )
)
