"""FOD's losses (Eq. 3, 8, 10, 11) and anomaly score (Eq. 12)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbhelpers.methods.fod.config import SCORINGS


def reconstruction_discrepancy(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Patch-wise discrepancy ``||x - x_hat||_2 + 1 - cos(x, x_hat)`` (Eq. 3 / first factor of Eq. 12).
    ``float[B, N, C] x float[B, N, C] -> float[B, N]``."""
    x, x_hat = x.float(), x_hat.float()
    return torch.linalg.vector_norm(x - x_hat, dim=-1) + 1 - F.cosine_similarity(x, x_hat, dim=-1)


def feature_reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 3, averaged over patches and images: ``float[B,N,C] x float[B,N,C] -> float[]``."""
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
    """Normalised correlation discrepancy per patch, the second factor of Eq. 12.

    With ``p = softmax(-Div)`` over the ``N`` patches of each image, Eq. 12 prints ``1 - p``: for
    hundreds of patches ``p ~ 1/N``, so ``1 - p ~ 1`` everywhere and the correlations would hardly
    change the ranking. The official code uses ``max(p) - p``, whose scale ``max(p)`` depends on how
    peaked each image's divergences are — a per-image factor that scrambles the image scores (the max
    of the map). This function divides by it: ``1 - p / max(p) = 1 - exp(min(Div) - Div)``, in
    ``[0, 1)``: zero for the patch that matches the normal reference best, towards 1 for patches whose
    divergence exceeds it by a few nats; the same order as the official weight within an image, and
    independent of ``N`` and of the batch. For the intra branch, where a *small* divergence is
    anomalous (official score ``softmax(-Div)``), ``larger_is_anomalous=False`` returns
    ``p / max(p) = exp(min(Div) - Div)``.

    ``float[B, N] -> float[B, N]``.
    """
    relative = torch.exp(div.float().amin(-1, keepdim=True) - div.float())  # p / max(p)
    return 1 - relative if larger_is_anomalous else relative


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
