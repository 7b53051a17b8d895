"""Notebook 05 · PRN Eq. 5: smooth-L1 + lambda x focal loss."""
import torch


def my_prn_loss(logits, mask, alpha=0.5, gamma=4.0, weight=5.0):
    """``SmoothL1(M_o, M) + weight * focal(M_o, M)`` with ``M_o = sigmoid(logits)``, both means over
    pixels. ``logits, mask: float[B, 1, H, W]`` -> ``float[]``."""
    p = torch.sigmoid(logits)
    d = (p - mask).abs()
    smooth_l1 = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()
    anomalous = mask > 0.5
    p_t = torch.where(anomalous, p, 1 - p)
    a_t = torch.where(anomalous, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    focal = (-a_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()
    return smooth_l1 + weight * focal
