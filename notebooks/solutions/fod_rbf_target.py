"""Notebook 06 · FOD Eq. 5: the RBF target correlation."""
import torch


def my_rbf_target(sigma, distances):
    """``T[i, j] ∝ exp(-dy²/(2 σ_y²) - dx²/(2 σ_x²))``, each row normalised to sum 1.

    ``sigma: float[B, heads, N, 2]`` = (σ_y, σ_x) of query ``i``; ``distances: float[2, N, M]`` squared
    row / column distances -> ``float[B, heads, N, M]``.
    """
    sigma_y, sigma_x = sigma[..., :1], sigma[..., 1:]
    exponent = -distances[0] / (2 * sigma_y ** 2) - distances[1] / (2 * sigma_x ** 2)
    return torch.softmax(exponent, dim=-1)       # exp(...) / sum_j exp(...), computed stably
