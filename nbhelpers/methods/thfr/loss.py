"""THFR's restoration loss (Eq. 3) and anomaly map (Eq. 4-5)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from nbhelpers.losses import cosine_distance_map
from nbhelpers.maps import smooth, upsample


def restoration_loss(features: Sequence[torch.Tensor], restored: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 3: ``sum_k mean_{h,w} (1 - cos(I_k(h,w), I^_k(h,w)))`` along the channel axis. ``-> float[]``."""
    return sum(cosine_distance_map(f, r).mean() for f, r in zip(features, restored))


def anomaly_map(features: Sequence[torch.Tensor], restored: Sequence[torch.Tensor], size: int | tuple[int, int],
                sigma: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 4-5: per-level maps ``M_k = 1 - cos`` upsampled to ``size``, summed, Gaussian-smoothed.

    Returns ``(float[B,H,W] smoothed map, [float[B,H_k,W_k] per-level maps])``.
    """
    levels = [cosine_distance_map(f, r) for f, r in zip(features, restored)]
    total = sum(upsample(m, size) for m in levels)
    return smooth(total, sigma), levels
