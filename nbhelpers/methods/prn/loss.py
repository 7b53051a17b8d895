"""PRN's loss (Eq. 5: smooth L1 + focal) and the top-K image score."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbhelpers.losses import focal_loss


def prn_loss(logits: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0,
             weight: float = 5.0) -> dict[str, torch.Tensor]:
    """Eq. 5: ``L = SmoothL1(M_o, M) + lambda * L_focal(M_o, M)`` with ``M_o = sigmoid(logits)``.

    Smooth-L1 uses beta = 1 (Fast R-CNN [14]); the focal loss (Lin et al. [29]) is
    ``-a_t (1 - p_t)^gamma log p_t`` with ``alpha = 0.5, gamma = 4, lambda = 5`` in the paper; both are
    means over pixels. ``logits, mask: float[B,1,H,W]``. Returns ``{"loss", "smooth_l1", "focal"}``.
    """
    prob = torch.sigmoid(logits.float())
    target = mask.float()
    smooth_l1 = F.smooth_l1_loss(prob, target, beta=1.0)
    focal = focal_loss(prob, target, alpha=alpha, gamma=gamma)
    return {"loss": smooth_l1 + weight * focal, "smooth_l1": smooth_l1, "focal": focal}


def top_k_score(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Image score (Sec. 3.5): mean of the ``k`` largest pixels of each ``float[B,H,W]`` map -> ``float[B]``."""
    flat = maps.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


def scaled_top_k(top_k: int, height: int, width: int, reference: int = 256) -> int:
    """``top_k`` pixels at ``reference x reference`` scaled with the image area (at least 1)."""
    return max(1, int(round(top_k * height * width / reference ** 2)))
