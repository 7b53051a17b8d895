"""PRN's multi-size self-attention over patches of several sizes (Sec. 3.3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.errors import ConfigError
from nbhelpers.methods.base import MethodConfig, SizeRule


def patchify(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``float[B,C,H,W] -> float[B, (H/ph)(W/pw), C*ph*pw]`` (row-major patches, C-major vectors)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // ph) * (w // pw), c * ph * pw)


def unpatchify(x: torch.Tensor, c: int, h: int, w: int, ph: int, pw: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``float[B, N, C*ph*pw] -> float[B,C,H,W]``."""
    b = x.shape[0]
    x = x.reshape(b, h // ph, w // pw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


#: Q/K embeddings of a patch (``PatchAttentionHead``): a 1x1 conv per pixel, or a per-patch FC factorised
#: as a ``p x p`` depthwise conv (stride ``p``) followed by a 1x1 conv.
MSA_EMBEDDINGS = ("pointwise", "patch")

#: Attention logit scales: ``1/d`` as Eq. 3 prints (``d = c_s`` for the pointwise embedding) or ``1/sqrt(d)``.
MSA_SCALES = ("dim", "sqrt_dim")


class PatchAttentionHead(nn.Module):
    """One MSA head (Eq. 3): self-attention between the ``N = (h/p)(w/p)`` patches of size ``p``.

    ``A = softmax(Q K^T s) V``. A fully-connected embedding of the ``c_s = C p^2``-dim flattened
    patches, as the paper writes, would need ``(C p^2)^2`` weights (about 4·10^10 for ``p = h = 64``),
    so Q/K come from one of two cheaper embeddings (``embedding``):

    * ``"pointwise"``: a 1x1 convolution, i.e. one FC layer shared by every pixel of the patch (as in
      M2TR [58], which PRN builds on); tokens have ``d = C p^2`` dimensions and pixels of a patch are
      not mixed before attending;
    * ``"patch"``: the patch FC factorised as a ``p x p`` depthwise convolution with stride ``p`` (each
      channel's ``p^2`` pixels mixed by their own weights) and a 1x1 convolution across channels:
      one ``d = C`` token per patch that sees every pixel of it, with ``C p^2 + C^2`` weights.

    The scale ``s`` is ``1/d`` as Eq. 3 prints it (``1/c_s`` for the pointwise embedding; likely a typo
    for the usual square root, and near-uniform rows for large ``d``) or ``1/sqrt(d)``
    (``scale="sqrt_dim"``). V is a 1x1 convolution, attended per pixel position, so the output keeps
    the map's resolution. A head with a single patch (``p = h``) has a one-element softmax, so it has
    no Q/K and returns ``V``.

    ``forward(float[B,C,h,w]) -> (float[B,C,h,w], attention float[B,N,N])``.
    """

    def __init__(self, channels: int, size: tuple[int, int], patch: tuple[int, int], embedding: str = "pointwise",
                 scale: str = "dim") -> None:
        super().__init__()
        if embedding not in MSA_EMBEDDINGS or scale not in MSA_SCALES:
            raise ConfigError(f"MSA: embedding {embedding!r} / scale {scale!r}; valid: {MSA_EMBEDDINGS} / {MSA_SCALES}.")
        self.size, self.patch, self.embedding = tuple(size), tuple(patch), embedding
        self.tokens = (size[0] // patch[0]) * (size[1] // patch[1])
        dim = channels * patch[0] * patch[1] if embedding == "pointwise" else channels
        self.scale = 1.0 / dim if scale == "dim" else dim ** -0.5
        self.value = nn.Conv2d(channels, channels, 1)
        self.query = self._embedding(channels) if self.tokens > 1 else None
        self.key = self._embedding(channels) if self.tokens > 1 else None

    def _embedding(self, channels: int) -> nn.Module:
        if self.embedding == "pointwise":
            return nn.Conv2d(channels, channels, 1)
        return nn.Sequential(nn.Conv2d(channels, channels, self.patch, stride=self.patch, groups=channels),
                             nn.Conv2d(channels, channels, 1))

    def _tokens(self, embedded: torch.Tensor) -> torch.Tensor:
        """``float[B,C,h,w]`` (pointwise) or ``float[B,C,h/p,w/p]`` (patch) -> ``float[B,N,d]``, row-major patches."""
        if self.embedding == "pointwise":
            return patchify(embedded, *self.patch)
        return embedded.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        ph, pw = self.patch
        v = self.value(x)
        if self.query is None:
            return v, torch.ones(b, 1, 1, device=x.device, dtype=x.dtype)
        q, k = self._tokens(self.query(x)), self._tokens(self.key(x))
        attn = torch.softmax((q @ k.transpose(1, 2)) * self.scale, dim=-1)       # [B, N, N]
        out = attn @ patchify(v, ph, pw)
        return unpatchify(out, c, h, w, ph, pw), attn


class ResidualBlock(nn.Module):
    """2-D residual block (conv3x3-BN-ReLU-conv3x3-BN + 1x1 projection, ReLU):
    ``float[B,C_in,h,w] -> float[B,C_out,h,w]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _patch_sizes(size: tuple[int, int], divisors: Sequence[int]) -> list[tuple[int, int]]:
    return [(max(1, size[0] // d), max(1, size[1] // d)) for d in divisors]


def unsplittable_patches(size: tuple[int, int], divisors: Sequence[int]) -> list[tuple[int, int]]:
    """The MSA patch sizes ``(max(1, h // d), max(1, w // d))`` that do not divide a ``h x w`` map."""
    return [p for p in _patch_sizes(size, divisors) if size[0] % p[0] or size[1] % p[1]]


def msa_patch_sizes(size: tuple[int, int], divisors: Sequence[int]) -> list[tuple[int, int]]:
    """Patch sizes ``(max(1, h // d), max(1, w // d))`` of the MSA heads of a ``h x w`` map.

    Raises:
        ConfigError: a patch size does not divide the map.
    """
    bad = unsplittable_patches(size, divisors)
    if bad:
        raise ConfigError(f"MSA: feature map {size} cannot be split into patches {bad}; use an image_size "
                          f"whose feature maps are divisible by {list(divisors)}, e.g. a multiple of 128.")
    return _patch_sizes(size, divisors)


class MSASizeRule(SizeRule):
    """PRN's input sides: besides the base rule, with ``use_msa`` every skip feature map
    (``ceil(side / stride)`` square) must split into the patch sizes of :func:`msa_patch_sizes`."""

    def problem(self, side: int, strides: Sequence[int], config: MethodConfig) -> str | None:
        reason = super().problem(side, strides, config)
        if reason is not None or not getattr(config, "use_msa", False):
            return reason
        for stride in strides:
            h = -(-side // stride)
            bad = unsplittable_patches((h, h), config.patch_divisors)
            if bad:
                return (f"its {h} x {h} feature map at stride {stride} cannot be split into the multi-size "
                        f"attention patches {bad} (h // d for d in {list(config.patch_divisors)})")
        return None


class MultiSizeSelfAttention(nn.Module):
    """MSA block (Sec. 3.3): one :class:`PatchAttentionHead` per patch size (``embedding`` and ``scale``
    as there), outputs concatenated
    (``len(heads) x C`` channels) and passed through a :class:`ResidualBlock` back to ``C``.

    ``forward(float[B,C,h,w]) -> (float[B,C,h,w], list of attention float[B,N_s,N_s] per head)``.
    """

    def __init__(self, channels: int, size: tuple[int, int], divisors: Sequence[int] = (1, 2, 4, 8),
                 embedding: str = "pointwise", scale: str = "dim") -> None:
        super().__init__()
        self.heads = nn.ModuleList(PatchAttentionHead(channels, size, p, embedding, scale)
                                   for p in msa_patch_sizes(size, divisors))
        self.residual = ResidualBlock(len(self.heads) * channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs, attns = zip(*(head(x) for head in self.heads))
        return self.residual(torch.cat(outs, dim=1)), list(attns)
