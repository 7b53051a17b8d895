"""Notebook 04 · POUTA Eq. 5 / Eq. 7: focal + L1 segmentation loss."""
import torch


def my_segmentation_loss(prob, mask):
    """``mean(-(1 - p_t)^2 log p_t) + mean(|prob - mask|)`` with ``p_t = prob`` on anomalous pixels
    and ``1 - prob`` elsewhere. ``prob, mask: float[B, 1, H, W]`` -> ``float[]``."""
    p_t = torch.where(mask > 0.5, prob, 1 - prob)
    focal = -((1 - p_t) ** 2 * torch.log(p_t)).mean()
    return focal + (prob - mask).abs().mean()
