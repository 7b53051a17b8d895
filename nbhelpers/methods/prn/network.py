"""PRN's segmentation network: prototypes, fusion, attention and a U-Net-like decoder to one logit."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.layers import conv_bn_relu
from nbhelpers.methods.prn.attention import MultiSizeSelfAttention
from nbhelpers.methods.prn.fusion import MultiScaleFusion
from nbhelpers.methods.prn.prototypes import MultiScalePrototypes


class UpBlock(nn.Module):
    """U-Net decoder step: bilinear up-sampling to the skip's size + conv, concatenation with the
    skip, two convs. ``(float[B,C_in,h,w], skip float[B,C_s,2h,2w]) -> float[B,C_out,2h,2w]``."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = conv_bn_relu(in_channels, out_channels, 3)
        self.fuse = nn.Sequential(conv_bn_relu(out_channels + skip_channels, out_channels, 3),
                                  conv_bn_relu(out_channels, out_channels, 3))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """U-Net-like decoder (Fig. 3): from the deepest backbone map through the skips (deepest first)
    to one anomaly logit per input pixel.

    Args:
        bottleneck_channels: channels of the deepest backbone map.
        skip_channels: channels of each skip, finest first. widths: decoder channels per scale.
        head_channels: channels of the last conv before the per-pixel logit.

    ``forward(bottleneck, skips (finest first), out_size) -> float[B,1,H,W]`` (logits).
    """

    def __init__(self, bottleneck_channels: int, skip_channels: Sequence[int], widths: Sequence[int],
                 head_channels: int = 16) -> None:
        super().__init__()
        ins = [*widths[1:], bottleneck_channels]
        self.blocks = nn.ModuleList(UpBlock(i, s, w) for i, s, w in zip(ins, skip_channels, widths))
        self.head = conv_bn_relu(widths[0], head_channels, 3)
        self.out = nn.Conv2d(head_channels, 1, 3, padding=1)

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor],
                out_size: tuple[int, int]) -> torch.Tensor:
        x = bottleneck
        for block, skip in zip(reversed(self.blocks), reversed(skips)):
            x = block(x, skip)
        x = F.interpolate(self.head(x), size=out_size, mode="bilinear", align_corners=False)
        return self.out(x)


class PrototypicalResidualNetwork(nn.Module):
    """The trainable part of PRN (Fig. 3) on top of frozen backbone maps.

    Args:
        channels, reductions, sizes: per skip scale (finest first): backbone channels, strides and
            map sizes ``(h, w)`` at the training resolution.
        bottleneck_channels: channels of the deepest backbone map (decoder input).
        msa_depth, patch_divisors: MSA blocks per scale and head patch sizes.
        msa_embedding, msa_scale: Q/K embedding and logit scale of every head (:class:`PatchAttentionHead`).
        prototype_window: residuals to the nearest prototype feature within this many cells (0: Eq. 1's
            nearest whole map); see :class:`MultiScalePrototypes`.
        use_prototypes, use_msa, use_fusion: Table 4 switches.

    ``forward(features (skip scales + bottleneck), out_size, details=False)`` returns logits
    ``float[B,1,H,W]`` and, with ``details``, ``{"prototype_index": long[B,S], "residuals":
    list[float[B,C_j,h_j,w_j]], "attention": list (scale) of list (head) of float[B,N,N]}``
    (attention of the last MSA block).
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], sizes: Sequence[tuple[int, int]],
                 bottleneck_channels: int, msa_depth: int = 3, patch_divisors: Sequence[int] = (1, 2, 4, 8),
                 use_prototypes: bool = True, use_msa: bool = True, use_fusion: bool = True,
                 msa_embedding: str = "pointwise", msa_scale: str = "dim", prototype_window: int = 0) -> None:
        super().__init__()
        n = len(channels)
        skip = [c * (2 if use_prototypes else 1) for c in channels]
        self.prototypes = MultiScalePrototypes(n, prototype_window) if use_prototypes else None
        self.feature_fusion = MultiScaleFusion(channels, reductions) if use_fusion else None
        self.residual_fusion = MultiScaleFusion(channels, reductions) if use_fusion and use_prototypes else None
        self.attention = nn.ModuleList(
            nn.ModuleList(MultiSizeSelfAttention(skip[j], sizes[j], patch_divisors, msa_embedding, msa_scale)
                          for _ in range(msa_depth))
            for j in range(n)) if use_msa and msa_depth > 0 else None
        self.skip_fusion = MultiScaleFusion(skip, reductions) if use_fusion and self.attention is not None else None
        self.decoder = Decoder(bottleneck_channels, skip, list(channels))

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int],
                details: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        feats, bottleneck = list(features[:-1]), features[-1]
        info: dict[str, Any] = {"attention": []}
        skips = self.feature_fusion(feats) if self.feature_fusion is not None else feats
        if self.prototypes is not None:
            residuals, info["prototype_index"] = self.prototypes(feats)
            info["residuals"] = residuals
            fused = self.residual_fusion(residuals) if self.residual_fusion is not None else residuals
            skips = [torch.cat([f, r.to(f.dtype)], dim=1) for f, r in zip(skips, fused)]
        if self.attention is not None:
            out = []
            for x, blocks in zip(skips, self.attention):
                for block in blocks:
                    x, attn = block(x)
                out.append(x)
                info["attention"].append(attn)
            skips = self.skip_fusion(out) if self.skip_fusion is not None else out
        logits = self.decoder(bottleneck, skips, out_size)
        return (logits, info) if details else logits
