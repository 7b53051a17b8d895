"""Anomaly-map post-processing shared by every method: upsampling, Gaussian smoothing, image scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``float[B,h,w]`` (or ``[B,1,h,w]``) maps to ``float[B,H,W]``."""
    if maps.dim() == 3:
        maps = maps[:, None]
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``float[B,H,W]`` maps (kernel 2*round(4*sigma)+1, as scipy's default
    truncation; on maps too small for that kernel's reflection padding, the largest kernel that fits)."""
    if sigma <= 0:
        return maps
    k = min(2 * int(4 * sigma + 0.5) + 1, 2 * min(maps.shape[-2:]) - 1)
    return gaussian_blur(maps[:, None].float(), kernel_size=[k, k], sigma=[sigma, sigma])[:, 0]


def max_score(maps: torch.Tensor) -> torch.Tensor:
    """Image score = maximum of each ``float[B,H,W]`` map -> ``float[B]``."""
    return maps.flatten(1).amax(dim=1)
