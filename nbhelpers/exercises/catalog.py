"""The exercises of the data and metrics lessons (notebooks 00-01); each method's own are in its
package (``nbhelpers/methods/<method>/exercises.py``), found through the method registry.

Each exercise is checked against the package's own implementation (imported here, never re-written);
the small adapters below only pick one output of a package function or call a package module.
Input generators draw every size at random too, so that an answer that confuses two axes fails.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nbhelpers import metrics
from nbhelpers.data.records import Region
from nbhelpers.exercises.core import Exercise, register

# ------------------------------------------------------------------------------- 00 · data


def _saturation_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(12, 24, size=2)
    mask = rng.random((h, w)) < rng.uniform(0.2, 0.6)
    mode = seed % 3  # relative, absolute, none
    saturation = (None if mode == 2 else float(rng.uniform(0.2, 1.5)) if mode == 0
                  else float(rng.uniform(5, 3 * mask.sum())))
    region = Region(Path("ground_truth/defect/000/000.png"), saturation, relative=mode == 0)
    return {"region": region, "mask": mask, "scale": float(rng.uniform(0.2, 1.0))}


register(Exercise(
    "data_saturation_pixels", "00", "MVTec LOCO sPRO, saturation", "my_saturation_pixels",
    "How many pixels of a LOCO region must be flagged before it counts as fully found?",
    metrics.saturation_pixels, _saturation_inputs))


# ---------------------------------------------------------------------------- 01 · metrics


def _auroc_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 40))
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2), 1)  # rounding makes ties
    return {"scores": scores, "labels": labels}


def _aupro_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(2, 5)), int(rng.integers(10, 16)), int(rng.integers(10, 16))
    masks = np.zeros((n, h, w), bool)
    for i in range(1, n):  # image 0 stays normal; the others get one or two rectangles
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks[i, y:y + rng.integers(2, 5), x:x + rng.integers(2, 5)] = True
    maps = rng.normal(size=(n, h, w)) + masks * rng.uniform(0.5, 2.0)
    if seed % 2:
        maps = np.round(maps, 1)  # ties between pixels
    return {"maps": maps, "masks": masks, "fpr_limit": (0.3, 0.1, 1.0)[seed % 3]}


register(Exercise(
    "metrics_image_auroc", "01", "image AUROC", "my_image_auroc",
    "The probability that a random anomalous image scores higher than a random normal one (ties count 1/2).",
    metrics.image_auroc, _auroc_inputs))
register(Exercise(
    "metrics_aupro", "01", "MVTec AD AUPRO", "my_aupro",
    "Area under the per-region-overlap curve up to an FPR limit, divided by the limit.",
    metrics.aupro, _aupro_inputs))
