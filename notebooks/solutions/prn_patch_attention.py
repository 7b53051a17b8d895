"""Notebook 05 · PRN Eq. 3: one multi-size self-attention head."""
import torch


def my_patch_attention(head, x):
    """``A = softmax(Q K^T / (C p_h p_w)) V`` between the ``N`` patches of size ``head.patch``.

    Q, K, V are ``head.query(x)``, ``head.key(x)``, ``head.value(x)`` cut into flattened patches.
    ``x: float[B, C, h, w]`` -> ``(float[B, C, h, w], attention float[B, N, N])``.
    """
    b, c, h, w = x.shape
    ph, pw = head.patch
    gh, gw = h // ph, w // pw

    def patches(t):           # [B, C, h, w] -> [B, N, C ph pw]
        return t.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * ph * pw)

    q, k, v = patches(head.query(x)), patches(head.key(x)), patches(head.value(x))
    attention = torch.softmax(q @ k.transpose(1, 2) / (c * ph * pw), dim=-1)
    out = (attention @ v).reshape(b, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return out, attention
