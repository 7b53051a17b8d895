"""Notebook 06 · FOD Eq. 3 (first factor of Eq. 12): patch-wise reconstruction discrepancy."""


def my_reconstruction_discrepancy(x, x_hat):
    """``mean_c (x - x_hat)^2 + 1 - cos(x, x_hat)`` per patch (the official code's MSE + cosine distance).
    ``float[B, N, C] x float[B, N, C] -> float[B, N]``."""
    mse = ((x - x_hat) ** 2).mean(dim=-1)
    cos = (x * x_hat).sum(dim=-1) / (x.norm(dim=-1) * x_hat.norm(dim=-1))
    return mse + 1 - cos
