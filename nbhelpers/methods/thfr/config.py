"""THFR settings and presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nbhelpers.errors import ConfigError
from nbhelpers.methods.base import MethodConfig
from nbhelpers.methods.fields import Range

#: ``n`` of Eq. 1 and ``sigma`` by dataset kind (paper §4.1: MVTec LOCO n = 1, sigma = 2; MVTec AD
#: n = 6, sigma = 4), used where ``n_candidates`` / ``sigma`` are ``None``; ``"*"``: every other layout
BY_LAYOUT: dict[str, dict[str, float]] = {"mvtec_loco": {"n_candidates": 1, "sigma": 2.0},
                                         "*": {"n_candidates": 6, "sigma": 4.0}}

TEMPLATE_ALIGNS = ("conv", "pooled")


@dataclass
class Config(MethodConfig):
    """THFR settings.

    Attributes:
        n_candidates: ``n`` of Eq. 1: training draws the template at random among the ``n`` nearest
            other training images; inference uses n = 1. ``None``: by the training images' layout
            (:data:`BY_LAYOUT`, paper: 1 on MVTec LOCO, 6 on MVTec AD; see :func:`by_layout`).
        bank_ratio: fraction of the template bank kept for inference by greedy coreset selection on
            the flattened deepest level (supp. §3.2, Table 6; 1.0 keeps every training image).
        projection_dim: random-projection size used by the coreset selection.
        sigma: Gaussian smoothing of the anomaly map; ``None``: by layout (paper: 2 on LOCO, 4 on MVTec AD).
        bottleneck_channels: channels ``C`` of both bottlenecks; 0 = ``2 C_K`` as in the paper.
        relation_dim: channels of the theta / phi embeddings of Eq. 2.
        lbn_blocks: ResBlocks of the local bottleneck (RD4AD: 3, the first with stride 2).
        fusion_blocks: ResBlocks after the compensated branches are fused.
        decoder_blocks: ResBlocks per decoder stage.
        decoder_min_width: minimum channels of a decoder stage (0: the level's own channels, as RD4AD).
        use_global, use_local: which bottleneck branches exist (Table 4: GBN, LBN, G-L bottleneck).
            The paper's THFR uses both (``paper`` preset); the ``cpu`` and ``smoke`` presets use the
            global bottleneck only, chosen on the tuning tree (``synthad_dev``, docs/TUNING.md): with
            60 training images and 20 epochs the local branch added nothing on the structural
            categories (mean image AUROC 0.838 with it, 0.835 without) and let the logical anomalies
            through (logical 0.583 with it, 0.799 without).
        use_template, use_relation: template-guided compensation with / without the relation
            feature (Table 5).
        template_align: how a branch's template reaches the bottleneck grid: ``"conv"`` (each branch
            its own levels, aligned by stride-2 convolutions; the paper's Fig. 4) or ``"pooled"``
            (every level average-pooled, the same for both branches: the ablation).
        adam_betas: Adam betas (RD4AD's public code; the paper only gives the learning rate).
        vis_epochs, vis_lr, vis_width: training of the feature visualisation network.

    Presets: ``smoke`` (64 px, 2 epochs, narrow blocks: CI), ``cpu`` (offline EfficientNet-Lite0
    levels 1-3 at strides 4/8/16, 256 px, 20 epochs on cached features, global bottleneck only) and
    ``paper`` (the G-L bottleneck; WideResNet-50 layers 1-3 with torchvision's ImageNet weights,
    ``wide_resnet50_2.tv_in1k``, as RD4AD on which THFR builds; 256 px, Adam lr 0.005, 200 epochs,
    batch 16). In every preset ``n`` and ``sigma`` follow the layout (:data:`BY_LAYOUT`) unless set. Not given by the paper and chosen here:
    ``relation_dim`` (C/8 as in RGA), block counts (RD4AD's), ``vis_epochs``.
    """

    layers: tuple[int, ...] = (1, 2, 3)
    lr: float = 0.005
    epochs: int = 20
    n_candidates: int | None = None
    bank_ratio: float = 1.0
    projection_dim: int = 128
    sigma: float | None = None
    bottleneck_channels: int = 0
    relation_dim: int = 32
    lbn_blocks: int = 3
    fusion_blocks: int = 2
    decoder_blocks: int = 1
    decoder_min_width: int = 64
    use_global: bool = True
    use_local: bool = False
    use_template: bool = True
    use_relation: bool = True
    template_align: str = "conv"
    adam_betas: tuple[float, float] = (0.5, 0.999)
    vis_epochs: int = 10
    vis_lr: float = 2e-3
    vis_width: int = 64

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=4, epochs=2, progress=False, relation_dim=8,
                      lbn_blocks=1, fusion_blocks=1, decoder_min_width=16, vis_epochs=2, vis_width=16),
        "cpu": dict(),
        "paper": dict(backbone="wide_resnet50_2.tv_in1k", weights="timm", batch_size=16, epochs=200,
                      use_local=True, relation_dim=256, decoder_blocks=3, decoder_min_width=0, vis_epochs=100),
    }

    RANGES: ClassVar[dict[str, Range]] = {
        "n_candidates": Range(1), "bank_ratio": Range(0, 1, open_low=True), "projection_dim": Range(1),
        "relation_dim": Range(1), "lbn_blocks": Range(1), "decoder_blocks": Range(1), "adam_betas": Range(0, 1),
        "vis_epochs": Range(1), "vis_lr": Range(0, open_low=True), "vis_width": Range(1)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"template_align": TEMPLATE_ALIGNS}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.use_global or self.use_local):
            raise ConfigError("THFR needs at least one bottleneck: set use_global or use_local to True.")
        if self.use_relation and not self.use_template:
            raise ConfigError("use_relation=True needs use_template=True (the relation is between input and template).")


def by_layout(config: Config, layout: str) -> tuple[int, float]:
    """``(n_candidates, sigma)`` for training images of ``layout``: the config's values where set, else
    :data:`BY_LAYOUT` (MVTec LOCO: logical rules, one template; MVTec AD and the rest: six)."""
    table = BY_LAYOUT.get(layout, BY_LAYOUT["*"])
    n = table["n_candidates"] if config.n_candidates is None else config.n_candidates
    sigma = table["sigma"] if config.sigma is None else config.sigma
    return int(n), float(sigma)
