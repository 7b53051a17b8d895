"""FOD settings and presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nbhelpers.errors import ConfigError
from nbhelpers.methods.base import MethodConfig
from nbhelpers.methods.fields import Range

EPS = 1e-4  # inside the logarithms of the divergence and entropy (official code)


REFERENCES = ("mean", "coreset")


SCORINGS = ("rec", "div", "rec_div")


@dataclass
class Config(MethodConfig):
    """FOD settings (the paper's §4.1 values in the ``paper`` preset).

    Attributes:
        d_model: hidden size ``d_m`` of the transformer of each level (one value per level).
        heads: attention heads. n_layers: I2Correlation layers ``K``. ffn_ratio: feed-forward width / d_m.
        lambda1, lambda2: weights of the divergence and entropy terms (Eq. 8, 10).
        intra, inter: enable the intra- / inter-correlation branch (both off = patch-wise
            reconstruction with a plain self-attention transformer, Table 4 row 1).
        intra_entropy: use the entropy constraint in the intra branch (Table 4 "w/o" vs "w/").
        reference: ``"mean"`` (position-wise mean of normal features, §3.4) or ``"coreset"``
            (greedy k-center coreset of all normal patches, ``coreset_size`` entries per level,
            each keeping the grid position it came from; ``coreset_size=0``: as many as patches).
        residual: keep ``X_{k-1}`` in the output of a layer with both branches, as Eq. 1 is printed
            (``Z_g - Z_e + X``). ``False`` (default) follows the official code, where the two branches'
            residuals cancel (``(X + Z_g) - (X + Z_e)``), so the network cannot copy its input —
            anomalies included — through an identity path; single-branch variants keep ``X + Z``
            either way (as the official code does).
        scoring: ``"rec_div"`` (Eq. 12), ``"rec"`` (reconstruction only) or ``"div"`` (correlation
            discrepancy only) — Table 4's "Anomaly Scoring" column.
        sigma: Gaussian smoothing of the upsampled map (official: 4, at 256 px).
        grad_clip: gradient-norm clip of the training loop (``None``: off).
    """

    # cpu: the baseline's 256 px input, read at the stride-16 and stride-32 levels (16x16 + 8x8 patches).
    # The official stride-8/16 levels at 256 px give 32x32 + 16x16 patches, whose N x N correlation maps
    # cost 16 times as much (minutes per epoch on 2 CPU cores). Chosen on the tuning tree (docs/TUNING.md):
    # at the same grids and cost, 256 px / levels (3, 4) beat 128 px / levels (2, 3) by far, and 30
    # epochs (about 100 s per fit on 2 cores; the 300 s budget would allow about 70).
    image_size: int = 256
    batch_size: int = 4
    epochs: int = 30
    layers: tuple[int, ...] = (3, 4)
    d_model: tuple[int, ...] = (64, 64)
    heads: int = 4
    n_layers: int = 3
    ffn_ratio: int = 4
    lambda1: float = 0.5
    lambda2: float = 0.5
    intra: bool = True
    inter: bool = True
    intra_entropy: bool = True
    reference: str = "mean"
    coreset_size: int = 0
    residual: bool = False
    scoring: str = "rec_div"
    sigma: float = 4.0
    grad_clip: float | None = None

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, layers=(2, 3), epochs=2, progress=False, d_model=(32, 32), heads=2, n_layers=2, sigma=1.0),
        "cpu": dict(),
        # the paper's EfficientNet-B6 "from timm": in the timm 0.6.12 of the official code the name with
        # weights is tf_efficientnet_b6 (AutoAugment ImageNet weights, timm 1.x tag aa_in1k);
        # timm's efficientnet_b6 has no pretrained weights
        "paper": dict(backbone="tf_efficientnet_b6.aa_in1k", weights="timm", layers=(2, 3), batch_size=1, epochs=100, lr=0.0001,
                      d_model=(256, 512), heads=8),
    }

    RANGES: ClassVar[dict[str, Range]] = {
        "d_model": Range(4), "heads": Range(1), "n_layers": Range(1), "ffn_ratio": Range(1),
        "grad_clip": Range(0, open_low=True)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"reference": REFERENCES, "scoring": SCORINGS}

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.d_model) != len(self.layers):
            raise ConfigError(f"FOD: d_model {self.d_model} needs one value per backbone level {self.layers}.")
        bad = [d for d in self.d_model if d % self.heads or d % 4]
        if bad:
            raise ConfigError(f"FOD: d_model {bad} must be divisible by heads={self.heads} and by 4 "
                              "(2-D sin/cos position code).")
        if self.scoring != "rec" and not (self.intra or self.inter):
            raise ConfigError("FOD: scoring with 'div' needs the intra or inter branch (intra=True or inter=True).")
