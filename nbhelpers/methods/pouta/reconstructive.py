"""POUTA's reconstructive network: DRAEM's encoder-decoder without skips, whose features are reused."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.layers import conv_bn_relu
from nbhelpers.methods.pouta.config import LEVELS


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """DRAEM's block: two (3x3 conv with bias, BatchNorm, ReLU). ``float[B,c_in,H,W] -> float[B,c_out,H,W]``."""
    return nn.Sequential(*conv_bn_relu(c_in, c_out, 3, bias=True), *conv_bn_relu(c_out, c_out, 3, bias=True))


def level_widths(base_width: int) -> tuple[int, ...]:
    """Encoder widths ``c_1..c_4`` and the mapping width ``c_5`` (DRAEM: 128-256-512-1024-1024)."""
    return (base_width, 2 * base_width, 4 * base_width, 8 * base_width, 8 * base_width)


class Encoder(nn.Module):
    """Reconstructive encoder: level 1 at full resolution, each next level after a 2x max-pool.

    ``float[B,3,H,W] -> [F_E1 float[B,c_1,H,W], ..., F_E4 float[B,c_4,H/8,W/8]]``.
    """

    def __init__(self, widths: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        chans = (in_channels, *widths[:LEVELS])
        self.stages = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(LEVELS))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


class MappingLayer(nn.Module):
    """Maps ``F_E4`` to the normal latent space: ``float[B,c_4,h,w] -> F_M float[B,c_5,h/2,w/2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = conv_block(c_in, c_out)

    def forward(self, f_e4: torch.Tensor) -> torch.Tensor:
        return self.block(F.max_pool2d(f_e4, 2))


class Decoder(nn.Module):
    """Reconstructive decoder, the mirror of :class:`Encoder` (no skip connections).

    Each level upsamples 2x (bilinear) and applies a conv block, so ``F_Di`` has the shape of
    ``F_Ei``; a final 3x3 conv gives the image. ``F_M -> ([F_D1, ..., F_D4], I_r float[B,3,H,W])``.
    """

    def __init__(self, widths: Sequence[int], out_channels: int = 3) -> None:
        super().__init__()
        # stages[j] builds F_D(4-j): from c_(5-j) to c_(4-j) channels
        self.stages = nn.ModuleList(conv_block(widths[LEVELS - j], widths[LEVELS - 1 - j]) for j in range(LEVELS))
        self.output = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, f_m: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x, feats = f_m, []
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            feats.append(x)
        return feats[::-1], self.output(x)


class ReconstructiveNetwork(nn.Module):
    """Encoder, mapping layer and decoder (Sec. III-A).

    ``forward(x float[B,3,H,W] in [0,1])`` returns ``{"encoder": [F_E1..F_E4], "latent": F_M,
    "decoder": [F_D1..F_D4], "reconstruction": I_r float[B,3,H,W]}``; ``H, W`` must be multiples of 16.
    """

    def __init__(self, base_width: int) -> None:
        super().__init__()
        widths = level_widths(base_width)
        self.widths = widths
        self.encoder = Encoder(widths)
        self.mapping = MappingLayer(widths[LEVELS - 1], widths[LEVELS])
        self.decoder = Decoder(widths)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"POUTA needs image sides divisible by 16, got {tuple(x.shape[-2:])}.")
        enc = self.encoder(x)
        latent = self.mapping(enc[-1])
        dec, image = self.decoder(latent)
        return {"encoder": enc, "latent": latent, "decoder": dec, "reconstruction": image}
