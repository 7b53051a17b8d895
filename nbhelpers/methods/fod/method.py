"""FOD: the method class (reference features, training, inference, persistence)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.coreset import greedy_coreset
from nbhelpers.data.records import Sample
from nbhelpers.distributed import computed_once
from nbhelpers.maps import max_score, smooth, upsample
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, Paper, micro_batched, register
from nbhelpers.methods.fod.config import Config
from nbhelpers.methods.fod.correlation import grid_positions
from nbhelpers.methods.fod.loss import (
    discrepancy_weight,
    feature_reconstruction_loss,
    inter_loss,
    intra_loss,
    patch_anomaly_score,
    reconstruction_discrepancy,
)
from nbhelpers.methods.fod.modules import FODTransformer
from nbhelpers.progress import progress
from nbhelpers.train import autocast, to_device


@register
class FOD(AnomalyMethod):
    """Focus-the-Discrepancy anomaly detection: one :class:`FODTransformer` per backbone level.

    Attributes:
        backbone: the frozen :class:`~nbhelpers.backbones.FeatureExtractor`.
        net: ``nn.ModuleList`` of the level transformers (the only trainable part).
        train_result: the :class:`~nbhelpers.train.TrainResult` of the last :meth:`fit` (per-epoch
            means of every loss term under ``.terms``).
    """

    name = "fod"
    paper = Paper("Yao et al., Focus the Discrepancy: Intra- and Inter-Correlation Learning for Image Anomaly "
                  "Detection, ICCV 2023", "FOD")
    config_class = Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights).to(self.device)
        self.net = nn.ModuleList(
            FODTransformer(c, d, cfg.heads, cfg.n_layers, cfg.ffn_ratio, cfg.intra, cfg.inter, cfg.residual)
            for c, d in zip(self.backbone.channels, cfg.d_model)).to(self.device)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Locally averaged (3x3) frozen backbone features per level: ``list[float[B, C_l, h_l, w_l]]``."""
        return [F.avg_pool2d(f, 3, 1, 1) for f in self.backbone(images)]

    # ----- reference features (§3.4) --------------------------------------------------------
    @torch.no_grad()
    def reference_features(self, train: Sequence[Sample]) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """One pass over the normal ``train`` images.

        Returns ``(means, coresets)``: per level the position-wise mean of the features ``float[h*w, C]``
        (a running sum, so memory does not grow with the training set), and with ``reference="coreset"``
        per level a greedy k-center coreset (PatchCore) of all normal patches ``(float[M, C], long[M])``
        with the grid place each entry came from — streaming: the coreset of (coreset so far + next
        batch), so memory is bounded by ``coreset_size`` plus one batch (``None`` otherwise).
        """
        sums: list[torch.Tensor] = []
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        count = 0
        for batch in progress(self.loader(train), desc="fod reference", enabled=self.config.progress):
            feats = self.features(to_device(batch["image"], self.device))
            sums = [f.sum(0) for f in feats] if not sums else [s + f.sum(0) for s, f in zip(sums, feats)]
            count += feats[0].shape[0]
            if self.config.reference == "coreset":
                kept = [self._coreset_step(f, kept[level] if kept else None) for level, f in enumerate(feats)]
        means = [(s / count).flatten(1).T.contiguous() for s in sums]
        return means, (kept or None)

    def _coreset_step(self, f: torch.Tensor, kept: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy coreset of the kept entries plus the patches of ``f: float[B, C, h, w]``."""
        n = f.shape[-2] * f.shape[-1]
        pool = f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1])
        index = torch.arange(n, device=f.device).repeat(f.shape[0])
        if kept is not None:
            pool, index = torch.cat([kept[0], pool]), torch.cat([kept[1], index])
        size = min(self.config.coreset_size or n, pool.shape[0])
        idx = greedy_coreset(pool, size / pool.shape[0], seed=self.config.seed)
        return pool[idx], index[idx]

    # ----- training -------------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 11 summed over levels for a batch of normalised images ``batch["image"]: float[B, 3, H, W]``.

        The official code makes two backward passes per step (one whose correlation terms reach only the
        targets' sigma, one whose terms reach only the attention), and each holds ``L_rec``; their sum,
        optimised here in one pass, counts ``L_rec`` twice when a correlation branch learns (once for
        the patch-wise baseline, which has one pass).

        Returns ``{"loss", "rec", "div_intra", "ent_intra", "div_inter", "ent_inter"}`` (scalars; the
        divergences and entropies are layer means, Eq. 6-7, for logging).
        """
        cfg = self.config
        images = batch["image"]
        l2 = cfg.lambda2 if cfg.intra_entropy else 0.0
        logs = {k: images.new_zeros(()) for k in ("rec", "div_intra", "ent_intra", "div_inter", "ent_inter")}
        total = images.new_zeros(())
        passes = 2 if cfg.intra or cfg.inter else 1
        for net, x in zip(self.net, self.features(images)):
            x_hat, terms = net(x)
            rec = feature_reconstruction_loss(x.flatten(2).transpose(1, 2), x_hat)
            total = total + passes * rec
            logs["rec"] = logs["rec"] + rec.detach()
            for branch, loss_fn, lam2 in (("intra", intra_loss, l2), ("inter", inter_loss, cfg.lambda2)):
                if branch in terms:
                    t = {k: v.mean() for k, v in terms[branch].items()}
                    total = total + loss_fn(t["div_attn"], t["div_sigma"], t["entropy"], cfg.lambda1, lam2)
                    logs[f"div_{branch}"] = logs[f"div_{branch}"] + t["div_attn"].detach()
                    logs[f"ent_{branch}"] = logs[f"ent_{branch}"] + t["entropy"].detach()
        return {"loss": total, **logs}

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Compute the reference features (§3.4) and start each level's output at the mean feature."""
        means, coresets = computed_once(lambda: self.reference_features(train), self.device)
        for level, (net, mean) in enumerate(zip(self.net, means)):
            net.init_output(mean.mean(0))
            if self.config.inter:
                net.set_reference(*(coresets[level] if coresets else (mean, torch.arange(mean.shape[0], device=self.device))))

    @property
    def grad_clip(self) -> float | None:
        return self.config.grad_clip

    # ----- inference ------------------------------------------------------------------------
    @micro_batched
    @torch.no_grad()
    def predict(self, batch: dict, return_attention: bool = False) -> AnomalyResult:
        """Anomaly maps (Eq. 12 per level, upsampled, averaged, Gaussian-smoothed) and image scores (max).

        ``extras`` always holds per level (lists) ``"rec"``, ``"weight"``, ``"patch_score"``:
        ``float[B, h_l, w_l]`` and ``"div_intra"`` / ``"div_inter"`` (Eq. 6 per patch) when the branch
        exists. With ``return_attention`` also, per level, the correlation maps ``"intra_attention"``,
        ``"intra_target"``, ``"inter_attention"``, ``"inter_target"``: ``float[B, K, heads, N, M]``,
        ``"intra_sigma"`` / ``"inter_sigma"``: ``float[B, K, heads, N, 2]`` (σ_y, σ_x), and
        ``"reference_positions"``: ``long[M, 2]`` (grid places of the reference entries).
        """
        cfg = self.config
        self.net.eval()
        images = to_device(batch["image"], self.device)
        extras: dict[str, list[torch.Tensor]] = {}
        maps = []
        with autocast(self.device):
            for net, x in zip(self.net, self.features(images)):
                b, _, h, w = x.shape
                x_hat, terms = net(x, keep=return_attention)
                rec = reconstruction_discrepancy(x.flatten(2).transpose(1, 2), x_hat)
                branch = "inter" if "inter" in terms else "intra" if "intra" in terms else None
                weight = (discrepancy_weight(terms[branch]["div_attn"], larger_is_anomalous=branch == "inter")
                          if branch else torch.ones_like(rec))
                score = patch_anomaly_score(rec, weight, cfg.scoring)
                level = {"rec": rec, "weight": weight, "patch_score": score}
                for name, t in terms.items():
                    level[f"div_{name}"] = t["div_attn"]
                for key, value in level.items():
                    extras.setdefault(key, []).append(value.float().view(b, h, w))
                if return_attention:
                    for name, t in terms.items():
                        for key in ("attention", "target", "sigma"):
                            extras.setdefault(f"{name}_{key}", []).append(t[key].float())
                    if "inter" in terms:
                        extras.setdefault("reference_positions", []).append(grid_positions(h, w, x.device)[net.reference_index])
                maps.append(upsample(score.float().view(b, h, w), images.shape[-2:]))
        anomaly = smooth(torch.stack(maps).mean(0), cfg.sigma)
        return AnomalyResult(scores=max_score(anomaly), maps=anomaly, extras=extras)

    # ----- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                "references": [net.reference.cpu() for net in self.net],
                "reference_index": [net.reference_index.cpu() for net in self.net]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        for net, feats, index in zip(self.net, state["references"], state["reference_index"]):
            net.set_reference(feats, index)
