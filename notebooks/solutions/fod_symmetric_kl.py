"""Notebook 06 · FOD Eq. 6: the symmetric KL divergence of two correlation rows."""
import torch


def my_symmetric_kl(p, q):
    """``KL(p||q) + KL(q||p)`` along the last axis, with ``log(x + 1e-4)`` as the official code.
    ``float[..., M] x float[..., M] -> float[...]``."""
    log_p, log_q = torch.log(p + 1e-4), torch.log(q + 1e-4)
    return (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)
