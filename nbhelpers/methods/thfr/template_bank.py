"""THFR's template bank and image-level nearest-neighbour search (Eq. 1, §3.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nbhelpers.coreset import greedy_coreset


def image_nns(query: torch.Tensor, keys: torch.Tensor, n: int = 1,
              exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level nearest-neighbour search (Eq. 1) for a whole batch with one matrix product.

    ``d(I_K, B_K^i)`` is the cosine distance of the flattened deepest-level features, so the ``n``
    nearest templates are the ``n`` largest cosine similarities.

    Args:
        query: ``float[B,C,H,W]`` (or ``[B,D]``) deepest-level features of the queries.
        keys: ``float[N,D]`` L2-normalised flattened bank features (:attr:`TemplateBank.keys`).
        n: number of candidates (clipped to what the bank holds).
        exclude: ``long[B]`` bank index each query must not retrieve (itself, during training), or ``None``.

    Returns:
        ``(index long[B,n], similarity float[B,n])``, most similar first.
    """
    q = F.normalize(query.flatten(1).float(), dim=1)
    sim = q @ keys.float().T  # [B, N]
    if exclude is not None:
        sim = sim.scatter(1, exclude.view(-1, 1), float("-inf"))
    n = min(n, keys.shape[0] - (1 if exclude is not None else 0))
    similarity, index = sim.topk(max(n, 1), dim=1)
    return index, similarity


def draw_template(candidates: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``random(.)`` of Eq. 1: one column per row of ``candidates: long[B,n]`` -> ``long[B]``."""
    pick = torch.randint(candidates.shape[1], (candidates.shape[0],), generator=generator, device=candidates.device)
    return candidates.gather(1, pick[:, None])[:, 0]


@dataclass
class TemplateBank:
    """Multi-level pre-trained features of normal images: the templates of THFR (§3.2).

    Attributes:
        features: per level ``float[N,C_k,H_k,W_k]`` (``B = {B_k^i}`` of the paper).
        paths: image path of each entry (to show templates as pictures).
        keys: ``float[N,D]`` L2-normalised flattened deepest level (the NNS keys).
    """

    features: list[torch.Tensor]
    paths: list[str]

    def __post_init__(self) -> None:
        self.keys = F.normalize(self.features[-1].flatten(1).float(), dim=1)

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, query: torch.Tensor, n: int = 1, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`image_nns` of ``query: float[B,C_K,H_K,W_K]`` against this bank."""
        return image_nns(query, self.keys, n, exclude)

    def candidates(self, n: int) -> torch.Tensor:
        """``long[N,n]``: the ``n`` nearest *other* entries of every entry (training pairs of Eq. 1)."""
        index, _ = self.search(self.features[-1], n, exclude=torch.arange(len(self), device=self.keys.device))
        return index

    def gather(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The template features of bank entries ``index: long[B]`` -> per level ``float[B,C_k,H_k,W_k]``."""
        return [f[index] for f in self.features]

    def subsample(self, ratio: float, projection_dim: int = 128, seed: int = 0) -> TemplateBank:
        """A bank of ``ratio * N`` entries chosen by greedy coreset selection on :attr:`keys` (supp. §3.2)."""
        if ratio >= 1:
            return self
        index = greedy_coreset(self.keys, ratio, projection_dim, seed).sort().values
        return TemplateBank([f[index] for f in self.features], [self.paths[i] for i in index.tolist()])

    def to(self, device: torch.device) -> TemplateBank:
        return TemplateBank([f.to(device) for f in self.features], list(self.paths))


def template_agreement(query: torch.Tensor, template: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How well a retrieved template lines up with its query, at one feature level (a retrieval
    diagnostic, not part of the paper).

    The restoration can copy a template's detail only where the template shows the same thing at
    the same place. ``aligned`` is the mean over positions ``p`` of ``cos(q(p), t(p))`` (co-located
    features); ``matched`` the mean of ``max_r cos(q(p), t(r))`` (each query position's best
    template position anywhere, what patch matching would find). ``matched - aligned`` is large
    when the template holds the right content in another pose (a rotated or shifted object).

    Args:
        query, template: ``float[B,C,H,W]`` features of the queries and of their templates.

    Returns:
        ``(aligned float[B], matched float[B])``.
    """
    q = F.normalize(query.flatten(2).float(), dim=1)  # [B, C, m]
    t = F.normalize(template.flatten(2).float(), dim=1)
    aligned = (q * t).sum(1).mean(1)
    matched = torch.bmm(q.transpose(1, 2), t).amax(2).mean(1)  # [B, m, m] -> best template position per query position
    return aligned, matched
