"""PatchCore-style nearest-neighbour baseline on the same pre-trained backbone.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (CVPR 2022), simplified: locally
aggregated (3x3 average) mid-level patch features of all normal training images form a memory
bank, optionally reduced by greedy k-center coreset selection; a test patch's anomaly score is the
distance to its nearest bank entry. It is the floor every paper method of the collection must beat.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.coreset import NearestNeighbours, greedy_coreset
from nbhelpers.data.records import Sample
from nbhelpers.distributed import computed_once
from nbhelpers.maps import max_score, smooth, upsample
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, micro_batched, register
from nbhelpers.methods.fields import Range
from nbhelpers.progress import progress
from nbhelpers.train import to_device


@dataclass
class Config(MethodConfig):
    """Baseline settings.

    Attributes:
        coreset_ratio: fraction of bank patches kept by greedy coreset selection (1.0 keeps all).
        projection_dim: random-projection size used to speed up coreset selection.
        sigma: Gaussian smoothing of the upsampled map (PatchCore: 4).
    """

    coreset_ratio: float = 0.1
    projection_dim: int = 128
    sigma: float = 4.0
    epochs: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"epochs": Range(0), "coreset_ratio": Range(0, 1, open_low=True),
                                          "projection_dim": Range(1)}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, progress=False, coreset_ratio=0.5),
        "cpu": dict(),
        "paper": dict(backbone="wide_resnet50_2", weights="timm", image_size=224, batch_size=32, coreset_ratio=0.01),
    }


def aggregate_patches(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """PatchCore local aggregation: 3x3 average pooling per level, levels upsampled to the first
    level's size and concatenated. ``list[float[B,C_l,h_l,w_l]] -> float[B,sum C_l,h_0,w_0]``."""
    size = features[0].shape[-2:]
    pooled = [F.avg_pool2d(f, 3, 1, 1) for f in features]
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=False) if p.shape[-2:] != size else p
                      for p in pooled], dim=1)


def patch_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """One row per patch: ``float[B,D,h,w] -> float[B*h*w,D]`` (image, then row, then column order)."""
    return embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])


@register
class Baseline(AnomalyMethod):
    """PatchCore-style kNN anomaly detection (no training: a memory bank of normal patches)."""

    name = "baseline"
    config_class = Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights).to(self.device)
        self.bank = torch.empty(0, sum(self.backbone.channels), device=self.device)

    @property
    def bank(self) -> torch.Tensor:
        """The memory bank ``float[M,D]``; setting it prepares its exact nearest-neighbour search."""
        return self._bank

    @bank.setter
    def bank(self, bank: torch.Tensor) -> None:
        self._bank = bank
        self.neighbours = NearestNeighbours(bank)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``float[B,D,h,w]`` of normalised images ``float[B,3,H,W]``."""
        return aggregate_patches(self.backbone(images))

    @torch.no_grad()
    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Fill the memory bank with every patch of the normal ``train`` images, then subsample it
        (the baseline has no ``net``: nothing is trained by gradient)."""
        self.bank = computed_once(lambda: self._build_bank(train), self.device)

    def _build_bank(self, train: Sequence[Sample]) -> torch.Tensor:
        """Every patch embedding of ``train``, subsampled by the coreset: ``float[M,D]``."""
        feats = []
        for batch in progress(self.loader(train), desc="baseline bank", enabled=self.config.progress):
            emb = self.embed(batch["image"].to(self.device))
            feats.append(patch_rows(emb))
        bank = torch.cat(feats)
        idx = greedy_coreset(bank, self.config.coreset_ratio, self.config.projection_dim, self.config.seed)
        return bank[idx].contiguous()

    @micro_batched
    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Distance of each test patch to the bank, upsampled to the input size and smoothed."""
        images = to_device(batch["image"], self.device)
        emb = self.embed(images)
        patch_maps = self.neighbours(patch_rows(emb)).view(emb.shape[0], *emb.shape[2:])
        maps = smooth(upsample(patch_maps, images.shape[-2:]), self.config.sigma)
        return AnomalyResult(scores=max_score(maps), maps=maps, extras={"patch_maps": patch_maps})

    def hot_kernels(self, batch: dict) -> dict[str, tuple[Callable[[], Any], int]]:
        """The exact nearest-neighbour search of ``batch``'s patches in the bank (``NearestNeighbours``)."""
        queries = patch_rows(self.embed(to_device(batch["image"], self.device)))
        return {"nearest neighbour": (lambda: self.neighbours(queries), self.neighbours.flops(len(queries)))}

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank = state["bank"].to(self.device)


__all__ = ["Baseline", "Config", "aggregate_patches", "patch_rows"]
