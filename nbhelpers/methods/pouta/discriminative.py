"""POUTA's discriminative part: FCM (Eq. 2), HSG (Eq. 3-4), MSS heads (Eq. 5-6), and the vanilla U-Net of Fig. 4a."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.layers import conv_bn_relu
from nbhelpers.methods.pouta.config import LEVELS, Config
from nbhelpers.methods.pouta.reconstructive import ReconstructiveNetwork, conv_block
from nbhelpers.train import full_precision


class FeatureContrast(nn.Module):
    """FCM (Sec. III-B, Fig. 4): ``F_Ci = conv1x1([conv1x1(F_Ei), conv1x1(F_Di)])`` (each conv with BatchNorm + ReLU).

    ``float[B,c,h,w] x float[B,c,h,w] -> float[B,d,h,w]``.
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.encoder_proj = conv_bn_relu(channels, width, bias=True)
        self.decoder_proj = conv_bn_relu(channels, width, bias=True)
        self.fuse = conv_bn_relu(2 * width, width, bias=True)

    def forward(self, f_e: torch.Tensor, f_d: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.encoder_proj(f_e), self.decoder_proj(f_d)], dim=1))


class SemanticGuidance(nn.Module):
    """HSG (Eq. 2-4): the deeper map guides the current contrastive map.

    ``G = conv3x3(upsample(deep))``; ``W_sp = sigmoid(conv1x1(G))`` (``float[B,1,h,w]``) and
    ``W_cn = sigmoid(conv1x1(GAP(G)))`` (``float[B,d,1,1]``), both in (0, 1);
    ``F'_C = W_sp * F_C * W_cn``.
    """

    def __init__(self, deep_width: int, width: int) -> None:
        super().__init__()
        self.guide = conv_bn_relu(deep_width, width, 3, bias=True)
        self.spatial = nn.Conv2d(width, 1, 1)
        self.channel = nn.Conv2d(width, width, 1)

    def weights(self, deep: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_sp float[B,1,h,w], W_cn float[B,d,1,1])`` from ``deep float[B,d',h/2,w/2]`` at ``size=(h,w)``."""
        g = self.guide(F.interpolate(deep, size=tuple(size), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.spatial(g)), torch.sigmoid(self.channel(F.adaptive_avg_pool2d(g, 1)))

    def forward(self, f_c: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        w_sp, w_cn = self.weights(deep, f_c.shape[-2:])
        return w_sp * f_c * w_cn


class PredictionHead(nn.Module):
    """MSS predictive head (the ``M_p(i)`` of Eq. 5): 1x1 conv to two logits (normal, anomalous), upsampled
    to ``size``.

    The paper upsamples first; a 1x1 conv and bilinear upsampling commute (both linear, the
    interpolation weights sum to one), so convolving first is the same map at a fraction of the
    cost. Softmax is applied by the caller. ``float[B,d,h,w] -> float[B,2,H,W]``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=tuple(size), mode="bilinear", align_corners=False)


class Aggregation(nn.Module):
    """Eq. 7's channel-wise aggregation: the refined maps, upsampled to the first level's size and
    concatenated, -> 1x1 conv (BN, ReLU) -> 1x1 conv to two logits (computed in float32, so that
    bf16 autocast does not quantise the anomaly map). ``list[float[B,d_i,h_i,w_i]] -> float[B,2,H,W]``."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.mix = conv_bn_relu(sum(widths), widths[0], bias=True)
        self.out = nn.Conv2d(widths[0], 2, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        x = torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                                   for m in maps[1:]], dim=1)
        h = self.mix(x)
        with full_precision(h.device):
            return self.out(h.float())


class CoarseToFineDiscriminator(nn.Module):
    """POUTA's discriminative network (Sec. III-B): FCM per level, HSG for levels 3, 2, 1 (deep to
    shallow), MSS heads per level, aggregation head.

    ``forward(enc, dec, levels)`` with ``enc/dec = [F_*1..F_*4]`` returns ``{"contrast": [F_C1..F_C4],
    "features": [F'_C1, F'_C2, F'_C3, F_C4], "logits": float[B,2,H,W]}`` plus ``"level_logits"``
    (4 x ``float[B,2,H,W]``) when ``levels`` and MSS is on.
    """

    def __init__(self, encoder_widths: Sequence[int], contrast_ratio: float, hsg: bool, mss: bool) -> None:
        super().__init__()
        widths = [max(4, int(round(c * contrast_ratio))) for c in encoder_widths[:LEVELS]]
        self.widths = widths
        self.fcm = nn.ModuleList(FeatureContrast(c, d) for c, d in zip(encoder_widths, widths))
        self.hsg = nn.ModuleList(SemanticGuidance(widths[i + 1], widths[i]) for i in range(LEVELS - 1)) if hsg else None
        self.mss = nn.ModuleList(PredictionHead(d) for d in widths) if mss else None
        self.aggregate = Aggregation(widths)

    def forward(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor], levels: bool = False) -> dict[str, Any]:
        contrast = [fcm(e, d) for fcm, e, d in zip(self.fcm, enc, dec)]
        refined = list(contrast)
        if self.hsg is not None:
            for i in range(LEVELS - 2, -1, -1):  # F'_C3 from F_C4, F'_C2 from F'_C3, F'_C1 from F'_C2
                refined[i] = self.hsg[i](contrast[i], refined[i + 1])
        out = {"contrast": contrast, "features": refined, "logits": self.aggregate(refined)}
        if levels and self.mss is not None:
            size = refined[0].shape[-2:]
            out["level_logits"] = [head(f, size) for head, f in zip(self.mss, refined)]
        return out


class UNet(nn.Module):
    """The vanilla design's discriminative U-Net, laid out as DRAEM's ``DiscriminativeSubNetwork``:
    encoder widths ``w * (1, 2, 4, 8, 8, 8)`` (six conv blocks, 2x max-pool between them); the
    decoder upsamples (bilinear + 3x3 conv) to widths ``w * (8, 4, 2, 1, 1)`` at ``H/16 .. H`` and
    merges each with the encoder map of that resolution (concat + conv block); a 3x3 conv gives the
    logits. At ``w = 64``: 28.4 M parameters (Table VI: 28.68 M).

    ``float[B,6,H,W] -> {"logits": float[B,2,H,W], "features": [decoder maps at H, H/2, H/4, H/8]}``;
    ``H, W`` must be multiples of 32.
    """

    def __init__(self, base_width: int, in_channels: int = 6) -> None:
        super().__init__()
        enc = [base_width * m for m in (1, 2, 4, 8, 8, 8)]
        dec = [base_width * m for m in (1, 1, 2, 4, 8)]  # decoder width at the resolution of enc[i]
        chans = [in_channels, *enc]
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(len(enc)))
        deeper = [*dec[1:], enc[-1]]  # what feeds the upsampling into resolution i
        self.up = nn.ModuleList(conv_bn_relu(deeper[i], dec[i], 3, bias=True) for i in range(len(dec)))
        self.merge = nn.ModuleList(conv_block(dec[i] + enc[i], dec[i]) for i in range(len(dec)))
        self.out = nn.Conv2d(dec[0], 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        feats = []
        for i in range(len(self.up) - 1, -1, -1):
            x = self.up[i](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            x = self.merge[i](torch.cat([x, skips[i]], dim=1))
            feats.append(x)
        with full_precision(x.device):
            logits = self.out(x.float())
        return {"features": feats[::-1][:LEVELS], "logits": logits}


class VanillaDiscriminator(nn.Module):
    """Fig. 4a: the discriminative network sees only ``[input, reconstruction]`` (6 channels)."""

    def __init__(self, base_width: int) -> None:
        super().__init__()
        self.unet = UNet(base_width, in_channels=6)

    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, Any]:
        return self.unet(torch.cat([image, reconstruction], dim=1))


class POUTANet(nn.Module):
    """Reconstructive network + discriminative network (POUTA or vanilla).

    ``forward(x float[B,3,H,W] in [0,1], levels=False)`` returns the reconstructive outputs
    (``encoder``, ``latent``, ``decoder``, ``reconstruction``) merged with the discriminator's
    (``logits float[B,2,H,W]``, ``features``, and for POUTA ``contrast`` / ``level_logits``).
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.reconstructive = ReconstructiveNetwork(config.base_width)
        if config.discriminator == "pouta":
            self.discriminative: nn.Module = CoarseToFineDiscriminator(
                self.reconstructive.widths, config.contrast_ratio, config.hsg, config.mss)
        elif config.discriminator == "vanilla":
            self.discriminative = VanillaDiscriminator(config.unet_base_width)
        else:
            raise ValueError(f"discriminator must be 'pouta' or 'vanilla', got {config.discriminator!r}.")
        self.vanilla = config.discriminator == "vanilla"

    def forward(self, x: torch.Tensor, levels: bool = False) -> dict[str, Any]:
        rec = self.reconstructive(x)
        if self.vanilla:
            return {**rec, **self.discriminative(x, rec["reconstruction"])}
        return {**rec, **self.discriminative(rec["encoder"], rec["decoder"], levels=levels)}
