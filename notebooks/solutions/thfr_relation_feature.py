"""Notebook 03 · THFR Eq. 2: the bidirectional relation feature."""
import torch


def my_relation_feature(query, key):
    """``query = theta(I)``, ``key = phi(T)``: ``float[B, d, H, W]`` -> ``float[B, 2HW, H, W]``.

    ``R[i, j] = <query_i, key_j>`` over the ``m = HW`` positions (row-major); position ``i`` gets the
    ``2m`` channels ``[R[i, :], R[:, i]]``.
    """
    b, d, h, w = query.shape
    r = torch.einsum("bdi,bdj->bij", query.reshape(b, d, h * w), key.reshape(b, d, h * w))
    per_position = torch.cat([r, r.transpose(1, 2)], dim=2)   # [B, m, 2m]: row i = [R[i, :], R[:, i]]
    return per_position.permute(0, 2, 1).reshape(b, 2 * h * w, h, w)
