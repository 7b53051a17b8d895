"""FOD's transformer: patch embedding, learnable target correlation, I2Correlation (Eq. 1-2, 4), layers."""
from __future__ import annotations

import math

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn

from nbhelpers.methods.fod.correlation import (
    grid_positions,
    rbf_target,
    routed_terms,
    sigma_from_logits,
    squared_axis_distances,
)
from nbhelpers.train import full_precision


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
        with full_precision(x.device):  # logits in float32: bf16 would add noise to the rows whose KL is learned
            attention = torch.softmax(q.float() / math.sqrt(self.d_head) @ k.float().transpose(-1, -2), dim=-1)
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
    (FFN: ``d -> ffn_ratio*d -> d`` with GELU). Same call signature as :class:`I2Correlation`.

    The residual ``X`` follows the official code: with both branches each adds its own residual and
    they cancel, ``(X + Z_g) - (X + Z_e) = Z_g - Z_e``, so the patch's own features reach the output
    only through the attention and the network cannot simply copy an anomaly; with one branch (or
    none, the patch-wise baseline) the output is ``X + Z``. ``residual=True`` keeps ``X`` with both
    branches too, as Eq. 1 is printed (``Z_g - Z_e + X``).
    """

    def __init__(self, d_model: int, heads: int, ffn_ratio: int = 4, intra: bool = True, inter: bool = True,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.correlation = I2Correlation(d_model, heads, intra, inter)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_ratio * d_model), nn.GELU(), nn.Linear(ffn_ratio * d_model, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None, geometry: dict[str, torch.Tensor],
                keep: bool = False) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        z, terms = self.correlation(x, reference, geometry, keep)
        both = self.correlation.intra is not None and self.correlation.inter is not None
        z = self.norm1(z + x if self.residual or not both else z)
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
                 intra: bool = True, inter: bool = True, residual: bool = False) -> None:
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
