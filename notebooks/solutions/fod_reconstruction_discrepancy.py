"""Notebook 06 · FOD Eq. 3 (first factor of Eq. 12): patch-wise reconstruction discrepancy."""


def my_reconstruction_discrepancy(x, x_hat):
    """``||x - x_hat||_2 + 1 - cos(x, x_hat)`` per patch. ``float[B, N, C] x float[B, N, C] -> float[B, N]``."""
    l2 = ((x - x_hat) ** 2).sum(dim=-1).sqrt()
    cos = (x * x_hat).sum(dim=-1) / (x.norm(dim=-1) * x_hat.norm(dim=-1))
    return l2 + 1 - cos
