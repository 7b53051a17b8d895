"""PRN's multi-scale fusion of residual features (Sec. 3.2)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DepthwiseSeparableDown(nn.Module):
    """``f_rj`` for ``r < j`` (Sec. 3.2): depth-wise conv with stride ``s = 2^(j-r)``, kernel ``s + 1``,
    padding ``s / 2``, then a 1x1 point-wise conv. ``float[B,C_in,h,w] -> float[B,C_out,h/s,w/s]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, stride + 1, stride=stride, padding=stride // 2,
                                   groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class BilinearUp(nn.Module):
    """``f_rj`` for ``r > j`` (Sec. 3.2): bilinear up-sampling to the target size, then a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class MultiScaleFusion(nn.Module):
    """MF block (Sec. 3.2, Eq. 2, Fig. 4): ``F*_j = sum_r f_rj(F_r)`` with ``f_jj`` the identity.

    Args:
        channels: ``C_j`` per scale (outputs keep them).
        reductions: backbone stride per scale (consecutive scales differ by powers of 2).

    ``forward(list[float[B,C_j,h_j,w_j]]) -> list[float[B,C_j,h_j,w_j]]``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int]) -> None:
        super().__init__()
        n = len(channels)
        self.transforms = nn.ModuleList()
        for r in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if r < j:
                    row.append(DepthwiseSeparableDown(channels[r], channels[j], reductions[j] // reductions[r]))
                elif r > j:
                    row.append(BilinearUp(channels[r], channels[j]))
                else:
                    row.append(nn.Identity())
            self.transforms.append(row)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j, target in enumerate(xs):
            total = target
            for r, x in enumerate(xs):
                if r < j:
                    total = total + self.transforms[r][j](x)
                elif r > j:
                    total = total + self.transforms[r][j](x, target.shape[-2:])
            out.append(total)
        return out
