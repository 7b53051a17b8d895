"""Notebook 03 · THFR Eq. 3: the restoration loss."""


def my_restoration_loss(features, restored):
    """``sum_k mean_{h,w} (1 - cos(I_k(h, w), I^_k(h, w)))``, cosine along the channel axis.

    ``features, restored``: per level ``float[B, C_k, H_k, W_k]`` -> ``float[]``.
    """
    total = 0.0
    for f, r in zip(features, restored):
        cos = (f * r).sum(dim=1) / (f.norm(dim=1) * r.norm(dim=1))
        total = total + (1 - cos).mean()
    return total
