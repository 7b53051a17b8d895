"""Notebook 02 · THFR Eq. 1: image-level nearest-neighbour search with one matrix product."""
import torch


def my_image_nns(query, keys, n):
    """``query: float[B, C, H, W]`` deepest-level features, ``keys: float[N, D]`` L2-normalised
    flattened bank features -> ``(index long[B, n], similarity float[B, n])``, most similar first."""
    q = query.flatten(1)
    q = q / q.norm(dim=1, keepdim=True)
    similarity = q @ keys.T                       # [B, N] cosine similarities
    best = torch.topk(similarity, n, dim=1)
    return best.indices, best.values
