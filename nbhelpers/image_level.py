"""Image-level nearest neighbour: a global comparison with the normal training images, no training.

The positive control of SynthAD's logical categories: their anomalies are built from local
appearances that all occur in normal images (so the patch-level baseline cannot see them), while a
comparison of *whole* images can. Two such comparisons, both cosine distances to the nearest
normal training image of one backbone level:

* ``template``: the flattened feature map (``C x H x W`` values, position kept). This is THFR's
  image-level NNS (Eq. 1, :func:`nbhelpers.methods.thfr.image_nns`) used as a detector, as in
  notebook 02: sensitive to *which part is where*.
* ``pooled``: the channel means (global average pooling, position dropped): sensitive to *how many*
  of each appearance an image holds, blind to where.

Example:
    >>> from nbhelpers.data.layouts import load_split                       # doctest: +SKIP
    >>> split = load_split("data/synthad", "kit")                           # doctest: +SKIP
    >>> scores = image_level_scores(split.train, split.test)                # doctest: +SKIP
    >>> sorted(scores)                                                      # doctest: +SKIP
    ['pooled', 'template']
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nbhelpers import get_device
from nbhelpers.backbones import PACKAGED, FeatureExtractor
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import AnomalyDataset, make_loader
from nbhelpers.methods.thfr import image_nns

__all__ = ["KEYS", "image_keys", "image_level_scores"]

#: The image-level comparisons :func:`image_level_scores` computes.
KEYS = ("template", "pooled")


@torch.no_grad()
def image_keys(samples: Sequence[Sample], backbone: FeatureExtractor, image_size: int, batch_size: int = 8,
               device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """L2-normalised image keys of ``samples`` from the backbone's last level.

    Returns ``{"template": float[N, C*H*W], "pooled": float[N, C]}``.
    """
    device = device or torch.device("cpu")
    loader = make_loader(AnomalyDataset(samples, image_size, backbone.mean, backbone.std), batch_size)
    deepest = torch.cat([backbone(batch["image"].to(device))[-1] for batch in loader])  # [N, C, H, W]
    return {"template": F.normalize(deepest.flatten(1), dim=1), "pooled": F.normalize(deepest.mean((2, 3)), dim=1)}


def image_level_scores(train: Sequence[Sample], test: Sequence[Sample], backbone: str = "efficientnet_lite0",
                       weights: str | None = PACKAGED, layer: int = 3, image_size: int = 256,
                       batch_size: int = 8, device: str = "auto") -> dict[str, np.ndarray]:
    """Anomaly score of every test image: ``1 - cos`` to its nearest normal training image.

    Args:
        train, test: records (``Split.train`` / ``Split.test``).
        backbone, weights: the pre-trained extractor (the offline default is the baseline's).
        layer: the backbone level compared (3: Lite0's 112-channel stride-16 stage, THFR's deepest level).
        image_size: input side in pixels.

    Returns:
        ``{"template": float[N_test], "pooled": float[N_test]}`` (see the module docstring).
    """
    dev = get_device(device)
    extractor = FeatureExtractor(backbone, (layer,), weights).to(dev)
    bank = image_keys(train, extractor, image_size, batch_size, dev)
    queries = image_keys(test, extractor, image_size, batch_size, dev)
    return {k: (1 - image_nns(queries[k], bank[k], n=1)[1][:, 0]).cpu().numpy() for k in KEYS}
