"""Notebook 03 · THFR Eq. 4-5: the anomaly map (before Gaussian smoothing)."""
import torch.nn.functional as F


def my_anomaly_map(features, restored, size):
    """``M = sum_k U_k(M_k)`` with ``M_k = 1 - cos`` along channels and ``U_k`` bilinear upsampling
    (``align_corners=False``) to ``size = (H, W)``. Per level ``float[B, C_k, H_k, W_k]`` -> ``float[B, H, W]``."""
    total = 0.0
    for f, r in zip(features, restored):
        m = 1 - (f * r).sum(dim=1) / (f.norm(dim=1) * r.norm(dim=1))          # [B, H_k, W_k]
        total = total + F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return total
