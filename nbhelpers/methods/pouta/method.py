"""POUTA and the vanilla design: the method classes."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nbhelpers.data.anomalies import DraemDataset, TextureSource
from nbhelpers.data.io import read_image
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader, resize_image
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, Paper, SizeRule, micro_batched, register
from nbhelpers.methods.pouta.analysis import complexity, grad_cam
from nbhelpers.methods.pouta.config import Config, VanillaConfig
from nbhelpers.methods.pouta.discriminative import POUTANet
from nbhelpers.methods.pouta.loss import (
    anomaly_probability,
    image_reconstruction_loss,
    image_score,
    mss_loss,
    segmentation_loss,
)
from nbhelpers.train import autocast, to_device


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
        ``samples_per_epoch``), filled with ``I_aug`` when ``self_mix``; the texture pool leaves out
        the category's own source photograph (:meth:`TextureSource.for_category`). With
        ``few_shot = k`` only the first ``k`` images are used (Table IV), cycled to the same length."""
        cfg = self.config
        if cfg.few_shot:
            train = train[:cfg.few_shot]
        images = [resize_image(read_image(s.image), cfg.image_size) for s in train]
        n = max(cfg.samples_per_epoch, len(images))
        images = (images * math.ceil(n / len(images)))[:n]
        textures = TextureSource.for_category(train[0].category, cfg.texture_root)
        return DraemDataset(images, cfg.image_size, textures=textures, seed=cfg.seed, anomaly_prob=cfg.anomaly_prob,
                            beta_range=tuple(cfg.beta_range), n_augment=cfg.n_augment, rotate_prob=cfg.rotate_prob,
                            self_mix=cfg.self_mix)

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

    @micro_batched
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


@register
class VanillaPOUTA(POUTA):
    """The vanilla reconstruction-based design of Fig. 4a (same reconstructive network and losses,
    a U-Net discriminator on ``[input, reconstruction]``), for the side-by-side comparison."""

    name = "pouta_vanilla"
    config_class = VanillaConfig
    size_rule = SizeRule(multiple=32, backbone=False, why="the discriminative U-Net halves the image 5 times")
