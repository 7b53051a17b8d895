"""FOD: Focus the Discrepancy — intra- and inter-correlation learning (Yao et al., ICCV 2023).

Per backbone level a small transformer reconstructs the (3x3 averaged) patch features ``X`` of a
frozen CNN. Its attention maps are the object of learning (**I2Correlation**):

* the **intra-correlation** ``S^g`` (Eq. 4) of every patch with every patch of the same image is
  pushed *away* from a local RBF prior and towards high entropy — normal patches learn to correlate
  broadly within their image;
* the **inter-correlation** ``S^e`` (Eq. 9) of every patch with the **reference features** ``X_f``
  (position-wise mean of the normal training features, §3.4) is pulled *towards* the RBF prior and
  low entropy — a normal patch correlates sharply with the reference at its own place;
* the **target correlations** ``T`` (Eq. 5) are RBF kernels over patch-grid distances with a
  learnable ``(sigma_y, sigma_x)`` per head and query position, each row normalised to sum 1;
* the I2Correlation output is ``Z_g - Z_e`` (§3.5).

Losses: reconstruction (Eq. 3) + intra (Eq. 8) + inter (Eq. 10) = Eq. 11, with the min-max routing
of the official code (as in Anomaly Transformer): one copy of the divergence trains the attention
with the target detached, the other trains ``sigma`` with the attention detached, with opposite
signs. Score (Eq. 12): reconstruction discrepancy times the inter-correlation discrepancy, levels
upsampled and averaged, Gaussian smoothing, image score = maximum.

Differences from the official repository (xcyao00/FOD), all deliberate:

* the I2Correlation output is added to the layer input as Eq. 1 is printed (in the official code
  the two residuals cancel; ``Config.residual=False`` reproduces that);
* the output projection starts at the mean normal feature (see :meth:`FODTransformer.init_output`);
* the attention output projection is applied (the official code computes and discards it);
* reference features are embedded once and broadcast over the batch (the official code repeats them
  to the training batch size, which breaks the last, smaller batch);
* grid distances are computed from the feature-map shape (no ``distances/*.npy`` files tied to the
  working directory), so any input size works;
* the inter-correlation discrepancy is normalised per image as ``1 - p_i / max_j p_j`` with
  ``p = softmax(-Div)`` over the patches of the image — see :func:`discrepancy_weight`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.coreset import greedy_coreset
from nbhelpers.data.records import Sample
from nbhelpers.distributed import computed_once
from nbhelpers.errors import ConfigError
from nbhelpers.maps import max_score, smooth, upsample
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, Paper, register
from nbhelpers.progress import progress
from nbhelpers.train import autocast, to_device

EPS = 1e-4  # inside the logarithms of the divergence and entropy (official code)
REFERENCES = ("mean", "coreset")
SCORINGS = ("rec", "div", "rec_div")


@dataclass
class Config(MethodConfig):
    """FOD settings (the paper's §4.1 values in the ``paper`` preset).

    Attributes:
        d_model: hidden size ``d_m`` of the transformer of each level (one value per level).
        heads: attention heads. n_layers: I2Correlation layers ``K``. ffn_ratio: feed-forward width / d_m.
        lambda1, lambda2: weights of the divergence and entropy terms (Eq. 8, 10).
        intra, inter: enable the intra- / inter-correlation branch (both off = patch-wise
            reconstruction with a plain self-attention transformer, Table 4 row 1).
        intra_entropy: use the entropy constraint in the intra branch (Table 4 "w/o" vs "w/").
        reference: ``"mean"`` (position-wise mean of normal features, §3.4) or ``"coreset"``
            (greedy k-center coreset of all normal patches, ``coreset_size`` entries per level,
            each keeping the grid position it came from; ``coreset_size=0``: as many as patches).
        residual: add ``X_{k-1}`` to the I2Correlation output as Eq. 1 is printed (default). In the
            official code the two residuals cancel (``(x + Z_g) - (x + Z_e)``): ``False`` follows the
            code — the patch's own features then reach the output only through the attention weights,
            which learns far more slowly (measured in the closing note of issue 6).
        scoring: ``"rec_div"`` (Eq. 12), ``"rec"`` (reconstruction only) or ``"div"`` (correlation
            discrepancy only) — Table 4's "Anomaly Scoring" column.
        sigma: Gaussian smoothing of the upsampled map (official: 4, at 256 px).
        grad_clip: gradient-norm clip of the training loop (``None``: off).
    """

    # 128 px: 16x16 + 8x8 patches; at 256 px the stride-8 level has 1024 patches and its N x N
    # correlation maps cost 16 times as much (minutes per epoch on 2 CPU cores)
    image_size: int = 128
    batch_size: int = 4
    epochs: int = 15
    layers: tuple[int, ...] = (2, 3)
    d_model: tuple[int, ...] = (64, 64)
    heads: int = 4
    n_layers: int = 3
    ffn_ratio: int = 4
    lambda1: float = 0.5
    lambda2: float = 0.5
    intra: bool = True
    inter: bool = True
    intra_entropy: bool = True
    reference: str = "mean"
    coreset_size: int = 0
    residual: bool = True
    scoring: str = "rec_div"
    sigma: float = 4.0
    grad_clip: float | None = None

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, epochs=2, progress=False, d_model=(32, 32), heads=2, n_layers=2, sigma=1.0),
        "cpu": dict(),
        "paper": dict(backbone="efficientnet_b6", weights="timm", image_size=256, batch_size=1, epochs=100, lr=0.0001,
                      d_model=(256, 512), heads=8),
    }

    def __post_init__(self) -> None:
        self.d_model = tuple(int(d) for d in self.d_model)
        if len(self.d_model) != len(self.layers):
            raise ConfigError(f"FOD: d_model {self.d_model} needs one value per backbone level {self.layers}.")
        bad = [d for d in self.d_model if d % self.heads or d % 4]
        if bad:
            raise ConfigError(f"FOD: d_model {bad} must be divisible by heads={self.heads} and by 4 "
                              "(2-D sin/cos position code).")
        if self.reference not in REFERENCES:
            raise ConfigError(f"FOD: reference {self.reference!r}; valid: {REFERENCES}.")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"FOD: scoring {self.scoring!r}; valid: {SCORINGS}.")
        if self.scoring != "rec" and not (self.intra or self.inter):
            raise ConfigError("FOD: scoring with 'div' needs the intra or inter branch (intra=True or inter=True).")


# ----------------------------------------------------------------------------- pure functions


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


# ---------------------------------------------------------------------------------- modules


class PatchEmbedding(nn.Module):
    """Linear (1x1) embedding of patch features to ``d_model`` plus the fixed 2-D sin/cos position code.

    ``forward(x: float[B, N, C], positions: long[N], grid: (h, w)) -> float[B, N, d_model]`` where
    ``positions`` are row-major indices into the ``h x w`` grid (all patches, or the places the
    reference features came from).
    """

    def __init__(self, in_channels: int, d_model: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_channels, d_model)
        self.d_model = d_model

    def forward(self, x: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        code = build_sincos2d_pos_embed(list(grid), dim=self.d_model, device=x.device)
        return self.project(x) + code[positions].to(x.dtype)


class TargetCorrelation(nn.Module):
    """Learnable RBF target correlation (Eq. 5): ``(sigma_y, sigma_x)`` per head and query position
    from a linear projection of the query features.

    ``forward(x: float[B, N, d], distances: float[2, N, M]) -> (T: float[B, heads, N, M], sigma: float[B, heads, N, 2])``.
    """

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.sigma_projection = nn.Linear(d_model, 2 * heads)

    def forward(self, x: torch.Tensor, distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        sigma = sigma_from_logits(self.sigma_projection(x).view(b, n, self.heads, 2).transpose(1, 2))
        return rbf_target(sigma, distances), sigma


class CorrelationAttention(nn.Module):
    """Multi-head attention whose softmax map is kept as a correlation (Eq. 4 for ``S^g``, Eq. 9 for
    ``S^e``), with its own target correlation.

    ``forward(x: float[B, N, d], memory: float[B|1, M, d], distances: float[2, N, M])`` ->
    ``(Z: float[B, N, d], S: float[B, heads, N, M], T: float[B, heads, N, M], sigma: float[B, heads, N, 2])``.
    ``memory`` is ``x`` itself (intra) or the embedded reference features with batch 1 (inter),
    broadcast over the batch. ``with_target=False`` skips ``T`` (plain attention).
    """

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.target = TargetCorrelation(d_model, heads)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, self.d_head).transpose(1, 2)  # [B, heads, L, d_head]

    def forward(self, x: torch.Tensor, memory: torch.Tensor, distances: torch.Tensor,
                with_target: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        q, k, v = self._split(self.query(x)), self._split(self.key(memory)), self._split(self.value(memory))
        attention = torch.softmax((q / math.sqrt(self.d_head) @ k.transpose(-1, -2)).float(), dim=-1)
        z = (attention.to(v.dtype) @ v).transpose(1, 2).reshape(x.shape)
        target, sigma = self.target(x, distances) if with_target else (None, None)
        return self.out(z), attention, target, sigma


class I2Correlation(nn.Module):
    """Intra- and inter-correlation block (§3.5): ``Z_g - Z_e`` with ``Z_g = S^g V^g``, ``Z_e = S^e V^e``.

    With one branch disabled its output is left out (``Z_g`` or ``-Z_e``); with both disabled it is a
    plain self-attention (no targets, no correlation terms: the patch-wise baseline of Table 4).

    ``forward(x: float[B,N,d], reference: float[1,M,d] | None, geometry: {"intra": float[2,N,N],
    "inter": float[2,N,M]}, keep: bool)`` -> ``(Z: float[B,N,d], terms: dict)``: ``terms[branch]`` holds
    :func:`routed_terms` (``float[B,N]`` each) and, with ``keep``, the maps ``"attention"``,
    ``"target"`` and ``"sigma"``. The ``N x M`` maps are not kept otherwise.
    """

    def __init__(self, d_model: int, heads: int, intra: bool = True, inter: bool = True) -> None:
        super().__init__()
        self.learn_intra = intra
        self.intra = CorrelationAttention(d_model, heads) if intra or not inter else None
        self.inter = CorrelationAttention(d_model, heads) if inter else None

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None, geometry: dict[str, torch.Tensor],
                keep: bool = False) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        terms: dict[str, dict[str, torch.Tensor]] = {}
        out = torch.zeros_like(x)
        for name, attn, memory, sign in (("intra", self.intra, x, 1.0), ("inter", self.inter, reference, -1.0)):
            if attn is None:
                continue
            learn = self.learn_intra if name == "intra" else True
            z, s, t, sigma = attn(x, memory, geometry[name], with_target=learn)
            out = out + sign * z
            if learn:
                terms[name] = routed_terms(s, t)
                if keep:
                    terms[name].update(attention=s.detach(), target=t.detach(), sigma=sigma.detach())
        return out, terms


class FODLayer(nn.Module):
    """One transformer layer, Eq. 1-2: ``Z = LN(I2Correlation(X, X_f) [+ X])``, ``X' = LN(FFN(Z) + Z)``
    (FFN: ``d -> ffn_ratio*d -> d`` with GELU). Same call signature as :class:`I2Correlation`."""

    def __init__(self, d_model: int, heads: int, ffn_ratio: int = 4, intra: bool = True, inter: bool = True,
                 residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.correlation = I2Correlation(d_model, heads, intra, inter)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_ratio * d_model), nn.GELU(), nn.Linear(ffn_ratio * d_model, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None, geometry: dict[str, torch.Tensor],
                keep: bool = False) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        z, terms = self.correlation(x, reference, geometry, keep)
        z = self.norm1(z + x if self.residual else z)
        return self.norm2(self.ffn(z) + z), terms


class FODTransformer(nn.Module):
    """The network of one feature level (Fig. 2): patch embedding, ``K`` :class:`FODLayer` s, LayerNorm,
    output projection ``W_o`` back to the feature size (§3.1).

    The reference features ``X_f`` (``float[M, C]``) and their grid places (``long[M]`` row-major) are
    buffers set by :meth:`set_reference`; they are embedded once per forward with their own
    :class:`PatchEmbedding` and shared by every image of the batch.

    ``forward(x: float[B, C, h, w], keep=False) -> (x_hat: float[B, N, C], terms)`` with ``N = h*w``;
    ``terms[branch]`` holds the layer averages of :func:`routed_terms` (``float[B, N]``, Eq. 6-7) and,
    with ``keep``, ``"attention"``/``"target"``: ``float[B, K, heads, N, M]`` and ``"sigma"``:
    ``float[B, K, heads, N, 2]``.
    """

    def __init__(self, in_channels: int, d_model: int, heads: int, n_layers: int, ffn_ratio: int = 4,
                 intra: bool = True, inter: bool = True, residual: bool = True) -> None:
        super().__init__()
        self.use_inter = inter
        self.embedding = PatchEmbedding(in_channels, d_model)
        self.reference_embedding = PatchEmbedding(in_channels, d_model) if inter else None
        self.layers = nn.ModuleList(FODLayer(d_model, heads, ffn_ratio, intra, inter, residual) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, in_channels)
        self.register_buffer("reference", torch.empty(0, in_channels), persistent=False)
        self.register_buffer("reference_index", torch.empty(0, dtype=torch.long), persistent=False)

    def set_reference(self, features: torch.Tensor, index: torch.Tensor) -> None:
        """Store the external reference: ``features: float[M, C]`` taken at grid places ``index: long[M]``."""
        self.reference = features.to(self.projection.weight.device, torch.float32)
        self.reference_index = index.to(self.projection.weight.device, torch.long)

    @torch.no_grad()
    def init_output(self, mean: torch.Tensor) -> None:
        """Start the output projection at the mean normal feature ``float[C]`` (its bias). Backbone features
        are far from zero; Adam moves a bias by about ``lr`` per step, so from a zero bias a short
        training run would spend itself on learning that offset."""
        self.projection.bias.copy_(mean)

    def forward(self, x: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        pos = grid_positions(h, w, x.device)
        geometry = {"intra": squared_axis_distances(pos, pos)}
        reference = None
        if self.use_inter:
            if self.reference.shape[0] == 0:
                raise RuntimeError("FODTransformer: no reference features; call set_reference() (FOD.fit does).")
            geometry["inter"] = squared_axis_distances(pos, pos[self.reference_index])
            reference = self.reference_embedding(self.reference[None], self.reference_index, (h, w))
        hidden = self.embedding(tokens, torch.arange(h * w, device=x.device), (h, w))
        per_layer: list[dict[str, dict[str, torch.Tensor]]] = []
        for layer in self.layers:
            hidden, terms = layer(hidden, reference, geometry, keep)
            per_layer.append(terms)
        x_hat = self.projection(self.norm(hidden))
        averaged = {branch: {k: (torch.stack([t[branch][k] for t in per_layer], 1) if keep and k in ("attention", "target", "sigma")
                                 else sum(t[branch][k] for t in per_layer) / len(per_layer))
                             for k in per_layer[0][branch]}
                    for branch in per_layer[0]}
        return x_hat, averaged


# ----------------------------------------------------------------------------------- method


@register
class FOD(AnomalyMethod):
    """Focus-the-Discrepancy anomaly detection: one :class:`FODTransformer` per backbone level.

    Attributes:
        backbone: the frozen :class:`~nbhelpers.backbones.FeatureExtractor`.
        net: ``nn.ModuleList`` of the level transformers (the only trainable part).
        train_result: the :class:`~nbhelpers.train.TrainResult` of the last :meth:`fit` (per-epoch
            means of every loss term under ``.terms``).
    """

    name = "fod"
    paper = Paper("Yao et al., Focus the Discrepancy: Intra- and Inter-Correlation Learning for Image Anomaly "
                  "Detection, ICCV 2023", "FOD")
    config_class = Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights).to(self.device)
        self.net = nn.ModuleList(
            FODTransformer(c, d, cfg.heads, cfg.n_layers, cfg.ffn_ratio, cfg.intra, cfg.inter, cfg.residual)
            for c, d in zip(self.backbone.channels, cfg.d_model)).to(self.device)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Locally averaged (3x3) frozen backbone features per level: ``list[float[B, C_l, h_l, w_l]]``."""
        return [F.avg_pool2d(f, 3, 1, 1) for f in self.backbone(images)]

    # ----- reference features (§3.4) --------------------------------------------------------
    @torch.no_grad()
    def reference_features(self, train: Sequence[Sample]) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """One pass over the normal ``train`` images.

        Returns ``(means, coresets)``: per level the position-wise mean of the features ``float[h*w, C]``
        (a running sum, so memory does not grow with the training set), and with ``reference="coreset"``
        per level a greedy k-center coreset (PatchCore) of all normal patches ``(float[M, C], long[M])``
        with the grid place each entry came from — streaming: the coreset of (coreset so far + next
        batch), so memory is bounded by ``coreset_size`` plus one batch (``None`` otherwise).
        """
        sums: list[torch.Tensor] = []
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        count = 0
        for batch in progress(self.loader(train), desc="fod reference", enabled=self.config.progress):
            feats = self.features(to_device(batch["image"], self.device))
            sums = [f.sum(0) for f in feats] if not sums else [s + f.sum(0) for s, f in zip(sums, feats)]
            count += feats[0].shape[0]
            if self.config.reference == "coreset":
                kept = [self._coreset_step(f, kept[level] if kept else None) for level, f in enumerate(feats)]
        means = [(s / count).flatten(1).T.contiguous() for s in sums]
        return means, (kept or None)

    def _coreset_step(self, f: torch.Tensor, kept: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy coreset of the kept entries plus the patches of ``f: float[B, C, h, w]``."""
        n = f.shape[-2] * f.shape[-1]
        pool = f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1])
        index = torch.arange(n, device=f.device).repeat(f.shape[0])
        if kept is not None:
            pool, index = torch.cat([kept[0], pool]), torch.cat([kept[1], index])
        size = min(self.config.coreset_size or n, pool.shape[0])
        idx = greedy_coreset(pool, size / pool.shape[0], seed=self.config.seed)
        return pool[idx], index[idx]

    # ----- training -------------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 11 summed over levels for a batch of normalised images ``batch["image"]: float[B, 3, H, W]``.

        Returns ``{"loss", "rec", "div_intra", "ent_intra", "div_inter", "ent_inter"}`` (scalars; the
        divergences and entropies are layer means, Eq. 6-7, for logging).
        """
        cfg = self.config
        images = batch["image"]
        l2 = cfg.lambda2 if cfg.intra_entropy else 0.0
        logs = {k: images.new_zeros(()) for k in ("rec", "div_intra", "ent_intra", "div_inter", "ent_inter")}
        total = images.new_zeros(())
        for net, x in zip(self.net, self.features(images)):
            x_hat, terms = net(x)
            rec = feature_reconstruction_loss(x.flatten(2).transpose(1, 2), x_hat)
            total = total + rec
            logs["rec"] = logs["rec"] + rec.detach()
            for branch, loss_fn, lam2 in (("intra", intra_loss, l2), ("inter", inter_loss, cfg.lambda2)):
                if branch in terms:
                    t = {k: v.mean() for k, v in terms[branch].items()}
                    total = total + loss_fn(t["div_attn"], t["div_sigma"], t["entropy"], cfg.lambda1, lam2)
                    logs[f"div_{branch}"] = logs[f"div_{branch}"] + t["div_attn"].detach()
                    logs[f"ent_{branch}"] = logs[f"ent_{branch}"] + t["entropy"].detach()
        return {"loss": total, **logs}

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Compute the reference features (§3.4) and start each level's output at the mean feature."""
        means, coresets = computed_once(lambda: self.reference_features(train), self.device)
        for level, (net, mean) in enumerate(zip(self.net, means)):
            net.init_output(mean.mean(0))
            if self.config.inter:
                net.set_reference(*(coresets[level] if coresets else (mean, torch.arange(mean.shape[0], device=self.device))))

    @property
    def grad_clip(self) -> float | None:
        return self.config.grad_clip

    # ----- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict, return_attention: bool = False) -> AnomalyResult:
        """Anomaly maps (Eq. 12 per level, upsampled, averaged, Gaussian-smoothed) and image scores (max).

        ``extras`` always holds per level (lists) ``"rec"``, ``"weight"``, ``"patch_score"``:
        ``float[B, h_l, w_l]`` and ``"div_intra"`` / ``"div_inter"`` (Eq. 6 per patch) when the branch
        exists. With ``return_attention`` also, per level, the correlation maps ``"intra_attention"``,
        ``"intra_target"``, ``"inter_attention"``, ``"inter_target"``: ``float[B, K, heads, N, M]``,
        ``"intra_sigma"`` / ``"inter_sigma"``: ``float[B, K, heads, N, 2]`` (σ_y, σ_x), and
        ``"reference_positions"``: ``long[M, 2]`` (grid places of the reference entries).
        """
        cfg = self.config
        self.net.eval()
        images = to_device(batch["image"], self.device)
        extras: dict[str, list[torch.Tensor]] = {}
        maps = []
        with autocast(self.device):
            for net, x in zip(self.net, self.features(images)):
                b, _, h, w = x.shape
                x_hat, terms = net(x, keep=return_attention)
                rec = reconstruction_discrepancy(x.flatten(2).transpose(1, 2), x_hat)
                branch = "inter" if "inter" in terms else "intra" if "intra" in terms else None
                weight = (discrepancy_weight(terms[branch]["div_attn"], larger_is_anomalous=branch == "inter")
                          if branch else torch.ones_like(rec))
                score = patch_anomaly_score(rec, weight, cfg.scoring)
                level = {"rec": rec, "weight": weight, "patch_score": score}
                for name, t in terms.items():
                    level[f"div_{name}"] = t["div_attn"]
                for key, value in level.items():
                    extras.setdefault(key, []).append(value.float().view(b, h, w))
                if return_attention:
                    for name, t in terms.items():
                        for key in ("attention", "target", "sigma"):
                            extras.setdefault(f"{name}_{key}", []).append(t[key].float())
                    if "inter" in terms:
                        extras.setdefault("reference_positions", []).append(grid_positions(h, w, x.device)[net.reference_index])
                maps.append(upsample(score.float().view(b, h, w), images.shape[-2:]))
        anomaly = smooth(torch.stack(maps).mean(0), cfg.sigma)
        return AnomalyResult(scores=max_score(anomaly), maps=anomaly, extras=extras)

    # ----- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                "references": [net.reference.cpu() for net in self.net],
                "reference_index": [net.reference_index.cpu() for net in self.net]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        for net, feats, index in zip(self.net, state["references"], state["reference_index"]):
            net.set_reference(feats, index)


__all__ = ["FOD", "Config", "CorrelationAttention", "FODLayer", "FODTransformer", "I2Correlation", "PatchEmbedding",
           "TargetCorrelation", "discrepancy_weight", "grid_positions", "inter_loss", "intra_loss", "rbf_target",
           "reconstruction_discrepancy", "feature_reconstruction_loss", "patch_anomaly_score", "routed_terms", "row_entropy", "sigma_from_logits",
           "squared_axis_distances", "symmetric_kl"]
