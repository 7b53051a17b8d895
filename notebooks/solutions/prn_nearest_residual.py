"""Notebook 05 · PRN Eq. 1: residual to the nearest prototype."""


def my_nearest_residual(features, prototypes):
    """``features: float[B, C, h, w]``, ``prototypes: float[K, C, h, w]`` ->
    ``(|F - P*| float[B, C, h, w], index of P* long[B])`` with ``P* = argmin_k ||F - P^k||_2`` over whole maps."""
    distances = ((features[:, None] - prototypes[None]) ** 2).flatten(2).sum(dim=2)   # [B, K]
    index = distances.argmin(dim=1)
    return (features - prototypes[index]).abs(), index
