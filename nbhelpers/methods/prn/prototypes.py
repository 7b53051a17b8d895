"""PRN's multi-scale prototypes (Sec. 3.1, Eq. 1) and the residuals to the nearest one."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nbhelpers.clustering import KMeansResult, kmeans
from nbhelpers.train import full_precision


def nearest_prototype(features: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1's ``argmin_k ||F - P^k||_2`` over whole maps, in float32.

    ``features: float[B,C,h,w]``, ``prototypes: float[K,C,h,w]`` -> ``(index long[B], distance float[B])``.
    """
    dist = torch.cdist(features.float().flatten(1)[None], prototypes.float().flatten(1)[None])[0]
    distance, index = dist.min(dim=1)
    return index, distance


class MultiScalePrototypes(nn.Module):
    """MP (Sec. 3.1): frozen prototype maps per scale and the residual to the nearest one (Eq. 1).

    Buffers ``p0, p1, ...``: ``float[K_j, C_j, h_j, w_j]`` (empty until :meth:`fit`).
    ``forward(features: list[float[B,C_j,h_j,w_j]]) -> (residuals list[float[B,C_j,h_j,w_j]],
    index long[B, n_scales])`` with ``D_j = |F_j - P_j*|`` (element-wise Euclidean distance; the
    unofficial code squares it instead).
    """

    def __init__(self, n_scales: int) -> None:
        super().__init__()
        self.n_scales = n_scales
        for j in range(n_scales):
            self.register_buffer(f"p{j}", torch.empty(0))

    @property
    def prototypes(self) -> list[torch.Tensor]:
        return [getattr(self, f"p{j}") for j in range(self.n_scales)]

    def assign(self, prototypes: Sequence[torch.Tensor]) -> None:
        """Replace the prototype buffers (shapes may change)."""
        for j, p in enumerate(prototypes):
            setattr(self, f"p{j}", p.detach().float().contiguous())

    @torch.no_grad()
    def fit(self, features: Sequence[torch.Tensor], ratio: float = 0.1, iters: int = 300,
            seed: int = 0) -> list[KMeansResult | None]:
        """k-means per scale over the normal maps ``features[j]: float[N,C_j,h_j,w_j]``.

        ``K = clamp(round(ratio * N), 1, N)``; ``ratio >= 1`` keeps every map (``None`` result).
        """
        results: list[KMeansResult | None] = []
        protos = []
        for j, f in enumerate(features):
            n = f.shape[0]
            if ratio >= 1:
                protos.append(f.float())
                results.append(None)
                continue
            k = min(n, max(1, int(round(ratio * n))))
            res = kmeans(f.flatten(1), k, iters, seed + j)
            protos.append(res.centers.view(k, *f.shape[1:]))
            results.append(res)
        self.assign(protos)
        return results

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if any(p.numel() == 0 for p in self.prototypes):
            raise RuntimeError("MultiScalePrototypes: no prototypes yet; call fit() first.")
        residuals, indices = [], []
        with full_precision(features[0].device):
            for f, p in zip(features, self.prototypes):
                idx, _ = nearest_prototype(f, p)
                residuals.append((f.float() - p[idx]).abs())
                indices.append(idx)
        return residuals, torch.stack(indices, dim=1)
