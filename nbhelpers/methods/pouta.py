"""POUTA: Produce Once, Utilize Twice for anomaly detection (Wang et al., 2023).

A DRAEM-style reconstructive network (encoder ``F_E1..F_E4``, mapping layer ``F_M``, decoder
``F_D4..F_D1``, image ``I_r``) is trained to repair synthetic anomalies. Instead of comparing the
input with the reconstructed *image* (the "vanilla" DRAEM-like design, Fig. 4a), POUTA's
coarse-to-fine discriminative network *reuses* the symmetric encoder/decoder representations:

* **FCM** (Feature Contrast Module): 1x1 convs on ``F_Ei`` and ``F_Di``, concatenation, 1x1 conv
  -> contrastive map ``F_Ci`` (the distribution shift between input and repaired features);
* **HSG** (High-level Semantic Guidance, Eq. 2-4): the deeper refined map, upsampled and passed
  through a 3x3 conv, yields a spatial weight ``W_sp`` (1x1 conv to one channel) and a channel
  weight ``W_cn`` (global average pool + 1x1 conv); ``F'_Ci = W_sp * F_Ci * W_cn``;
* **MSS** (Multi-scale Semantic Supervision, Eq. 5-6): a prediction head per level (1x1 conv,
  upsample, softmax) trained with focal + L1 against the synthetic mask (training only);
* **prediction** (Eq. 7-8): the channel-wise aggregation of ``F'_C1, F'_C2, F'_C3, F_C4`` predicts
  the pixel heatmap ``M_p``; the image score is the maximum of its 21x21 average pooling.

Training data are DRAEM pseudo-anomalies (:class:`nbhelpers.data.anomalies.DraemDataset`), images in
[0, 1] without ImageNet normalisation. Two registry names share this module: ``"pouta"`` and
``"pouta_vanilla"`` (same reconstructive network + a U-Net fed with ``[input, reconstruction]``).
The ablation switches of Table V are the config fields ``hsg`` and ``mss``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nbhelpers.data.anomalies import DraemDataset, TextureSource
from nbhelpers.data.io import read_image
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader, resize_image
from nbhelpers.layers import conv_bn_relu
from nbhelpers.losses import focal_loss
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, Paper, SizeRule, register
from nbhelpers.train import autocast, full_precision, to_device

#: Number of feature levels of the reconstructive encoder / decoder (F_E1..F_E4, F_D4..F_D1).
LEVELS = 4


@dataclass
class Config(MethodConfig):
    """POUTA settings (the backbone fields of :class:`MethodConfig` are unused: POUTA learns its own
    features from scratch).

    Attributes:
        base_width: width of the first encoder level; levels use ``base_width * (1, 2, 4, 8)`` and
            the mapping layer ``8 * base_width`` (DRAEM: 128).
        contrast_ratio: FCM/HSG width of level ``i`` as a fraction of the encoder width ``c_i``.
        discriminator: ``"pouta"`` (reuse representations) or ``"vanilla"`` (U-Net on
            ``[input, reconstruction]``, Fig. 4a).
        unet_base_width: first-level width of the vanilla U-Net (DRAEM's discriminative net: 64).
        hsg, mss: the ablation switches of Table V (``False, False`` = POUTA-base).
        mss_weights: lambda_1..lambda_4 of Eq. 6 (the paper's list is garbled; 0.4/0.3/0.2/0.1).
        focal_gamma, focal_alpha: focal loss of Eq. 5/7 (DRAEM: gamma 2, no class weighting).
        score_pool: side of the average pooling before the image-score maximum (paper: 21).
        anomaly_prob, beta_range, rotate_prob, n_augment: DRAEM data (see ``DraemDataset``).
        texture_root: folder of anomaly-source textures (e.g. DTD ``dtd/images``); ``None`` = the
            offline photographs shipped with scikit-image.
        samples_per_epoch: training items per epoch (the normal images are cycled; 0 = one pass),
            so that few-shot runs (k = 2) take as many steps as full runs.
        lr_milestones, lr_gamma: the learning rate is multiplied by ``lr_gamma`` at these fractions
            of ``epochs`` (paper: x0.2 at 80 % and 90 %).
    """

    image_size: int = 128
    epochs: int = 20
    backbone: str = "none"
    weights: str | None = None
    layers: tuple[int, ...] = ()
    base_width: int = 8
    contrast_ratio: float = 0.5
    discriminator: str = "pouta"
    unet_base_width: int = 4
    hsg: bool = True
    mss: bool = True
    mss_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    score_pool: int = 11
    anomaly_prob: float = 0.5
    beta_range: tuple[float, float] = (0.0, 0.8)
    rotate_prob: float = 0.0
    n_augment: int = 3
    texture_root: str | None = None
    samples_per_epoch: int = 64
    lr_milestones: tuple[float, ...] = (0.8, 0.9)
    lr_gamma: float = 0.2

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=4, epochs=2, progress=False, score_pool=7, samples_per_epoch=8),
        "cpu": dict(),
        "paper": dict(image_size=224, epochs=600, lr=0.0002, base_width=128, unet_base_width=64, score_pool=21,
                      samples_per_epoch=0),
    }


# ---------------------------------------------------------------------------------- building blocks


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
    """The vanilla design's discriminative U-Net (DRAEM's: widths ``w * (1, 2, 4, 8, 8, 8)``, skip
    connections, bilinear upsampling + 3x3 conv). ``float[B,6,H,W] -> {"logits": float[B,2,H,W],
    "features": [decoder maps at H, H/2, H/4, H/8]}``; ``H, W`` must be multiples of 32."""

    def __init__(self, base_width: int, in_channels: int = 6) -> None:
        super().__init__()
        w = [base_width * m for m in (1, 2, 4, 8, 8, 8)]
        chans = [in_channels, *w]
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(len(w)))
        self.up = nn.ModuleList(conv_bn_relu(w[i + 1], w[i], 3, bias=True) for i in range(len(w) - 1))
        self.merge = nn.ModuleList(conv_block(2 * w[i], w[i]) for i in range(len(w) - 1))
        self.out = nn.Conv2d(w[0], 2, 3, padding=1)

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


# ------------------------------------------------------------------------------------------- losses


def image_reconstruction_loss(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``L_rec = MSE(I_r, I_ori) + (1 - SSIM(I_r, I_ori))`` (SSIM from pytorch-msssim,
    Gaussian window 11, sigma 1.5, data range 1). ``float[B,3,H,W] x float[B,3,H,W] -> float[]``."""
    r, o = reconstruction.float(), original.float()
    with full_precision(r.device):
        return F.mse_loss(r, o) + (1 - ssim(r, o, data_range=1.0, size_average=True))


def segmentation_loss(prob: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0,
                      alpha: float | None = None) -> torch.Tensor:
    """Eq. 5 / Eq. 7: ``L_focal(M_p, M) + L_1(M_p, M)``.

    Args:
        prob: ``float[B,1,H,W]`` predicted anomaly probability (softmax anomaly channel).
        mask: ``float[B,1,H,W]`` ground truth in {0, 1}.
    """
    return focal_loss(prob, mask, alpha=alpha, gamma=gamma) + (prob.float() - mask.float()).abs().mean()


def mss_loss(level_probs: Sequence[torch.Tensor], mask: torch.Tensor, weights: Sequence[float],
             gamma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """Eq. 6: ``L_MSS = sum_i lambda_i L_SS(i)`` over the per-level predictions ``float[B,1,H,W]``."""
    if len(level_probs) != len(weights):
        raise ValueError(f"mss_loss: {len(level_probs)} level predictions for {len(weights)} weights.")
    return sum(w * segmentation_loss(p, mask, gamma, alpha) for w, p in zip(weights, level_probs))


def anomaly_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax anomaly channel: ``float[B,2,H,W] -> float[B,1,H,W]`` (float32)."""
    return logits.float().softmax(dim=1)[:, 1:]


def image_score(maps: torch.Tensor, window: int = 21) -> torch.Tensor:
    """Image score = max of the ``window x window`` average pooling (stride 1) of the heatmap, as in
    DRAEM / POUTA. ``float[B,H,W] -> float[B]``."""
    pooled = F.avg_pool2d(maps[:, None].float(), window, stride=1, padding=window // 2)
    return pooled.flatten(1).amax(dim=1)


def grad_cam(feature: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``score`` w.r.t. a feature map in its autograd graph.

    ``alpha_c = mean_hw d score / d A_c``; ``cam = ReLU(sum_c alpha_c A_c)``.

    Args:
        feature: ``float[B,C,h,w]`` (requires grad, ``score`` depends on it).
        score: ``float[B]``; images are independent (BatchNorm in eval mode).

    Returns:
        ``float[B,h,w]`` (not normalised).
    """
    grads = torch.autograd.grad(score.sum(), feature, retain_graph=True)[0]
    alpha = grads.float().mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * feature.float()).sum(dim=1)).detach()


def count_flops(module: nn.Module, inputs: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (``torch.utils.flop_counter``: 2 per
    multiply-accumulate of convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(inputs)
    return int(counter.get_total_flops())


def complexity(config: Config) -> dict[str, float]:
    """Inference cost of a configuration (Table VI), counted on the ``meta`` device (no memory, no
    compute): parameters used at test time (MSS heads excluded: training only) in millions and
    FLOPs of one ``image_size`` forward pass in GFLOPs."""
    with torch.device("meta"):
        net = POUTANet(config).eval()
        x = torch.zeros(1, 3, config.image_size, config.image_size)
    heads = getattr(net.discriminative, "mss", None)
    training_only = sum(p.numel() for p in heads.parameters()) if heads is not None else 0
    params = sum(p.numel() for p in net.parameters()) - training_only
    return {"params_m": params / 1e6, "gflops": count_flops(net, x) / 1e9}


# ------------------------------------------------------------------------------------------- method


@register
class POUTA(AnomalyMethod):
    """POUTA: reuse the reconstructive encoder/decoder representations to locate anomalies."""

    name = "pouta"
    paper = Paper("Wang et al., Produce Once, Utilize Twice for Anomaly Detection, 2023", "POUTA")
    config_class = Config
    modules = ("net",)
    size_rule = SizeRule(multiple=16, backbone=False, why="the reconstructive network halves the image 4 times")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.net = POUTANet(self.config).to(self.device)

    @property
    def normalization(self) -> tuple[None, None]:
        """Images stay in [0, 1]: the reconstructive network must not see ImageNet-normalised input."""
        return None, None

    def training_dataset(self, train: Sequence[Sample]) -> DraemDataset:
        """DRAEM pseudo-anomaly pairs of the normal ``train`` images (resized once, cycled to
        ``samples_per_epoch``)."""
        cfg = self.config
        images = [resize_image(read_image(s.image), cfg.image_size) for s in train]
        n = max(cfg.samples_per_epoch, len(images))
        images = (images * math.ceil(n / len(images)))[:n]
        textures = TextureSource(cfg.texture_root) if cfg.texture_root else None
        return DraemDataset(images, cfg.image_size, textures=textures, seed=cfg.seed, anomaly_prob=cfg.anomaly_prob,
                            beta_range=tuple(cfg.beta_range), n_augment=cfg.n_augment, rotate_prob=cfg.rotate_prob)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 8: ``L_total = L_rec + L_pre + L_MSS`` on a ``DraemDataset`` batch (``augmented``
        input, ``image`` target, ``mask``). Returns ``{"loss", "rec", "pre"[, "mss"]}``."""
        cfg = self.config
        out = self.net(batch["augmented"], levels=True)
        mask = batch["mask"]
        rec = image_reconstruction_loss(out["reconstruction"], batch["image"])
        pre = segmentation_loss(anomaly_probability(out["logits"]), mask, cfg.focal_gamma, cfg.focal_alpha)
        terms = {"rec": rec, "pre": pre}
        if "level_logits" in out:
            terms["mss"] = mss_loss([anomaly_probability(l) for l in out["level_logits"]], mask, cfg.mss_weights,
                                    cfg.focal_gamma, cfg.focal_alpha)
        terms["loss"] = sum(terms.values())
        return terms

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None):
        """DRAEM pseudo-anomalies of the normal ``train`` images (real ``anomalies`` are not used:
        POUTA is unsupervised)."""
        cfg = self.config
        return make_loader(self.training_dataset(train), cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                           seed=cfg.seed)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam, learning rate x ``lr_gamma`` at the ``lr_milestones`` fractions of the epochs."""
        cfg = self.config
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        milestones = sorted({max(1, int(round(f * cfg.epochs))) for f in cfg.lr_milestones})
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.lr_gamma)

    @torch.no_grad()
    def representations(self, images: torch.Tensor, levels: bool = True) -> dict[str, Any]:
        """Every intermediate of the network for ``images float[B,3,H,W]`` in [0, 1] (eval mode):
        encoder / decoder levels, latent, reconstruction, contrast / refined maps, logits."""
        self.net.eval()
        with autocast(self.device):
            return self.net(images.to(self.device), levels=levels)

    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Heatmap ``M_p`` (softmax anomaly probability) and the image score (Eq. 7 and the max of
        the ``score_pool`` average pooling). Extras: ``reconstruction float[B,3,H,W]`` and, with MSS
        heads, ``level_maps float[B,4,H,W]``."""
        out = self.representations(to_device(batch["image"], self.device))
        maps = anomaly_probability(out["logits"])[:, 0]
        extras: dict[str, Any] = {"reconstruction": out["reconstruction"].float().clamp(0, 1)}
        if "level_logits" in out:
            extras["level_maps"] = torch.cat([anomaly_probability(l) for l in out["level_logits"]], dim=1)
        return AnomalyResult(scores=image_score(maps, self.config.score_pool), maps=maps, extras=extras)

    def saliency(self, batch: dict, level: int = 2) -> torch.Tensor:
        """Grad-CAM of the image score w.r.t. the discriminative features of ``level`` (1..4:
        POUTA's ``F'_Ci``, the vanilla U-Net's decoder map at the same resolution), upsampled to
        the input size and scaled to [0, 1] per image. ``-> float[B,H,W]``."""
        images = to_device(batch["image"], self.device)
        self.net.eval()
        with torch.enable_grad(), autocast(self.device):
            out = self.net(images)
            scores = image_score(anomaly_probability(out["logits"])[:, 0], self.config.score_pool)
            cam = grad_cam(out["features"][level - 1], scores)
        cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        top = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
        return cam / top[:, None, None]

    def complexity(self) -> dict[str, float]:
        """:func:`complexity` of this method's configuration (Table VI)."""
        return complexity(self.config)


@dataclass
class VanillaConfig(Config):
    """Settings of the vanilla (DRAEM-like) design: ``discriminator="vanilla"`` by default."""

    discriminator: str = "vanilla"


@register
class VanillaPOUTA(POUTA):
    """The vanilla reconstruction-based design of Fig. 4a (same reconstructive network and losses,
    a U-Net discriminator on ``[input, reconstruction]``), for the side-by-side comparison."""

    name = "pouta_vanilla"
    config_class = VanillaConfig
    size_rule = SizeRule(multiple=32, backbone=False, why="the discriminative U-Net halves the image 5 times")


__all__ = [
    "Aggregation", "CoarseToFineDiscriminator", "Config", "Decoder", "Encoder", "FeatureContrast", "MappingLayer",
    "POUTA", "POUTANet", "PredictionHead", "ReconstructiveNetwork", "SemanticGuidance", "UNet", "VanillaConfig",
    "VanillaDiscriminator", "VanillaPOUTA", "anomaly_probability", "complexity", "count_flops", "grad_cam", "image_score",
    "mss_loss", "image_reconstruction_loss", "segmentation_loss",
]
