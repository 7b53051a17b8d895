"""PRN's multi-scale prototypes (Sec. 3.1, Eq. 1) and the residuals to the nearest one."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


def windowed_nearest(features: torch.Tensor, prototypes: torch.Tensor, radius: int) -> torch.Tensor:
    """Per position, the nearest prototype feature among all prototypes within ``±radius`` grid cells.

    For unaligned objects (a rotated screw) a whole prototype map (Eq. 1) matches nowhere well; this
    matches each position ``(y, x)`` of ``features: float[B,C,h,w]`` against the ``K (2r+1)^2`` vectors
    ``P^k[:, y+dy, x+dx]`` of ``prototypes: float[K,C,h,w]`` (``|dy|, |dx| <= r``, inside the map) by
    L2 distance and returns the nearest, ``float[B,C,h,w]`` (float32). ``radius=0`` compares each
    position with the same position of every prototype.
    """
    b, c, h, w = features.shape
    k, side = prototypes.shape[0], 2 * radius + 1
    cand = F.unfold(prototypes.float(), side, padding=radius).view(k, c, side * side, h * w)
    cand = cand.permute(3, 0, 2, 1).reshape(h * w, k * side * side, c)                     # [hw, n, C]
    inside = F.unfold(torch.ones(1, 1, h, w, device=features.device), side, padding=radius)[0] > 0  # [side^2, hw]
    inside = inside.T[:, None, :].expand(h * w, k, side * side).reshape(h * w, -1)          # [hw, n]
    f = features.float().flatten(2).permute(2, 0, 1)                                        # [hw, B, C]
    dist = (cand.square().sum(-1)[:, None, :] - 2 * f @ cand.transpose(1, 2)).masked_fill(~inside[:, None, :], float("inf"))
    best = dist.argmin(-1)                                                                  # [hw, B]
    nearest = torch.gather(cand, 1, best[..., None].expand(-1, -1, c))                      # [hw, B, C]
    return nearest.permute(1, 2, 0).reshape(b, c, h, w)


class MultiScalePrototypes(nn.Module):
    """MP (Sec. 3.1): frozen prototype maps per scale and the residual to the nearest one (Eq. 1).

    Buffers ``p0, p1, ...``: ``float[K_j, C_j, h_j, w_j]`` (empty until :meth:`fit`).
    ``forward(features: list[float[B,C_j,h_j,w_j]]) -> (residuals list[float[B,C_j,h_j,w_j]],
    index long[B, n_scales])`` with ``D_j = |F_j - P_j*|`` (element-wise Euclidean distance; the
    unofficial code squares it instead). ``window > 0`` replaces ``P_j*`` by the per-position
    :func:`windowed_nearest` prototype feature within ``±window`` cells (``index`` stays Eq. 1's).
    """

    def __init__(self, n_scales: int, window: int = 0) -> None:
        super().__init__()
        self.n_scales, self.window = n_scales, window
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
                nearest = windowed_nearest(f, p, self.window) if self.window else p[idx]
                residuals.append((f.float() - nearest).abs())
                indices.append(idx)
        return residuals, torch.stack(indices, dim=1)
