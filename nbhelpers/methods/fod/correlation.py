"""FOD's correlations: RBF targets over patch-grid distances (Eq. 5), symmetric KL (Eq. 6), entropy (Eq. 7) and the min-max routing."""
from __future__ import annotations

import torch

from nbhelpers.methods.fod.config import EPS


def grid_positions(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major ``(row, col)`` coordinates of an ``h x w`` patch grid -> ``long[h*w, 2]``."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1)


def squared_axis_distances(query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """Squared vertical and horizontal grid distances ``float[2, N, M]`` between ``query_pos: long[N,2]``
    and ``key_pos: long[M,2]`` (index 0: rows, 1: columns) — the ``||x_ij - x_i'j'||^2`` of Eq. 5 per axis."""
    diff = (query_pos[:, None, :] - key_pos[None, :, :]).float()
    return diff.square().permute(2, 0, 1)


def sigma_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Kernel widths of the target correlation from a linear projection (official parameterisation):
    ``sigma = 3 ** (sigmoid(5 s) + 1e-5) - 1``, i.e. in ``(0, 2]`` grid cells. Any shape."""
    return torch.pow(3.0, torch.sigmoid(5 * logits.float()) + 1e-5) - 1


def rbf_target(sigma: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Target correlation, Eq. 5, rows normalised to sum 1.

    ``T[i, j] ∝ 1/(2π σ_y σ_x) exp(-Δy²/(2σ_y²) - Δx²/(2σ_x²))`` with the widths of query ``i``; the
    constant factor cancels in the row normalisation, so the rows are a softmax of the exponent. Eq. 5
    prints one shared variance ``σ_x² + σ_y²``; the official code (and this one) use one width per axis.

    Args:
        sigma: ``float[B, heads, N, 2]`` widths ``(σ_y, σ_x)`` per head and query position.
        distances: ``float[2, N, M]`` from :func:`squared_axis_distances`.

    Returns:
        ``float[B, heads, N, M]``, every row a distribution peaking at the query's own position.
    """
    coefficients = -0.5 / sigma.float().square()  # [B, heads, N, 2]; elementwise ops stay float32 under autocast
    logits = torch.addcmul(coefficients[..., 0:1] * distances[0], coefficients[..., 1:2], distances[1])
    return torch.softmax(logits, dim=-1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float = EPS, log_p: torch.Tensor | None = None,
                 log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise symmetric KL divergence ``KL(p||q) + KL(q||p)``, the summand of Eq. 6.

    ``sum_j (p_j - q_j)(log(p_j + eps) - log(q_j + eps))``, which equals the two KL sums of the official
    code term by term. ``float[..., M] x float[..., M] -> float[...]`` (last axis = one distribution).
    ``log_p`` / ``log_q``: ``log(p + eps)`` / ``log(q + eps)`` when the caller has them already (the
    ``N x M`` logarithms dominate the cost of :func:`routed_terms`).
    """
    p, q = p.float(), q.float()
    log_p = torch.log(p + eps) if log_p is None else log_p
    log_q = torch.log(q + eps) if log_q is None else log_q
    return ((p - q) * (log_p - log_q)).sum(-1)


def row_entropy(p: torch.Tensor, eps: float = EPS, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of each row ``-sum_j p_j log(p_j + eps)``, the summand of Eq. 7. ``float[..., M] -> float[...]``.

    Eq. 7 sums over the rows; the losses here average over rows instead, so ``lambda2`` does not
    depend on the number of patches (as in the official code). ``log_p``: as in :func:`symmetric_kl`.
    """
    p = p.float()
    return -(p * (torch.log(p + eps) if log_p is None else log_p)).sum(-1)


def routed_terms(attention: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> dict[str, torch.Tensor]:
    """The min-max routed correlation terms of one layer and branch, averaged over heads.

    Args:
        attention: ``float[B, heads, N, M]`` correlation ``S`` (rows sum to 1).
        target: ``float[B, heads, N, M]`` target ``T`` from :func:`rbf_target`.

    Returns:
        ``{"div_attn": float[B,N]`` symKL(T.detach(), S) — its gradient reaches only the attention;
        ``"div_sigma": float[B,N]`` symKL(T, S.detach()) — its gradient reaches only sigma;
        ``"entropy": float[B,N]`` entropy of S (Eq. 7 summand)}``. Both divergences have the value of
        :func:`symmetric_kl` and the entropy is :func:`row_entropy`, sharing the logarithms (without
        autograd the divergence is computed once).
    """
    s, t = attention.float(), target.float()
    log_s, log_t = torch.log(s + eps), torch.log(t + eps)
    entropy = row_entropy(s, eps, log_s).mean(1)
    if not torch.is_grad_enabled():
        div = symmetric_kl(t, s, eps, log_t, log_s).mean(1)
        return {"div_attn": div, "div_sigma": div, "entropy": entropy}
    return {"div_attn": symmetric_kl(t.detach(), s, eps, log_t.detach(), log_s).mean(1),
            "div_sigma": symmetric_kl(t, s.detach(), eps, log_t, log_s.detach()).mean(1), "entropy": entropy}
