"""Anomaly-map post-processing shared by every method: upsampling, Gaussian smoothing, image scores."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``float[B,h,w]`` (or ``[B,1,h,w]``) maps to ``float[B,H,W]``."""
    if maps.dim() == 3:
        maps = maps[:, None]
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``float[B,H,W]`` maps (kernel 2*round(4*sigma)+1, as scipy's default
    truncation, reflection at the borders as torchvision's ``gaussian_blur``; on maps too small for that
    kernel's reflection padding, the largest kernel that fits).

    Computed as ``G_H^T M G_W`` with the :func:`gaussian_operator` of each side: two matrix products
    instead of a ``k x k`` convolution (27x faster on a CPU at 256 px, equal to ``gaussian_blur`` to
    float rounding).
    """
    if sigma <= 0:
        return maps
    k = min(2 * int(4 * sigma + 0.5) + 1, 2 * min(maps.shape[-2:]) - 1)
    rows = gaussian_operator(maps.shape[-2], sigma, k).to(maps.device)
    cols = gaussian_operator(maps.shape[-1], sigma, k).to(maps.device)
    return rows.T @ maps.float() @ cols


@functools.lru_cache(maxsize=16)
def gaussian_operator(n: int, sigma: float, k: int) -> torch.Tensor:
    """``float[n,n]`` matrix ``G`` of a 1-D Gaussian blur (``k`` taps, reflection padding) of a length-``n``
    signal ``x``: ``blurred = G^T x``; row ``i`` is the blurred unit impulse at ``i``."""
    taps = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    impulses = F.pad(torch.eye(n)[:, None], [k // 2, k // 2], mode="reflect")
    return F.conv1d(impulses, (kernel / kernel.sum()).view(1, 1, k))[:, 0]


def max_score(maps: torch.Tensor) -> torch.Tensor:
    """Image score = maximum of each ``float[B,H,W]`` map -> ``float[B]``."""
    return maps.flatten(1).amax(dim=1)
