"""The checked exercises of THFR (notebooks 02-03): each compares a student's function with the package's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nbhelpers.exercises.core import Exercise, register
from nbhelpers.exercises.trials import random_int, random_ints, trial_generator
from nbhelpers.methods import thfr


def _nns_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    b, c, h, w, n_bank = random_ints(g, (2, 5), (3, 8), (2, 4), (2, 4), (6, 12))
    keys = F.normalize(torch.randn(n_bank, c * h * w, generator=g), dim=1)
    return {"query": torch.randn(b, c, h, w, generator=g), "keys": keys, "n": random_int(g, 1, 3)}


def _image_nns(query: torch.Tensor, keys: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return thfr.image_nns(query, keys, n)


def _others_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    return {
        "features": torch.randn(
            random_int(g, 5, 10), random_int(g, 3, 6), random_int(g, 2, 4), random_int(g, 2, 4), generator=g
        ),
        "n": random_int(g, 1, 3),
    }


def _nearest_others(features: torch.Tensor, n: int) -> torch.Tensor:
    return thfr.TemplateBank([features], [""] * len(features)).candidates(n)


def _relation_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    b, d, h, w = random_int(g, 1, 3), random_int(g, 2, 6), random_int(g, 2, 4), random_int(g, 2, 5)
    return {"query": torch.randn(b, d, h, w, generator=g), "key": torch.randn(b, d, h, w, generator=g)}


def _levels_inputs(seed: int) -> dict[str, Any]:
    g = trial_generator(seed)
    b, side = random_int(g, 1, 3), random_int(g, 4, 6)
    shapes = [(random_int(g, 3, 6), side * 2 ** (2 - k), (side + 1) * 2 ** (2 - k)) for k in range(random_int(g, 2, 3))]
    features = [torch.randn(b, *s, generator=g) for s in shapes]
    restored = [f + 0.5 * torch.randn(f.shape, generator=g) for f in features]
    return {"features": features, "restored": restored, "size": (4 * side, 4 * (side + 1))}


def _anomaly_map(features: list[torch.Tensor], restored: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    return thfr.anomaly_map(features, restored, size, sigma=0.0)[0]


def _loss_levels_inputs(seed: int) -> dict[str, Any]:
    return {k: v for k, v in _levels_inputs(seed).items() if k != "size"}


register(
    Exercise(
        "thfr_image_nns",
        "02",
        "THFR Eq. 1",
        "my_image_nns",
        "The n most similar bank images of every query by cosine similarity of the flattened deepest level.",
        _image_nns,
        _nns_inputs,
        grad=("query",),
    )
)
register(
    Exercise(
        "thfr_nearest_others",
        "02",
        "THFR Eq. 1, training pairs",
        "my_nearest_others",
        "For every bank entry the n most similar *other* entries (the training templates).",
        _nearest_others,
        _others_inputs,
    )
)
register(
    Exercise(
        "thfr_relation_feature",
        "03",
        "THFR Eq. 2",
        "my_relation_feature",
        "The bidirectional affinities between every input position and every template position.",
        thfr.relation_feature,
        _relation_inputs,
        grad=("query", "key"),
    )
)
register(
    Exercise(
        "thfr_restoration_loss",
        "03",
        "THFR Eq. 3",
        "my_restoration_loss",
        "Sum over levels of the mean cosine distance between original and restored features.",
        thfr.restoration_loss,
        _loss_levels_inputs,
        grad=("restored",),
    )
)
register(
    Exercise(
        "thfr_anomaly_map",
        "03",
        "THFR Eq. 4-5",
        "my_anomaly_map",
        "Per-level cosine-distance maps, upsampled to the image size and summed (no smoothing).",
        _anomaly_map,
        _levels_inputs,
        grad=("restored",),
    )
)
