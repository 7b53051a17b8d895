"""PRN settings and presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nbhelpers.methods.base import MethodConfig
from nbhelpers.methods.fields import Range
from nbhelpers.methods.prn.attention import MSA_EMBEDDINGS, MSA_SCALES


@dataclass
class Config(MethodConfig):
    """PRN settings (defaults = the paper's, Sec. 4.1).

    Attributes:
        layers: the three backbone levels with prototypes / skip connections (ResNet-18 layer1-3).
        bottleneck_layer: the deeper level the decoder starts from (layer4).
        prototype_ratio: prototypes per scale as a fraction of the normal training images (Table 6:
            0.1; ``>= 1`` keeps every training map, no clustering).
        kmeans_iters: maximum Lloyd iterations per scale (paper: 300).
        prototype_window: 0 = Eq. 1 (the residual to the nearest whole prototype map); ``r > 0`` = per
            position, the residual to the nearest prototype feature within ``±r`` grid cells of any
            prototype, for objects that are not aligned (``windowed_nearest``).
        msa_depth: stacked MSA blocks per scale (paper N = 3).
        msa_embedding: Q/K embedding of a patch, ``"pointwise"`` (1x1 conv) or ``"patch"`` (``p x p``
            depthwise + 1x1 conv: the paper's patch FC, factorised); see ``PatchAttentionHead``.
        msa_scale: attention logits times ``1/d`` (``"dim"``, Eq. 3 as printed) or ``1/sqrt(d)``.
        patch_divisors: MSA head patch sizes are ``h // d`` for each ``d`` (paper ``h, h/2, h/4, h/8``).
        use_prototypes, use_msa, use_fusion: the modules of Table 4 (all off = plain U-Net).
        seen_anomalies: real anomalies to train on (paper: 10); ``nbhelpers.benchmark`` holds them out
            of the test split.
        weight_decay: Adam weight decay (paper 1e-2).
        focal_alpha, focal_gamma, focal_weight: focal loss alpha, gamma and lambda of Eq. 5.
        top_k: pixels averaged for the image score at 256 x 256, scaled with the image area.
        hoa_prob: fraction of simulated anomalies that are homologous (the rest heterologous).
        target_areas: place generated anomalies in target areas (a random circle, rectangle or polygon)
            on the object's foreground (objects) / anywhere (textures); ``False``: target areas
            anywhere in the image.
        textures: folder of texture images for HEA (DTD in the paper); ``None`` = the offline ones;
            either way without the category's own source photograph.
        batch_size: images per step, in groups of 2 normal + 1 extended + 1 simulated (paper 64 =
            32 + 16 + 16); rounded down to whole groups.

    Presets: ``paper`` = Sec. 4.1 (ResNet-18 layer1-3 + layer4, 256 px, Adam 1e-4, weight decay 1e-2,
    700 epochs, batch 64, 10 seen anomalies, N = 3, k-means <= 300 iterations). ``cpu`` = the offline
    EfficientNet-Lite0 levels 1-3 (+4), **128 px**, 35 epochs (about 140 optimiser steps, 220-250 s per
    fit on 2 cores), batch 16, one MSA block, lr 1e-3, chosen on the tuning tree (docs/TUNING.md):
    steps over pixels (256 px leaves 8 epochs in the 300 s budget and scored screw 0.747 against
    0.852 at 128 px with 40 epochs); a larger learning rate replaces the paper's 700 epochs.
    ``smoke`` = 64 px, 2 epochs (CI).
    """

    image_size: int = 128
    layers: tuple[int, ...] = (1, 2, 3)
    bottleneck_layer: int = 4
    prototype_ratio: float = 0.1
    kmeans_iters: int = 100
    prototype_window: int = 0
    msa_depth: int = 1
    patch_divisors: tuple[int, ...] = (1, 2, 4, 8)
    msa_embedding: str = "pointwise"
    msa_scale: str = "dim"
    use_prototypes: bool = True
    use_msa: bool = True
    use_fusion: bool = True
    seen_anomalies: int = 5
    lr: float = 0.001
    weight_decay: float = 0.0001
    focal_alpha: float = 0.5
    focal_gamma: float = 4.0
    focal_weight: float = 5.0
    top_k: int = 100
    hoa_prob: float = 0.5
    target_areas: bool = True
    textures: str | None = None
    epochs: int = 35
    batch_size: int = 16

    RANGES: ClassVar[dict[str, Range]] = {
        "prototype_ratio": Range(0, open_low=True), "kmeans_iters": Range(1), "prototype_window": Range(0),
        "msa_depth": Range(1), "patch_divisors": Range(1), "focal_alpha": Range(0, 1), "top_k": Range(1), "hoa_prob": Range(0, 1)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"msa_embedding": MSA_EMBEDDINGS, "msa_scale": MSA_SCALES}

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=8, epochs=2, progress=False, kmeans_iters=20, seen_anomalies=2),
        "cpu": dict(),
        "paper": dict(backbone="resnet18", weights="timm", image_size=256, batch_size=64, epochs=700, lr=0.0001,
                      kmeans_iters=300, msa_depth=3, seen_anomalies=10, weight_decay=0.01),
    }
