"""k-means clustering on the device (Lloyd iterations, k-means++ seeding), beside the coreset selection of nbhelpers.coreset."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class KMeansResult(NamedTuple):
    """``centers: float[K,D]``, ``labels: long[N]``, ``inertia``: final sum of squared distances,
    ``history``: inertia after each assignment step (non-increasing)."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: float
    history: list[float]


def _sq_distances(x: torch.Tensor, centers: torch.Tensor, chunk: int) -> torch.Tensor:
    """Squared Euclidean distances ``float[N,K]`` of ``x: float[N,D]`` to ``centers: float[K,D]``."""
    return torch.cat([torch.cdist(c, centers).square() for c in x.split(chunk)])


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 300, seed: int = 0, chunk: int = 1024) -> KMeansResult:
    """Lloyd's k-means with L2 distance on the device of ``x``, initialised as PRN does with ``k``
    rows drawn at random (seeded).

    Distances are computed in chunks of ``chunk`` rows (memory ``chunk x k``); centres are means
    computed with a one-hot matrix product (deterministic on GPU); an empty cluster takes the point
    farthest from its centre. Stops when no assignment changes or after ``iters`` iterations.

    Args:
        x: ``float[N, D]`` (e.g. flattened feature maps).
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= N, got k={k}, N={n}.")
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    centers = x[torch.randperm(n, generator=gen)[:k].to(x.device)].clone()
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    history: list[float] = []
    for _ in range(max(1, iters)):
        d2 = _sq_distances(x, centers, chunk)
        best, new_labels = d2.min(dim=1)
        history.append(float(best.sum()))
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = F.one_hot(labels, k).to(x.dtype)                    # [N, K]
        counts = onehot.sum(0)
        centers = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:  # re-seed empty clusters with the worst-fitted points
            far = best.argsort(descending=True)[: len(empty)]
            centers[empty] = x[far]
    inertia = float(_sq_distances(x, centers, chunk).gather(1, labels[:, None]).sum())
    return KMeansResult(centers, labels, inertia, history)
