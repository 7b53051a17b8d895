"""Notebook 04 · POUTA Eq. 2-4: high-level semantic guidance."""
import torch
import torch.nn.functional as F


def my_semantic_guidance(hsg, f_c, deep):
    """``F'_C = W_sp * F_C * W_cn`` with ``G = hsg.guide(upsample(deep))``,
    ``W_sp = sigmoid(hsg.spatial(G))`` and ``W_cn = sigmoid(hsg.channel(global average pool of G))``.

    ``f_c: float[B, d, h, w]``, ``deep: float[B, d', h/2, w/2]`` -> ``float[B, d, h, w]``.
    """
    g = hsg.guide(F.interpolate(deep, size=f_c.shape[-2:], mode="bilinear", align_corners=False))
    w_sp = torch.sigmoid(hsg.spatial(g))                                   # [B, 1, h, w]
    w_cn = torch.sigmoid(hsg.channel(g.mean(dim=(2, 3), keepdim=True)))     # [B, d, 1, 1]
    return w_sp * f_c * w_cn
