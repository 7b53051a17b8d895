"""POUTA's losses (Eq. 8: reconstruction, segmentation, MSS) and scores (Eq. 7)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from nbhelpers.losses import focal_loss
from nbhelpers.train import full_precision


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
