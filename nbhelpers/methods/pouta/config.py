"""POUTA settings and presets (and the vanilla design's)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nbhelpers.methods.base import MethodConfig
from nbhelpers.methods.fields import Range

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
        self_mix: fill the pseudo-anomaly region with the paper's ``I_aug`` (a translated / rotated /
            identical copy of the image merged with the texture) instead of DRAEM's texture alone.
        texture_root: folder of anomaly-source textures (e.g. DTD ``dtd/images``); ``None`` = the
            offline photographs shipped with scikit-image.
        few_shot: train on the first ``few_shot`` normal images only (Table IV: k = 2, 4, 8); 0 = all.
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
    contrast_ratio: float = 1.0
    discriminator: str = "pouta"
    unet_base_width: int = 4
    hsg: bool = True
    mss: bool = True
    mss_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    score_pool: int = 5
    anomaly_prob: float = 0.5
    beta_range: tuple[float, float] = (0.0, 0.8)
    rotate_prob: float = 0.0
    n_augment: int = 3
    self_mix: bool = True
    texture_root: str | None = None
    few_shot: int = 0
    samples_per_epoch: int = 192
    lr_milestones: tuple[float, ...] = (0.8, 0.9)
    lr_gamma: float = 0.2

    RANGES: ClassVar[dict[str, Range]] = {
        "base_width": Range(1), "contrast_ratio": Range(0, open_low=True), "unet_base_width": Range(1),
        "focal_alpha": Range(0, 1), "score_pool": Range(1), "few_shot": Range(0), "anomaly_prob": Range(0, 1), "beta_range": Range(0, 1),
        "rotate_prob": Range(0, 1), "lr_milestones": Range(0, 1), "lr_gamma": Range(0, open_low=True)}

    # cpu (the defaults), chosen on the tuning tree (docs/TUNING.md): 128 px and 480 optimiser steps
    # (20 epochs x 192 pairs / batch 8) fill the 300 s budget on 2 cores; 192 px leaves 240 steps and
    # scored lower (screw 0.560 vs 0.746); contrast width = encoder width; 5x5 score pool at 128 px.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=4, epochs=2, progress=False, score_pool=3, samples_per_epoch=8),
        "cpu": dict(),
        "paper": dict(image_size=224, epochs=600, lr=0.0002, base_width=128, contrast_ratio=1.125, unet_base_width=64,
                      score_pool=21, samples_per_epoch=0),  # contrast 1.125: Table VI's 15.02 M (1.0: 12.4 M)
    }


@dataclass
class VanillaConfig(Config):
    """Settings of the vanilla (DRAEM-like) design: ``discriminator="vanilla"`` by default."""

    discriminator: str = "vanilla"
