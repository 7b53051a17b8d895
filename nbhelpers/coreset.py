"""Memory-bank tools shared by methods: greedy k-center coreset selection and nearest-neighbour distance."""
from __future__ import annotations

import torch


def greedy_coreset(bank: torch.Tensor, ratio: float, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Indices of a greedy k-center coreset (PatchCore Alg. 1) of ``bank: float[N,D]``.

    Selects ``max(1, round(ratio * N))`` points, each the farthest from those already chosen, on a
    Johnson-Lindenstrauss random projection to ``projection_dim`` dimensions. Returns ``long[M]``.
    """
    n = bank.shape[0]
    m = max(1, int(round(ratio * n)))
    if m >= n:
        return torch.arange(n, device=bank.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if bank.shape[1] > projection_dim:
        proj = torch.randn(bank.shape[1], projection_dim, generator=gen).to(bank.device) / projection_dim ** 0.5
        feats = bank @ proj
    else:
        feats = bank
    # squared distances via |a|^2 - 2 a.b + |b|^2: one matrix-vector product per step (addmv: |a|^2 - 2 a.b
    # in one pass, exactly as the separate ops), written into two preallocated [N] buffers
    sq = (feats * feats).sum(dim=1)
    selected = torch.empty(m, dtype=torch.long, device=bank.device)
    selected[0] = int(torch.randint(n, (1,), generator=gen))
    min_dist = (sq - 2 * feats @ feats[selected[0]] + sq[selected[0]]).clamp_min_(0)
    dist = torch.empty_like(min_dist)
    for i in range(1, m):
        s = torch.argmax(min_dist)
        selected[i] = s
        torch.addmv(sq, feats, feats[s], alpha=-2, out=dist)
        torch.minimum(min_dist, dist.add_(sq[s]).clamp_min_(0), out=min_dist)
    return selected


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of each query ``float[Q,D]`` to its nearest bank row ``float[N,D]`` -> ``float[Q]``."""
    return torch.cat([torch.cdist(q, bank).amin(dim=1) for q in queries.split(chunk)])
