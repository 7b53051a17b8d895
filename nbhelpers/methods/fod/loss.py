"""FOD's losses (Eq. 3, 8, 10, 11) and anomaly score (Eq. 12)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbhelpers.methods.fod.config import SCORINGS


def reconstruction_discrepancy(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Patch-wise discrepancy ``mean_c (x - x_hat)^2 + 1 - cos(x, x_hat)`` (Eq. 3 / first factor of Eq. 12)
    as the official code computes it (``MSELoss`` per patch plus the cosine term; Eq. 3 prints the L2
    norm). ``float[B, N, C] x float[B, N, C] -> float[B, N]``."""
    x, x_hat = x.float(), x_hat.float()
    return (x - x_hat).square().mean(-1) + 1 - F.cosine_similarity(x, x_hat, dim=-1)


def feature_reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 3, averaged over patches and images (= the official ``MSE + mean(1 - cos)``):
    ``float[B,N,C] x float[B,N,C] -> float[]``."""
    return reconstruction_discrepancy(x, x_hat).mean()


def intra_loss(div_attn: torch.Tensor, div_sigma: torch.Tensor, entropy: torch.Tensor, lambda1: float,
               lambda2: float) -> torch.Tensor:
    """Eq. 8 with min-max routing: ``lambda1 (Div_sigma - Div_attn) - lambda2 Ent``.

    ``sigma`` minimises the divergence (the target follows the attention) while the attention maximises
    it and maximises its entropy: normal patches learn broad intra-image correlations. Inputs are the
    layer-averaged scalars (Eq. 6, 7); ``lambda2 = 0`` is the "without entropy constraint" ablation.
    """
    return lambda1 * (div_sigma - div_attn) - lambda2 * entropy


def inter_loss(div_attn: torch.Tensor, div_sigma: torch.Tensor, entropy: torch.Tensor, lambda1: float,
               lambda2: float) -> torch.Tensor:
    """Eq. 10 with min-max routing, the opposite direction of :func:`intra_loss`:
    ``-lambda1 (Div_sigma - Div_attn) + lambda2 Ent`` — the attention minimises divergence and entropy
    (a normal patch correlates sharply with the reference at its own place), ``sigma`` maximises it."""
    return -lambda1 * (div_sigma - div_attn) + lambda2 * entropy


def discrepancy_weight(div: torch.Tensor, larger_is_anomalous: bool = True) -> torch.Tensor:
    """Correlation discrepancy per patch, the second factor of Eq. 12, as the official code computes it.

    With ``p = softmax(-Div)`` over the ``N`` patches of each image, Eq. 12 prints ``1 - p``; for
    hundreds of patches ``p ~ 1/N``, so ``1 - p ~ 1`` everywhere and the correlations would hardly
    change the ranking. The official code uses ``max(p) - p`` instead: zero for the patch that matches
    the normal reference best, up to ``max(p)`` for patches whose divergence is larger. Its scale
    ``max(p)`` is a per-image factor: large when one patch matches the reference far better than the
    rest, small when the divergences are even — so it also carries image-level information into the
    image score (the maximum of the map). The maximum is taken per image (the official code takes it
    over the batch, which is the same at its test batch size of 1). For the intra branch, where a
    *small* divergence is anomalous, ``larger_is_anomalous=False`` returns ``p`` itself (official
    ``intra_score = softmax(-Div)``).

    ``float[B, N] -> float[B, N]``.
    """
    p = torch.softmax(-div.float(), dim=-1)
    return p.amax(-1, keepdim=True) - p if larger_is_anomalous else p


def patch_anomaly_score(rec: torch.Tensor, weight: torch.Tensor, scoring: str = "rec_div") -> torch.Tensor:
    """Eq. 12 per patch: the reconstruction discrepancy times the correlation weight.

    ``rec``: :func:`reconstruction_discrepancy`, ``weight``: :func:`discrepancy_weight`, both
    ``float[B, N]``. ``scoring="rec"`` / ``"div"`` keep one factor only (Table 4's ablation rows).
    ``-> float[B, N]``.
    """
    if scoring == "rec_div":
        return rec * weight
    if scoring == "rec":
        return rec
    if scoring == "div":
        return weight
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}.")
