"""Notebook 02 · THFR Eq. 1 at training time: the n nearest *other* images of every bank entry."""
import torch


def my_nearest_others(features, n):
    """``features: float[N, C, H, W]`` (deepest level of the bank) -> ``long[N, n]``, nearest first.

    An entry must not retrieve itself: its own similarity is set to minus infinity.
    """
    keys = features.flatten(1)
    keys = keys / keys.norm(dim=1, keepdim=True)
    similarity = keys @ keys.T
    similarity = similarity - torch.diag(torch.full((len(keys),), float("inf")))
    return torch.topk(similarity, n, dim=1).indices
