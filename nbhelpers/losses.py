"""Loss functions shared by several methods (each method's own losses live in its module)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(prob: torch.Tensor, target: torch.Tensor, alpha: float | None = 0.5, gamma: float = 2.0,
               eps: float = 1e-6) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), mean over all pixels.

    ``FL = -a_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` where ``target = 1`` and ``1 - p`` elsewhere,
    ``a_t = alpha`` / ``1 - alpha`` likewise (``alpha=None``: no class weighting).

    Args:
        prob: ``float[B,1,H,W]`` (any shape) predicted anomaly probability in [0,1]
            (sigmoid of a logit, or the anomaly channel of a softmax).
        target: same shape, ground truth in {0,1}.
    """
    prob = prob.float().clamp(eps, 1 - eps)
    target = target.float()
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = -((1 - p_t) ** gamma) * torch.log(p_t)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


def cosine_distance_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` along channels: ``float[B,C,H,W] x float[B,C,H,W] -> float[B,H,W]``."""
    return 1 - F.cosine_similarity(a.float(), b.float(), dim=1)
