"""PRN: Prototypical Residual Networks for anomaly detection and localization.

Zhang, Wu, Wang, Chen, Jiang (CVPR 2023). A U-Net-like segmentation network whose encoder is a
frozen pre-trained CNN and whose skip connections carry, per scale ``j`` (three scales):

1. **Multi-scale prototypes** (MP, Sec. 3.1, Eq. 1): ``K = ratio x #normal images`` whole feature
   maps per scale, found by k-means (L2 distance) on the normal training maps and then frozen; an
   input's residual ``D_j = |F_j - P_j*|`` to its nearest prototype ``P_j*`` (each scale may pick
   another prototype);
2. **Multi-scale fusion** (MF, Sec. 3.2, Eq. 2): each scale receives the sum of every scale's map,
   resized by depth-wise separable strided convolutions (down) or bilinear + 1x1 convolution (up);
   applied to features and to residuals, which are then concatenated to ``2c_j`` channels;
3. **Multi-size self-attention** (MSA, Sec. 3.3, Eq. 3): heads attend between patches of sizes
   ``h, h/2, h/4, h/8``; their outputs are concatenated and passed through a residual block; the
   block is stacked ``N`` times (paper: 3) and followed by a second MF block;
4. a decoder upsamples the deepest backbone map through the three skips to a one-channel anomaly
   logit map at input size.

It is trained on normal images, *extended anomalies* made from a few seen real anomalies and
*simulated anomalies* (Sec. 3.4, see ``nbhelpers.data.anomalies``) with smooth-L1 + 5 x focal loss
(Eq. 5); the image score is the mean of the top-K pixels of the map (Sec. 3.5).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.data.anomalies import (
    TextureSource,
    extended_anomaly,
    foreground_mask,
    heterologous_anomaly,
    homologous_anomaly,
)
from nbhelpers.data.io import read_image
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader, resize_image, union_mask
from nbhelpers.distributed import computed_once
from nbhelpers.errors import ConfigError, DatasetError
from nbhelpers.layers import conv_bn_relu
from nbhelpers.losses import focal_loss
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, Paper, SizeRule, register
from nbhelpers.progress import progress
from nbhelpers.train import autocast, full_precision, to_device


@dataclass
class Config(MethodConfig):
    """PRN settings (defaults = the paper's, Sec. 4.1).

    Attributes:
        layers: the three backbone levels with prototypes / skip connections (ResNet-18 layer1-3).
        bottleneck_layer: the deeper level the decoder starts from (layer4).
        prototype_ratio: prototypes per scale as a fraction of the normal training images (Table 6:
            0.1; ``>= 1`` keeps every training map, no clustering).
        kmeans_iters: maximum Lloyd iterations per scale (paper: 300).
        msa_depth: stacked MSA blocks per scale (paper N = 3).
        patch_divisors: MSA head patch sizes are ``h // d`` for each ``d`` (paper ``h, h/2, h/4, h/8``).
        use_prototypes, use_msa, use_fusion: the modules of Table 4 (all off = plain U-Net).
        seen_anomalies: real anomalies to train on (paper: 10); ``nbhelpers.benchmark`` holds them out
            of the test split.
        weight_decay: Adam weight decay (paper 1e-2).
        focal_alpha, focal_gamma, focal_weight: focal loss alpha, gamma and lambda of Eq. 5.
        top_k: pixels averaged for the image score at 256 x 256, scaled with the image area.
        hoa_prob: fraction of simulated anomalies that are homologous (the rest heterologous).
        target_areas: place generated anomalies on the object's foreground (objects) / anywhere
            (textures); ``False`` places them anywhere.
        textures: folder of texture images for HEA (DTD in the paper); ``None`` = the offline ones.
        batch_size: images per step, in groups of 2 normal + 1 extended + 1 simulated (paper 64 =
            32 + 16 + 16); rounded down to whole groups.

    Presets: ``paper`` = Sec. 4.1 (ResNet-18 layer1-3 + layer4, 256 px, Adam 1e-4, weight decay 1e-2,
    700 epochs, batch 64, 10 seen anomalies, N = 3, k-means <= 300 iterations). ``cpu`` = the offline
    EfficientNet-Lite0 levels 1-3 (+4), **128 px**, 10 epochs, batch 16, one MSA block, lr 1e-3: at
    256 px a training image costs about 4.5x more on a CPU (measured 1.4 s vs 0.32 s per image and
    step on one shared core), which would put a fit far beyond a few minutes; a larger learning rate
    replaces the paper's 700 epochs. ``smoke`` = 64 px, 2 epochs (CI).
    """

    image_size: int = 128
    layers: tuple[int, ...] = (1, 2, 3)
    bottleneck_layer: int = 4
    prototype_ratio: float = 0.1
    kmeans_iters: int = 100
    msa_depth: int = 1
    patch_divisors: tuple[int, ...] = (1, 2, 4, 8)
    use_prototypes: bool = True
    use_msa: bool = True
    use_fusion: bool = True
    seen_anomalies: int = 5
    lr: float = 0.001
    weight_decay: float = 0.0001
    focal_alpha: float = 0.5
    focal_gamma: float = 4.0
    focal_weight: float = 5.0
    top_k: int = 100
    hoa_prob: float = 0.5
    target_areas: bool = True
    textures: str | None = None
    epochs: int = 10
    batch_size: int = 16

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=8, epochs=2, progress=False, kmeans_iters=20, seen_anomalies=2),
        "cpu": dict(),
        "paper": dict(backbone="resnet18", weights="timm", image_size=256, batch_size=64, epochs=700, lr=0.0001,
                      kmeans_iters=300, msa_depth=3, seen_anomalies=10, weight_decay=0.01),
    }


# ------------------------------------------------------------------------------------- prototypes


class KMeansResult(NamedTuple):
    """``centers: float[K,D]``, ``labels: long[N]``, ``inertia``: final sum of squared distances,
    ``history``: inertia after each assignment step (non-increasing)."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: float
    history: list[float]


def _sq_distances(x: torch.Tensor, centers: torch.Tensor, chunk: int) -> torch.Tensor:
    """Squared Euclidean distances ``float[N,K]`` of ``x: float[N,D]`` to ``centers: float[K,D]``."""
    return torch.cat([torch.cdist(c, centers).square() for c in x.split(chunk)])


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 300, seed: int = 0, chunk: int = 1024) -> KMeansResult:
    """Lloyd's k-means with L2 distance on the device of ``x``, initialised as PRN does with ``k``
    rows drawn at random (seeded).

    Distances are computed in chunks of ``chunk`` rows (memory ``chunk x k``); centres are means
    computed with a one-hot matrix product (deterministic on GPU); an empty cluster takes the point
    farthest from its centre. Stops when no assignment changes or after ``iters`` iterations.

    Args:
        x: ``float[N, D]`` (e.g. flattened feature maps).
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= N, got k={k}, N={n}.")
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    centers = x[torch.randperm(n, generator=gen)[:k].to(x.device)].clone()
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    history: list[float] = []
    for _ in range(max(1, iters)):
        d2 = _sq_distances(x, centers, chunk)
        best, new_labels = d2.min(dim=1)
        history.append(float(best.sum()))
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = F.one_hot(labels, k).to(x.dtype)                    # [N, K]
        counts = onehot.sum(0)
        centers = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:  # re-seed empty clusters with the worst-fitted points
            far = best.argsort(descending=True)[: len(empty)]
            centers[empty] = x[far]
    inertia = float(_sq_distances(x, centers, chunk).gather(1, labels[:, None]).sum())
    return KMeansResult(centers, labels, inertia, history)


def nearest_prototype(features: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1's ``argmin_k ||F - P^k||_2`` over whole maps, in float32.

    ``features: float[B,C,h,w]``, ``prototypes: float[K,C,h,w]`` -> ``(index long[B], distance float[B])``.
    """
    dist = torch.cdist(features.float().flatten(1)[None], prototypes.float().flatten(1)[None])[0]
    distance, index = dist.min(dim=1)
    return index, distance


class MultiScalePrototypes(nn.Module):
    """MP (Sec. 3.1): frozen prototype maps per scale and the residual to the nearest one (Eq. 1).

    Buffers ``p0, p1, ...``: ``float[K_j, C_j, h_j, w_j]`` (empty until :meth:`fit`).
    ``forward(features: list[float[B,C_j,h_j,w_j]]) -> (residuals list[float[B,C_j,h_j,w_j]],
    index long[B, n_scales])`` with ``D_j = |F_j - P_j*|`` (element-wise Euclidean distance; the
    unofficial code squares it instead).
    """

    def __init__(self, n_scales: int) -> None:
        super().__init__()
        self.n_scales = n_scales
        for j in range(n_scales):
            self.register_buffer(f"p{j}", torch.empty(0))

    @property
    def prototypes(self) -> list[torch.Tensor]:
        return [getattr(self, f"p{j}") for j in range(self.n_scales)]

    def assign(self, prototypes: Sequence[torch.Tensor]) -> None:
        """Replace the prototype buffers (shapes may change)."""
        for j, p in enumerate(prototypes):
            setattr(self, f"p{j}", p.detach().float().contiguous())

    @torch.no_grad()
    def fit(self, features: Sequence[torch.Tensor], ratio: float = 0.1, iters: int = 300,
            seed: int = 0) -> list[KMeansResult | None]:
        """k-means per scale over the normal maps ``features[j]: float[N,C_j,h_j,w_j]``.

        ``K = clamp(round(ratio * N), 1, N)``; ``ratio >= 1`` keeps every map (``None`` result).
        """
        results: list[KMeansResult | None] = []
        protos = []
        for j, f in enumerate(features):
            n = f.shape[0]
            if ratio >= 1:
                protos.append(f.float())
                results.append(None)
                continue
            k = min(n, max(1, int(round(ratio * n))))
            res = kmeans(f.flatten(1), k, iters, seed + j)
            protos.append(res.centers.view(k, *f.shape[1:]))
            results.append(res)
        self.assign(protos)
        return results

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if any(p.numel() == 0 for p in self.prototypes):
            raise RuntimeError("MultiScalePrototypes: no prototypes yet; call fit() first.")
        residuals, indices = [], []
        with full_precision(features[0].device):
            for f, p in zip(features, self.prototypes):
                idx, _ = nearest_prototype(f, p)
                residuals.append((f.float() - p[idx]).abs())
                indices.append(idx)
        return residuals, torch.stack(indices, dim=1)


# ------------------------------------------------------------------------------------------ fusion


class DepthwiseSeparableDown(nn.Module):
    """``f_rj`` for ``r < j`` (Sec. 3.2): depth-wise conv with stride ``s = 2^(j-r)``, kernel ``s + 1``,
    padding ``s / 2``, then a 1x1 point-wise conv. ``float[B,C_in,h,w] -> float[B,C_out,h/s,w/s]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, stride + 1, stride=stride, padding=stride // 2,
                                   groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class BilinearUp(nn.Module):
    """``f_rj`` for ``r > j`` (Sec. 3.2): bilinear up-sampling to the target size, then a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class MultiScaleFusion(nn.Module):
    """MF block (Sec. 3.2, Eq. 2, Fig. 4): ``F*_j = sum_r f_rj(F_r)`` with ``f_jj`` the identity.

    Args:
        channels: ``C_j`` per scale (outputs keep them).
        reductions: backbone stride per scale (consecutive scales differ by powers of 2).

    ``forward(list[float[B,C_j,h_j,w_j]]) -> list[float[B,C_j,h_j,w_j]]``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int]) -> None:
        super().__init__()
        n = len(channels)
        self.transforms = nn.ModuleList()
        for r in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if r < j:
                    row.append(DepthwiseSeparableDown(channels[r], channels[j], reductions[j] // reductions[r]))
                elif r > j:
                    row.append(BilinearUp(channels[r], channels[j]))
                else:
                    row.append(nn.Identity())
            self.transforms.append(row)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j, target in enumerate(xs):
            total = target
            for r, x in enumerate(xs):
                if r < j:
                    total = total + self.transforms[r][j](x)
                elif r > j:
                    total = total + self.transforms[r][j](x, target.shape[-2:])
            out.append(total)
        return out


# -------------------------------------------------------------------------------------- attention


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


class PatchAttentionHead(nn.Module):
    """One MSA head (Eq. 3): self-attention between the ``N = (h/p)(w/p)`` patches of size ``p``.

    ``A = softmax(Q K^T / c_s) V`` with ``c_s = C p^2`` (the paper divides by ``c_s``, not its root).
    A fully-connected embedding of the ``C p^2``-dim flattened patches would need ``(C p^2)^2``
    weights (about 4·10^10 for ``p = h = 64``), so, as in M2TR [58] which PRN builds on, Q/K/V come
    from 1x1 convolutions, i.e. one FC layer shared by every position of the patch. A head with a
    single patch (``p = h``) has a one-element softmax, so it has no Q/K and returns ``V``.

    ``forward(float[B,C,h,w]) -> (float[B,C,h,w], attention float[B,N,N])``.
    """

    def __init__(self, channels: int, size: tuple[int, int], patch: tuple[int, int]) -> None:
        super().__init__()
        self.size, self.patch = tuple(size), tuple(patch)
        self.tokens = (size[0] // patch[0]) * (size[1] // patch[1])
        self.scale = 1.0 / (channels * patch[0] * patch[1])
        self.value = nn.Conv2d(channels, channels, 1)
        self.query = nn.Conv2d(channels, channels, 1) if self.tokens > 1 else None
        self.key = nn.Conv2d(channels, channels, 1) if self.tokens > 1 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        ph, pw = self.patch
        v = self.value(x)
        if self.query is None:
            return v, torch.ones(b, 1, 1, device=x.device, dtype=x.dtype)
        q, k = patchify(self.query(x), ph, pw), patchify(self.key(x), ph, pw)
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
    """MSA block (Sec. 3.3): one :class:`PatchAttentionHead` per patch size, outputs concatenated
    (``len(heads) x C`` channels) and passed through a :class:`ResidualBlock` back to ``C``.

    ``forward(float[B,C,h,w]) -> (float[B,C,h,w], list of attention float[B,N_s,N_s] per head)``.
    """

    def __init__(self, channels: int, size: tuple[int, int], divisors: Sequence[int] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.heads = nn.ModuleList(PatchAttentionHead(channels, size, p) for p in msa_patch_sizes(size, divisors))
        self.residual = ResidualBlock(len(self.heads) * channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs, attns = zip(*(head(x) for head in self.heads))
        return self.residual(torch.cat(outs, dim=1)), list(attns)


# ---------------------------------------------------------------------------------------- decoder


class UpBlock(nn.Module):
    """U-Net decoder step: bilinear up-sampling to the skip's size + conv, concatenation with the
    skip, two convs. ``(float[B,C_in,h,w], skip float[B,C_s,2h,2w]) -> float[B,C_out,2h,2w]``."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = conv_bn_relu(in_channels, out_channels, 3)
        self.fuse = nn.Sequential(conv_bn_relu(out_channels + skip_channels, out_channels, 3),
                                  conv_bn_relu(out_channels, out_channels, 3))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """U-Net-like decoder (Fig. 3): from the deepest backbone map through the skips (deepest first)
    to one anomaly logit per input pixel.

    Args:
        bottleneck_channels: channels of the deepest backbone map.
        skip_channels: channels of each skip, finest first. widths: decoder channels per scale.
        head_channels: channels of the last conv before the per-pixel logit.

    ``forward(bottleneck, skips (finest first), out_size) -> float[B,1,H,W]`` (logits).
    """

    def __init__(self, bottleneck_channels: int, skip_channels: Sequence[int], widths: Sequence[int],
                 head_channels: int = 16) -> None:
        super().__init__()
        ins = [*widths[1:], bottleneck_channels]
        self.blocks = nn.ModuleList(UpBlock(i, s, w) for i, s, w in zip(ins, skip_channels, widths))
        self.head = conv_bn_relu(widths[0], head_channels, 3)
        self.out = nn.Conv2d(head_channels, 1, 3, padding=1)

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor],
                out_size: tuple[int, int]) -> torch.Tensor:
        x = bottleneck
        for block, skip in zip(reversed(self.blocks), reversed(skips)):
            x = block(x, skip)
        x = F.interpolate(self.head(x), size=out_size, mode="bilinear", align_corners=False)
        return self.out(x)


# ---------------------------------------------------------------------------------------- network


class PrototypicalResidualNetwork(nn.Module):
    """The trainable part of PRN (Fig. 3) on top of frozen backbone maps.

    Args:
        channels, reductions, sizes: per skip scale (finest first): backbone channels, strides and
            map sizes ``(h, w)`` at the training resolution.
        bottleneck_channels: channels of the deepest backbone map (decoder input).
        msa_depth, patch_divisors: MSA blocks per scale and head patch sizes.
        use_prototypes, use_msa, use_fusion: Table 4 switches.

    ``forward(features (skip scales + bottleneck), out_size, details=False)`` returns logits
    ``float[B,1,H,W]`` and, with ``details``, ``{"prototype_index": long[B,S], "residuals":
    list[float[B,C_j,h_j,w_j]], "attention": list (scale) of list (head) of float[B,N,N]}``
    (attention of the last MSA block).
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], sizes: Sequence[tuple[int, int]],
                 bottleneck_channels: int, msa_depth: int = 3, patch_divisors: Sequence[int] = (1, 2, 4, 8),
                 use_prototypes: bool = True, use_msa: bool = True, use_fusion: bool = True) -> None:
        super().__init__()
        n = len(channels)
        skip = [c * (2 if use_prototypes else 1) for c in channels]
        self.prototypes = MultiScalePrototypes(n) if use_prototypes else None
        self.feature_fusion = MultiScaleFusion(channels, reductions) if use_fusion else None
        self.residual_fusion = MultiScaleFusion(channels, reductions) if use_fusion and use_prototypes else None
        self.attention = nn.ModuleList(
            nn.ModuleList(MultiSizeSelfAttention(skip[j], sizes[j], patch_divisors) for _ in range(msa_depth))
            for j in range(n)) if use_msa and msa_depth > 0 else None
        self.skip_fusion = MultiScaleFusion(skip, reductions) if use_fusion and self.attention is not None else None
        self.decoder = Decoder(bottleneck_channels, skip, list(channels))

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int],
                details: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        feats, bottleneck = list(features[:-1]), features[-1]
        info: dict[str, Any] = {"attention": []}
        skips = self.feature_fusion(feats) if self.feature_fusion is not None else feats
        if self.prototypes is not None:
            residuals, info["prototype_index"] = self.prototypes(feats)
            info["residuals"] = residuals
            fused = self.residual_fusion(residuals) if self.residual_fusion is not None else residuals
            skips = [torch.cat([f, r.to(f.dtype)], dim=1) for f, r in zip(skips, fused)]
        if self.attention is not None:
            out = []
            for x, blocks in zip(skips, self.attention):
                for block in blocks:
                    x, attn = block(x)
                out.append(x)
                info["attention"].append(attn)
            skips = self.skip_fusion(out) if self.skip_fusion is not None else out
        logits = self.decoder(bottleneck, skips, out_size)
        return (logits, info) if details else logits


# ------------------------------------------------------------------------------------- loss, score


def prn_loss(logits: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0,
             weight: float = 5.0) -> dict[str, torch.Tensor]:
    """Eq. 5: ``L = SmoothL1(M_o, M) + lambda * L_focal(M_o, M)`` with ``M_o = sigmoid(logits)``.

    Smooth-L1 uses beta = 1 (Fast R-CNN [14]); the focal loss (Lin et al. [29]) is
    ``-a_t (1 - p_t)^gamma log p_t`` with ``alpha = 0.5, gamma = 4, lambda = 5`` in the paper; both are
    means over pixels. ``logits, mask: float[B,1,H,W]``. Returns ``{"loss", "smooth_l1", "focal"}``.
    """
    prob = torch.sigmoid(logits.float())
    target = mask.float()
    smooth_l1 = F.smooth_l1_loss(prob, target, beta=1.0)
    focal = focal_loss(prob, target, alpha=alpha, gamma=gamma)
    return {"loss": smooth_l1 + weight * focal, "smooth_l1": smooth_l1, "focal": focal}


def top_k_score(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Image score (Sec. 3.5): mean of the ``k`` largest pixels of each ``float[B,H,W]`` map -> ``float[B]``."""
    flat = maps.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


def scaled_top_k(top_k: int, height: int, width: int, reference: int = 256) -> int:
    """``top_k`` pixels at ``reference x reference`` scaled with the image area (at least 1)."""
    return max(1, int(round(top_k * height * width / reference ** 2)))


# ------------------------------------------------------------------------------------ training data

#: Kinds of the images of a training group, in order: ``KINDS[kind]``.
KINDS = ("normal", "extended", "heterologous", "homologous")


class AnomalyGenerationDataset(Dataset):
    """PRN's online training data (Sec. 3.4, 4.1): groups of 2 normal images, 1 extended anomaly
    (EA, from a seen anomaly) and 1 simulated anomaly (HEA or HOA), i.e. the paper's 32 + 16 + 16 per
    batch of 64. Without seen anomalies the EA slot holds a second simulated anomaly.

    Args:
        normals: ``float32[H,W,3]`` normal images in [0, 1] at the training size.
        seen: ``(image float32[H,W,3], mask bool[H,W])`` seen anomalies at the same size (those with an
            empty mask, e.g. from datasets without pixel masks, are skipped).
        mean, std: backbone normalisation applied after generation.
        seed: group ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``.
        textures: HEA texture pool. hoa_prob: chance that a simulated anomaly is homologous.
        target_areas: restrict anomalies to each normal image's foreground (:func:`foreground_mask`).

    Items: ``{"image": float[4,3,H,W] (normalised), "mask": float[4,1,H,W], "kind": long[4]}``
    (indices into :data:`KINDS`). Length: ``ceil(len(normals) / 2)`` groups, so an epoch shows every
    normal image once.
    """

    def __init__(self, normals: Sequence[np.ndarray], seen: Sequence[tuple[np.ndarray, np.ndarray]],
                 mean: Sequence[float] | None, std: Sequence[float] | None, seed: int = 0,
                 textures: TextureSource | None = None, hoa_prob: float = 0.5, target_areas: bool = True) -> None:
        if not normals:
            raise DatasetError("AnomalyGenerationDataset: no normal training images.")
        self.normals = [np.asarray(n, np.float32) for n in normals]
        self.seen = [(np.asarray(a, np.float32), np.asarray(m, bool)) for a, m in seen if np.any(m)]
        self.foregrounds = [foreground_mask(n) if target_areas else None for n in self.normals]
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.seed, self.epoch = int(seed), 0
        self.textures = textures or TextureSource()
        self.hoa_prob = float(hoa_prob)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.normals) / 2)

    def simulated(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """A HOA (probability ``hoa_prob``) or HEA on a random normal image: ``(image, mask, kind)``."""
        j = int(rng.integers(len(self.normals)))
        if rng.uniform() < self.hoa_prob:
            other = self.normals[int(rng.integers(len(self.normals)))]
            img, mask = homologous_anomaly(self.normals[j], other, rng, self.foregrounds[j])
            return img, mask, KINDS.index("homologous")
        img, mask = heterologous_anomaly(self.normals[j], rng, self.textures, self.foregrounds[j])
        return img, mask, KINDS.index("heterologous")

    def extended(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """An EA: a random seen anomaly pasted on a random normal image (or a simulated one if none)."""
        if not self.seen:
            return self.simulated(rng)
        j = int(rng.integers(len(self.normals)))
        anomaly, mask = self.seen[int(rng.integers(len(self.seen)))]
        img, m = extended_anomaly(self.normals[j], anomaly, mask, rng, self.foregrounds[j])
        return img, m, KINDS.index("extended")

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            img = (img - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n = len(self.normals)
        h, w = self.normals[0].shape[:2]
        items = [(self.normals[(2 * index + t) % n], np.zeros((h, w), np.float32), 0) for t in range(2)]
        items += [self.extended(rng), self.simulated(rng)]
        return {"image": torch.stack([self._tensor(i) for i, _, _ in items]),
                "mask": torch.stack([torch.from_numpy(np.asarray(m, np.float32))[None] for _, m, _ in items]),
                "kind": torch.tensor([k for _, _, k in items], dtype=torch.long)}


def load_image(sample: Sample, size: int) -> np.ndarray:
    """A sample's image as ``float32[size,size,3]`` in [0, 1] (resized as the evaluation loader does)."""
    return resize_image(read_image(sample.image), size).astype(np.float32) / 255.0


# ----------------------------------------------------------------------------------------- method


@register
class PRN(AnomalyMethod):
    """Prototypical Residual Network (supervised with a few seen anomalies + generated ones)."""

    name = "prn"
    paper = Paper("Zhang et al., Prototypical Residual Networks for Anomaly Detection and Localization, CVPR 2023",
                  "PRN", shared=("nbhelpers.data.anomalies",))
    config_class = Config
    modules = ("net",)
    size_rule = MSASizeRule()

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if len(cfg.layers) < 1 or cfg.bottleneck_layer <= max(cfg.layers):
            raise ConfigError(f"PRN: bottleneck_layer ({cfg.bottleneck_layer}) must be deeper than "
                              f"layers {cfg.layers}.")
        self.backbone = FeatureExtractor(cfg.backbone, (*cfg.layers, cfg.bottleneck_layer), cfg.weights).to(self.device)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=self.device))
        self.feature_sizes = [tuple(f.shape[-2:]) for f in probe[:-1]]
        self.net = PrototypicalResidualNetwork(
            self.backbone.channels[:-1], self.backbone.reductions[:-1], self.feature_sizes, self.backbone.channels[-1],
            cfg.msa_depth, cfg.patch_divisors, cfg.use_prototypes, cfg.use_msa, cfg.use_fusion).to(self.device)
        self.top_k = scaled_top_k(cfg.top_k, cfg.image_size, cfg.image_size)
        self.kmeans_results: list[KMeansResult | None] = []

    # ----- prototypes -----------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, samples: Sequence[Sample]) -> list[torch.Tensor]:
        """Backbone maps of ``samples`` at the skip scales: ``list[float[N,C_j,h_j,w_j]]`` on the device."""
        per_scale: list[list[torch.Tensor]] = [[] for _ in self.feature_sizes]
        for batch in progress(self.loader(samples), desc="prn features", enabled=self.config.progress):
            for j, f in enumerate(self.backbone(to_device(batch["image"], self.device))[:-1]):
                per_scale[j].append(f)
        return [torch.cat(f) for f in per_scale]

    def fit_prototypes(self, train: Sequence[Sample]) -> list[KMeansResult | None]:
        """MP initialisation (Sec. 3.1): k-means per scale over the normal training maps (frozen after)."""
        if self.net.prototypes is None:
            return []
        cfg = self.config
        prototypes = self.net.prototypes

        def cluster() -> tuple[list[torch.Tensor], list[KMeansResult | None]]:
            results = prototypes.fit(self.features(train), cfg.prototype_ratio, cfg.kmeans_iters, cfg.seed)
            return prototypes.prototypes, results

        centers, self.kmeans_results = computed_once(cluster, self.device)
        prototypes.assign(centers)
        return self.kmeans_results

    # ----- training -------------------------------------------------------------------------------
    def training_set(self, train: Sequence[Sample],
                     anomalies: Sequence[Sample] | None = None) -> AnomalyGenerationDataset:
        """The generated training data (Sec. 3.4) from normal ``train`` and seen ``anomalies``."""
        cfg = self.config
        size = cfg.image_size
        seen = [(load_image(s, size), union_mask(s, size)) for s in (anomalies or [])]
        mean, std = self.normalization
        return AnomalyGenerationDataset([load_image(s, size) for s in train], seen, mean, std, cfg.seed,
                                        TextureSource(cfg.textures), cfg.hoa_prob, cfg.target_areas)

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Prototypes by k-means (``val`` is not used: PRN selects no epoch)."""
        if not train:
            raise DatasetError("PRN.fit: no normal training images.")
        self.fit_prototypes(train)

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None):
        """Groups of generated images (:meth:`training_set`); ``anomalies`` are the seen anomalies (may be
        ``None``: simulated anomalies only). Each group holds 4 images, so ``batch_size // 4`` groups."""
        cfg = self.config
        return make_loader(self.training_set(train, anomalies), max(1, cfg.batch_size // 4), shuffle=True,
                           num_workers=cfg.num_workers, seed=cfg.seed)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        cfg = self.config
        return torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), None

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 5 on a batch of groups (``image: float[G,4,3,H,W]``, ``mask: float[G,4,1,H,W]``)."""
        cfg = self.config
        images, masks = batch["image"].flatten(0, 1), batch["mask"].flatten(0, 1)
        logits = self.net(self.backbone(images), images.shape[-2:])
        return prn_loss(logits, masks, cfg.focal_alpha, cfg.focal_gamma, cfg.focal_weight)

    # ----- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Anomaly probability maps ``M_o`` at input size and top-K mean scores.

        ``extras``: ``prototype_index long[B,S]``, ``residual_maps`` (per scale, channel mean of
        ``D_j``: ``float[B,h_j,w_j]``), ``attention`` (per scale, per MSA head, ``float[B,N,N]``).
        """
        self.net.eval()
        images = to_device(batch["image"], self.device)
        with autocast(self.device):
            logits, info = self.net(self.backbone(images), images.shape[-2:], details=True)
        maps = torch.sigmoid(logits.float())[:, 0]
        extras: dict[str, Any] = {"attention": [[a.float() for a in heads] for heads in info["attention"]]}
        if "residuals" in info:
            extras["prototype_index"] = info["prototype_index"]
            extras["residual_maps"] = [r.float().mean(1) for r in info["residuals"]]
        return AnomalyResult(scores=top_k_score(maps, self.top_k), maps=maps, extras=extras)

    # ----- persistence ----------------------------------------------------------------------------
    def load_state_dict(self, state: dict[str, Any]) -> None:
        protos = self.net.prototypes
        if protos is not None:
            protos.assign([state["net"][f"prototypes.p{j}"] for j in range(protos.n_scales)])
        self.net.load_state_dict(state["net"])
        self.net.eval()


__all__ = ["PRN", "Config", "KINDS", "AnomalyGenerationDataset", "BilinearUp", "Decoder", "DepthwiseSeparableDown",
           "KMeansResult", "MSASizeRule", "MultiScaleFusion", "MultiScalePrototypes", "MultiSizeSelfAttention",
           "PatchAttentionHead", "PrototypicalResidualNetwork", "ResidualBlock", "UpBlock", "kmeans", "load_image",
           "msa_patch_sizes", "nearest_prototype", "patchify", "prn_loss", "scaled_top_k", "top_k_score", "unpatchify",
           "unsplittable_patches"]
