"""PRN: the method class (prototypes, training on generated anomalies, inference, persistence)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.clustering import KMeansResult
from nbhelpers.data.anomalies import (
    TextureSource,
)
from nbhelpers.data.anomalies.prn_dataset import AnomalyGenerationDataset, load_image
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader, union_mask
from nbhelpers.distributed import computed_once
from nbhelpers.errors import ConfigError
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, Paper, micro_batched, register
from nbhelpers.methods.prn.attention import MSASizeRule
from nbhelpers.methods.prn.config import Config
from nbhelpers.methods.prn.loss import prn_loss, scaled_top_k, top_k_score
from nbhelpers.methods.prn.network import PrototypicalResidualNetwork
from nbhelpers.progress import progress
from nbhelpers.train import autocast, to_device


@register
class PRN(AnomalyMethod):
    """Prototypical Residual Network (supervised with a few seen anomalies + generated ones)."""

    name = "prn"
    paper = Paper("Zhang et al., Prototypical Residual Networks for Anomaly Detection and Localization, CVPR 2023",
                  "PRN", shared=("nbhelpers.data.anomalies",))
    config_class = Config
    modules = ("net",)
    size_rule = MSASizeRule()

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if len(cfg.layers) < 1 or cfg.bottleneck_layer <= max(cfg.layers):
            raise ConfigError(f"PRN: bottleneck_layer ({cfg.bottleneck_layer}) must be deeper than "
                              f"layers {cfg.layers}.")
        self.backbone = FeatureExtractor(cfg.backbone, (*cfg.layers, cfg.bottleneck_layer), cfg.weights).to(self.device)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=self.device))
        self.feature_sizes = [tuple(f.shape[-2:]) for f in probe[:-1]]
        self.net = PrototypicalResidualNetwork(
            self.backbone.channels[:-1], self.backbone.reductions[:-1], self.feature_sizes, self.backbone.channels[-1],
            cfg.msa_depth, cfg.patch_divisors, cfg.use_prototypes, cfg.use_msa, cfg.use_fusion, cfg.msa_embedding,
            cfg.msa_scale, cfg.prototype_window).to(self.device)
        self.top_k = scaled_top_k(cfg.top_k, cfg.image_size, cfg.image_size)
        self.kmeans_results: list[KMeansResult | None] = []

    # ----- prototypes -----------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, samples: Sequence[Sample]) -> list[torch.Tensor]:
        """Backbone maps of ``samples`` at the skip scales: ``list[float[N,C_j,h_j,w_j]]`` on the device."""
        per_scale: list[list[torch.Tensor]] = [[] for _ in self.feature_sizes]
        for batch in progress(self.loader(samples), desc="prn features", enabled=self.config.progress):
            for j, f in enumerate(self.backbone(to_device(batch["image"], self.device))[:-1]):
                per_scale[j].append(f)
        return [torch.cat(f) for f in per_scale]

    def fit_prototypes(self, train: Sequence[Sample]) -> list[KMeansResult | None]:
        """MP initialisation (Sec. 3.1): k-means per scale over the normal training maps (frozen after)."""
        if self.net.prototypes is None:
            return []
        cfg = self.config
        prototypes = self.net.prototypes

        def cluster() -> tuple[list[torch.Tensor], list[KMeansResult | None]]:
            results = prototypes.fit(self.features(train), cfg.prototype_ratio, cfg.kmeans_iters, cfg.seed)
            return prototypes.prototypes, results

        centers, self.kmeans_results = computed_once(cluster, self.device)
        prototypes.assign(centers)
        return self.kmeans_results

    # ----- training -------------------------------------------------------------------------------
    def training_set(self, train: Sequence[Sample],
                     anomalies: Sequence[Sample] | None = None) -> AnomalyGenerationDataset:
        """The generated training data (Sec. 3.4) from normal ``train`` and seen ``anomalies``; the HEA
        texture pool leaves out the category's own source photograph (as POUTA's)."""
        cfg = self.config
        size = cfg.image_size
        seen = [(load_image(s, size), union_mask(s, size)) for s in (anomalies or [])]
        mean, std = self.normalization
        return AnomalyGenerationDataset([load_image(s, size) for s in train], seen, mean, std, cfg.seed,
                                        TextureSource.for_category(train[0].category, cfg.textures), cfg.hoa_prob,
                                        cfg.target_areas)

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Prototypes by k-means (``val`` is not used: PRN selects no epoch)."""
        self.fit_prototypes(train)

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None):
        """Groups of generated images (:meth:`training_set`); ``anomalies`` are the seen anomalies (may be
        ``None``: simulated anomalies only). Each group holds 4 images, so ``batch_size // 4`` groups."""
        cfg = self.config
        return make_loader(self.training_set(train, anomalies), max(1, cfg.batch_size // 4), shuffle=True,
                           num_workers=cfg.num_workers, seed=cfg.seed)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        cfg = self.config
        return torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), None

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 5 on a batch of groups (``image: float[G,4,3,H,W]``, ``mask: float[G,4,1,H,W]``)."""
        cfg = self.config
        images, masks = batch["image"].flatten(0, 1), batch["mask"].flatten(0, 1)
        logits = self.net(self.backbone(images), images.shape[-2:])
        return prn_loss(logits, masks, cfg.focal_alpha, cfg.focal_gamma, cfg.focal_weight)

    # ----- inference ------------------------------------------------------------------------------
    @micro_batched
    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Anomaly probability maps ``M_o`` at input size and top-K mean scores.

        ``extras``: ``prototype_index long[B,S]``, ``residual_maps`` (per scale, channel mean of
        ``D_j``: ``float[B,h_j,w_j]``), ``attention`` (per scale, per MSA head, ``float[B,N,N]``).
        """
        self.net.eval()
        images = to_device(batch["image"], self.device)
        with autocast(self.device):
            logits, info = self.net(self.backbone(images), images.shape[-2:], details=True)
        maps = torch.sigmoid(logits.float())[:, 0]
        extras: dict[str, Any] = {"attention": [[a.float() for a in heads] for heads in info["attention"]]}
        if "residuals" in info:
            extras["prototype_index"] = info["prototype_index"]
            extras["residual_maps"] = [r.float().mean(1) for r in info["residuals"]]
        return AnomalyResult(scores=top_k_score(maps, self.top_k), maps=maps, extras=extras)

    # ----- persistence ----------------------------------------------------------------------------
    def load_state_dict(self, state: dict[str, Any]) -> None:
        protos = self.net.prototypes
        if protos is not None:
            protos.assign([state["net"][f"prototypes.p{j}"] for j in range(protos.n_scales)])
        self.net.load_state_dict(state["net"])
        self.net.eval()
