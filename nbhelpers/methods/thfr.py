"""THFR: Template-guided Hierarchical Feature Restoration (Guo et al., ICCV 2023).

A frozen pre-trained backbone gives multi-level features ``I_1..I_K`` of an image. THFR restores
*anomaly-free* versions of them and scores every pixel by the cosine distance between the original
and the restored features (Eq. 4-5):

1. **Bottlenecks** (§3.1) filter anomalous features out: the :class:`GlobalBottleneck` (ResBlock,
   global max pooling, 2x2 stride-2 deconvolutions) keeps only the image's global normal
   semantics; the :class:`LocalBottleneck` (RD4AD's one-class embedding) compresses all levels
   into a small map of local normal features.
2. **Template bank + image-level NNS** (§3.2, Eq. 1): the multi-level features of every normal
   training image form the :class:`TemplateBank`; the nearest training image (cosine similarity
   of the flattened deepest level, one matrix product for the whole batch) becomes the template.
   Training draws the template at random among the ``n`` nearest *other* training images.
3. **Template-guided compensation** (§3.2, Fig. 4): for each bottleneck branch a
   :class:`TemplateCompensation` module concatenates an input embedding ``E_i``, a template
   embedding ``E_t`` and the :class:`RelationRepresentation` (Eq. 2: bidirectional affinities
   between every input and template position), fuses them with 1x1 convolutions; ResBlocks and the
   :class:`RestorationDecoder` (a ResNet run in reverse) restore every level.
4. **Loss and maps** (Eq. 3-5): per-level ``1 - cos`` along channels; maps upsampled, summed,
   Gaussian-smoothed; image score = map maximum.

The :class:`FeatureVisualizer` (supplementary §1.1) is a decoder trained with MSE to turn
pre-trained features into images, used to *look at* restored features (Fig. 5).

There is no public code of THFR. Choices the paper leaves open (documented where they are made):
ResBlocks are torchvision's ResNet bottleneck blocks (as RD4AD's), the template's levels are
brought to the bottleneck grid by average pooling, each restored level gets a final 1x1
projection (EfficientNet features are signed), and Adam uses RD4AD's betas (0.5, 0.999).
"""
from __future__ import annotations


import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.models.resnet import Bottleneck, conv1x1

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.coreset import greedy_coreset
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader
from nbhelpers.distributed import computed_once
from nbhelpers.errors import ConfigError
from nbhelpers.layers import conv_bn_relu, deconv_bn_relu
from nbhelpers.losses import cosine_distance_map
from nbhelpers.maps import max_score, smooth, upsample
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, Paper, SizeRule, register
from nbhelpers.progress import progress
from nbhelpers.train import TrainResult, autocast, fit as train_fit, to_device

# MVTec AD settings of the paper (§4.1); the ``paper`` preset holds the MVTec LOCO ones.
PAPER_MVTEC_AD = {"n_candidates": 6, "sigma": 4.0}


@dataclass
class Config(MethodConfig):
    """THFR settings.

    Attributes:
        n_candidates: ``n`` of Eq. 1: training draws the template at random among the ``n`` nearest
            other training images (paper: 1 on MVTec LOCO, 6 on MVTec AD); inference uses n = 1.
        bank_ratio: fraction of the template bank kept for inference by greedy coreset selection on
            the flattened deepest level (supp. §3.2, Table 6; 1.0 keeps every training image).
        projection_dim: random-projection size used by the coreset selection.
        sigma: Gaussian smoothing of the anomaly map (paper: 2 on LOCO, 4 on MVTec AD).
        bottleneck_channels: channels ``C`` of both bottlenecks; 0 = ``2 C_K`` as in the paper.
        relation_dim: channels of the theta / phi embeddings of Eq. 2.
        lbn_blocks: ResBlocks of the local bottleneck (RD4AD: 3, the first with stride 2).
        fusion_blocks: ResBlocks after the compensated branches are fused.
        decoder_blocks: ResBlocks per decoder stage.
        decoder_min_width: minimum channels of a decoder stage (0: the level's own channels, as RD4AD).
        use_global, use_local: which bottleneck branches exist (Table 4: GBN, LBN, G-L bottleneck).
        use_template, use_relation: template-guided compensation with / without the relation
            feature (Table 5).
        adam_betas: Adam betas (RD4AD's public code; the paper only gives the learning rate).
        vis_epochs, vis_lr, vis_width: training of the feature visualisation network.

    Presets: ``smoke`` (64 px, 2 epochs, narrow blocks: CI), ``cpu`` (offline EfficientNet-Lite0
    levels 1-3 at strides 4/8/16, 256 px, 20 epochs on cached features, n = 3 as SynthAD mixes
    MVTec AD- and LOCO-like categories) and ``paper`` (WideResNet-50 layers 1-3, 256 px, Adam lr
    0.005, 200 epochs, batch 16, n = 1 and sigma 2 for MVTec LOCO — use ``**PAPER_MVTEC_AD`` as
    overrides for MVTec AD). Not given by the paper and chosen here: ``relation_dim`` (C/8 as in
    RGA), block counts (RD4AD's), ``vis_epochs``.
    """

    layers: tuple[int, ...] = (1, 2, 3)
    lr: float = 0.005
    epochs: int = 20
    n_candidates: int = 3
    bank_ratio: float = 1.0
    projection_dim: int = 128
    sigma: float = 4.0
    bottleneck_channels: int = 0
    relation_dim: int = 32
    lbn_blocks: int = 3
    fusion_blocks: int = 2
    decoder_blocks: int = 1
    decoder_min_width: int = 64
    use_global: bool = True
    use_local: bool = True
    use_template: bool = True
    use_relation: bool = True
    adam_betas: tuple[float, float] = (0.5, 0.999)
    vis_epochs: int = 10
    vis_lr: float = 2e-3
    vis_width: int = 64

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # differences from the defaults (= cpu)
        "smoke": dict(image_size=64, batch_size=4, epochs=2, progress=False, n_candidates=2, relation_dim=8,
                      lbn_blocks=1, fusion_blocks=1, decoder_min_width=16, vis_epochs=2, vis_width=16),
        "cpu": dict(),
        "paper": dict(backbone="wide_resnet50_2", weights="timm", batch_size=16, epochs=200, n_candidates=1,
                      sigma=2.0, relation_dim=256, decoder_blocks=3, decoder_min_width=0, vis_epochs=100),
    }

    def __post_init__(self) -> None:
        if not (self.use_global or self.use_local):
            raise ConfigError("THFR needs at least one bottleneck: set use_global or use_local to True.")
        if self.use_relation and not self.use_template:
            raise ConfigError("use_relation=True needs use_template=True (the relation is between input and template).")
        if self.n_candidates < 1 or not 0 < self.bank_ratio <= 1:
            raise ConfigError(f"n_candidates must be >= 1 and bank_ratio in (0, 1]; got {self.n_candidates}, "
                              f"{self.bank_ratio}.")
        self.adam_betas = tuple(self.adam_betas)


# ------------------------------------------------------------------------------------ building blocks


def res_block(in_channels: int, out_channels: int, stride: int = 1) -> Bottleneck:
    """The paper's "ResBlock": a torchvision ResNet bottleneck block ``in -> out`` channels (as RD4AD's),
    with a strided 1x1 projection shortcut when the shape changes. ``float[B,in,H,W] -> float[B,out,H/s,W/s]``."""
    if out_channels % Bottleneck.expansion:
        raise ConfigError(f"ResBlock output channels must be a multiple of {Bottleneck.expansion}; got {out_channels}.")
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    return Bottleneck(in_channels, out_channels // Bottleneck.expansion, stride, shortcut)


def _log2(ratio: float, what: str) -> int:
    steps = math.log2(ratio) if ratio > 0 else -1
    if steps < 0 or steps != int(steps):
        raise ConfigError(f"THFR needs {what} to be a power of two; got {ratio}.")
    return int(steps)


class GlobalBottleneck(nn.Module):
    """GBN (§3.1): ResBlock on the deepest level, global max pooling to ``Z_GBN`` (``1 x 1 x C``),
    then 2x2 stride-2 deconvolutions back up to the bottleneck grid.

    ``float[B,C_K,H_K,W_K] -> float[B,C,g,g]`` with ``g = H_K / 2``.
    """

    def __init__(self, in_channels: int, channels: int, grid: int) -> None:
        super().__init__()
        self.reform = res_block(in_channels, channels)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.expand = nn.Sequential(*[deconv_bn_relu(channels, channels) for _ in range(_log2(grid, "the bottleneck grid"))])

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(self.reform(deepest)))


class LocalBottleneck(nn.Module):
    """LBN (§3.1, RD4AD's one-class embedding): each shallower level is brought to the deepest
    level's size by stride-2 3x3 convolutions, all levels are concatenated and fused by ResBlocks
    (the first with stride 2) into ``Z_LBN``.

    ``list[float[B,C_k,H_k,W_k]] -> float[B,C,H_K/2,W_K/2]``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], out_channels: int, blocks: int = 3) -> None:
        super().__init__()
        deep = channels[-1]
        self.align = nn.ModuleList()
        for c, r in zip(channels[:-1], reductions[:-1]):
            steps = _log2(reductions[-1] / r, "the ratio of level strides")
            self.align.append(nn.Sequential(*[conv_bn_relu(c if i == 0 else deep, deep, 3, 2) for i in range(steps)]))
        self.fuse = nn.Sequential(res_block(deep * len(channels), out_channels, stride=2),
                                  *[res_block(out_channels, out_channels) for _ in range(blocks - 1)])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        aligned = [a(f) for a, f in zip(self.align, features[:-1])] + [features[-1]]
        return self.fuse(torch.cat(aligned, dim=1))


def relation_feature(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Bidirectional relation feature of Eq. 2 (RGA-style) from embedded input and template maps.

    With ``R[i, j] = theta(I^i)^T phi(T^j)`` (``m = H W`` positions, row-major), the relation
    vector of position ``i`` is ``r_i = [R[i, :], R[:, i]]``: its first ``m`` channels are the
    affinities of input point ``i`` to every template point, the last ``m`` those of template point
    ``i`` to every input point.

    Args:
        query: ``theta(I)``, ``float[B,d,H,W]``. key: ``phi(T)``, ``float[B,d,H,W]``.

    Returns:
        ``float[B,2HW,H,W]``.
    """
    b, _, h, w = query.shape
    rel = torch.bmm(query.flatten(2).transpose(1, 2), key.flatten(2))  # [B, m, m]: R[i, j]
    stacked = torch.cat([rel, rel.transpose(1, 2)], dim=2)  # row i: [R[i, :], R[:, i]]
    return stacked.transpose(1, 2).reshape(b, 2 * h * w, h, w)


class RelationRepresentation(nn.Module):
    """Eq. 2: 1x1-convolution embeddings ``theta`` (input) and ``phi`` (template) and their
    bidirectional dot-product affinities (:func:`relation_feature`).

    ``(float[B,C_in,H,W], float[B,C_tpl,H,W]) -> float[B,2HW,H,W]``.
    """

    def __init__(self, input_channels: int, template_channels: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(input_channels, dim, 1)
        self.phi = nn.Conv2d(template_channels, dim, 1)

    def forward(self, inputs: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        return relation_feature(self.theta(inputs), self.phi(template))


class TemplateCompensation(nn.Module):
    """Template-guided compensation of one compressed feature (§3.2, Fig. 4).

    The compressed input (``C`` channels) is projected to the input embedding ``E_i`` (``C_i``
    channels), the template to ``E_t`` (``C_t`` channels); ``[E_i, E_t, relation]`` are concatenated
    and fused by 1x1 convolutions back to ``C`` channels. The paper's choices: GBN branch
    ``C_i = C, C_t = 1`` (input semantics + template layout), LBN branch ``C_i = 1, C_t = C``
    (input layout + template details).

    Args:
        channels: ``C``. template_channels: channels of the aligned template.
        input_embed, template_embed: ``C_i``, ``C_t``. grid: side of the feature map (relation: ``2 grid^2`` ch).
        relation_dim: theta/phi size; ``None`` leaves the relation out (Table 5, "w/o rela.").

    ``(float[B,C,g,g], float[B,C_tpl,g,g]) -> float[B,C,g,g]``.
    """

    def __init__(self, channels: int, template_channels: int, input_embed: int, template_embed: int, grid: int,
                 relation_dim: int | None) -> None:
        super().__init__()
        self.input_embedding = conv_bn_relu(channels, input_embed)
        self.template_embedding = conv_bn_relu(template_channels, template_embed)
        self.relation = (RelationRepresentation(channels, template_channels, relation_dim)
                         if relation_dim is not None else None)
        fused = input_embed + template_embed + (2 * grid * grid if self.relation is not None else 0)
        self.fuse = nn.Sequential(conv_bn_relu(fused, channels), conv_bn_relu(channels, channels))

    def forward(self, inputs: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        parts = [self.input_embedding(inputs), self.template_embedding(template)]
        if self.relation is not None:
            parts.append(self.relation(inputs, template))
        return self.fuse(torch.cat(parts, dim=1))


def align_template(template: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """The template's levels average-pooled to the bottleneck grid and concatenated (uncompressed
    channels). ``list[float[B,C_k,H_k,W_k]] -> float[B,sum C_k,g,g]``."""
    return torch.cat([F.adaptive_avg_pool2d(t, grid) for t in template], dim=1)


class RestorationDecoder(nn.Module):
    """Restores every level from the fused bottleneck feature: a ResNet run in reverse (RD4AD) —
    per level a ``ConvTranspose(k2, s2)`` upsampling, ResBlocks, and a 1x1 projection to the
    level's channels (pre-trained features may be negative; ResBlocks end in ReLU).

    ``float[B,C,g,g] -> list[float[B,C_k,H_k,W_k]]`` (shallowest level first, like the backbone).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], reductions: Sequence[int], grid_reduction: int,
                 blocks: int = 1, min_width: int = 0) -> None:
        super().__init__()
        self.stages, self.heads = nn.ModuleList(), nn.ModuleList()
        prev_c, prev_r = in_channels, grid_reduction
        for c, r in zip(reversed(channels), reversed(reductions)):
            width = 4 * math.ceil(max(c, min_width) / 4)  # ResBlock widths are multiples of 4
            factor = 2 ** _log2(prev_r / r, "the ratio of level strides")
            self.stages.append(nn.Sequential(deconv_bn_relu(prev_c, width, factor),
                                             *[res_block(width, width) for _ in range(blocks)]))
            self.heads.append(nn.Conv2d(width, c, 1))
            prev_c, prev_r = width, r

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            out.append(head(x))
        return out[::-1]


class THFRNet(nn.Module):
    """The trainable part of THFR: bottlenecks, template-guided compensation, fusion ResBlocks and
    the restoration decoder. Switches select the ablations of Tables 4-5.

    Args:
        channels, reductions: channels and strides of the backbone levels (deepest last).
        image_size: input side (fixes the bottleneck grid ``g = image_size / (2 * stride_K)``).

    ``forward(features, template=None) -> restored`` with ``features``/``template`` the backbone
    levels ``list[float[B,C_k,H_k,W_k]]`` of the input and of its template, ``restored`` the same shapes.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], image_size: int, config: Config) -> None:
        super().__init__()
        deep = channels[-1]
        c = config.bottleneck_channels or 2 * deep
        grid_reduction = 2 * reductions[-1]
        if image_size % grid_reduction:
            raise ConfigError(f"image_size {image_size} must be a multiple of {grid_reduction} (2 x deepest stride).")
        self.grid = image_size // grid_reduction
        _log2(self.grid, f"image_size / {grid_reduction} (the bottleneck grid)")
        self.use_template = config.use_template
        relation_dim = config.relation_dim if config.use_relation else None
        tpl = sum(channels)
        self.gbn = GlobalBottleneck(deep, c, self.grid) if config.use_global else None
        self.lbn = LocalBottleneck(channels, reductions, c, config.lbn_blocks) if config.use_local else None
        self.gbn_compensation = self.lbn_compensation = None
        if config.use_template:
            if self.gbn is not None:
                self.gbn_compensation = TemplateCompensation(c, tpl, c, 1, self.grid, relation_dim)
            if self.lbn is not None:
                self.lbn_compensation = TemplateCompensation(c, tpl, 1, c, self.grid, relation_dim)
        branches = int(config.use_global) + int(config.use_local)
        self.fusion = nn.Sequential(conv_bn_relu(branches * c, c),
                                    *[res_block(c, c) for _ in range(config.fusion_blocks)])
        self.decoder = RestorationDecoder(c, channels, reductions, grid_reduction, config.decoder_blocks,
                                          config.decoder_min_width)

    def compress(self, features: Sequence[torch.Tensor], template: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Bottleneck branches, compensated by the template when enabled, fused: ``float[B,C,g,g]``."""
        if self.use_template and template is None:
            raise ValueError("THFRNet with use_template=True needs the template features.")
        aligned = align_template(template, self.grid) if self.use_template else None
        branches = []
        if self.gbn is not None:
            z = self.gbn(features[-1])
            branches.append(self.gbn_compensation(z, aligned) if self.gbn_compensation is not None else z)
        if self.lbn is not None:
            z = self.lbn(features)
            branches.append(self.lbn_compensation(z, aligned) if self.lbn_compensation is not None else z)
        return self.fusion(torch.cat(branches, dim=1))

    def forward(self, features: Sequence[torch.Tensor], template: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        return self.decoder(self.compress(features, template))


class FeatureVisualizer(nn.Module):
    """Feature visualisation network (supplementary §1.1): a reversed CNN that turns a feature
    hierarchy back into an image, trained with MSE on pre-trained features of normal images and
    then applied to *restored* features to show what THFR restored (Fig. 5).

    Top-down: the deepest level is projected to ``width`` channels, upsampled by deconvolutions
    level by level with each shallower level added (1x1 projection) and refined by a ResBlock, then
    upsampled to the input resolution (halving the channels at each doubling) and mapped to 3
    channels (the backbone's normalised space).

    ``list[float[B,C_k,H_k,W_k]] -> float[B,3,H,W]`` with ``H = H_1 * stride_1``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], width: int = 64) -> None:
        super().__init__()
        width = 4 * math.ceil(width / 4)
        self.project = nn.ModuleList(conv_bn_relu(c, width) for c in channels)
        self.up = nn.ModuleList(deconv_bn_relu(width, width, 2 ** _log2(r_deep / r, "the ratio of level strides"))
                                for r, r_deep in zip(reductions[:-1], reductions[1:]))
        self.refine = nn.ModuleList(res_block(width, width) for _ in channels[:-1])
        ups, c = [], width
        for _ in range(_log2(reductions[0], "the first stride")):  # halve the channels at every doubling
            ups.append(deconv_bn_relu(c, max(c // 2, 8)))
            c = max(c // 2, 8)
        self.to_image = nn.Sequential(*ups, nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.project[-1](features[-1])
        for k in range(len(features) - 2, -1, -1):
            x = self.refine[k](self.up[k](x) + self.project[k](features[k]))
        return self.to_image(x)


# ------------------------------------------------------------------------------ template bank + NNS


def image_nns(query: torch.Tensor, keys: torch.Tensor, n: int = 1,
              exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level nearest-neighbour search (Eq. 1) for a whole batch with one matrix product.

    ``d(I_K, B_K^i)`` is the cosine distance of the flattened deepest-level features, so the ``n``
    nearest templates are the ``n`` largest cosine similarities.

    Args:
        query: ``float[B,C,H,W]`` (or ``[B,D]``) deepest-level features of the queries.
        keys: ``float[N,D]`` L2-normalised flattened bank features (:attr:`TemplateBank.keys`).
        n: number of candidates (clipped to what the bank holds).
        exclude: ``long[B]`` bank index each query must not retrieve (itself, during training), or ``None``.

    Returns:
        ``(index long[B,n], similarity float[B,n])``, most similar first.
    """
    q = F.normalize(query.flatten(1).float(), dim=1)
    sim = q @ keys.float().T  # [B, N]
    if exclude is not None:
        sim = sim.scatter(1, exclude.view(-1, 1), float("-inf"))
    n = min(n, keys.shape[0] - (1 if exclude is not None else 0))
    similarity, index = sim.topk(max(n, 1), dim=1)
    return index, similarity


def draw_template(candidates: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``random(.)`` of Eq. 1: one column per row of ``candidates: long[B,n]`` -> ``long[B]``."""
    pick = torch.randint(candidates.shape[1], (candidates.shape[0],), generator=generator, device=candidates.device)
    return candidates.gather(1, pick[:, None])[:, 0]


@dataclass
class TemplateBank:
    """Multi-level pre-trained features of normal images: the templates of THFR (§3.2).

    Attributes:
        features: per level ``float[N,C_k,H_k,W_k]`` (``B = {B_k^i}`` of the paper).
        paths: image path of each entry (to show templates as pictures).
        keys: ``float[N,D]`` L2-normalised flattened deepest level (the NNS keys).
    """

    features: list[torch.Tensor]
    paths: list[str]

    def __post_init__(self) -> None:
        self.keys = F.normalize(self.features[-1].flatten(1).float(), dim=1)

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, query: torch.Tensor, n: int = 1, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`image_nns` of ``query: float[B,C_K,H_K,W_K]`` against this bank."""
        return image_nns(query, self.keys, n, exclude)

    def candidates(self, n: int) -> torch.Tensor:
        """``long[N,n]``: the ``n`` nearest *other* entries of every entry (training pairs of Eq. 1)."""
        index, _ = self.search(self.features[-1], n, exclude=torch.arange(len(self), device=self.keys.device))
        return index

    def gather(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The template features of bank entries ``index: long[B]`` -> per level ``float[B,C_k,H_k,W_k]``."""
        return [f[index] for f in self.features]

    def subsample(self, ratio: float, projection_dim: int = 128, seed: int = 0) -> TemplateBank:
        """A bank of ``ratio * N`` entries chosen by greedy coreset selection on :attr:`keys` (supp. §3.2)."""
        if ratio >= 1:
            return self
        index = greedy_coreset(self.keys, ratio, projection_dim, seed).sort().values
        return TemplateBank([f[index] for f in self.features], [self.paths[i] for i in index.tolist()])

    def to(self, device: torch.device) -> TemplateBank:
        return TemplateBank([f.to(device) for f in self.features], list(self.paths))


# ------------------------------------------------------------------------------------------- losses


def restoration_loss(features: Sequence[torch.Tensor], restored: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 3: ``sum_k mean_{h,w} (1 - cos(I_k(h,w), I^_k(h,w)))`` along the channel axis. ``-> float[]``."""
    return sum(cosine_distance_map(f, r).mean() for f, r in zip(features, restored))


def anomaly_map(features: Sequence[torch.Tensor], restored: Sequence[torch.Tensor], size: int | tuple[int, int],
                sigma: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 4-5: per-level maps ``M_k = 1 - cos`` upsampled to ``size``, summed, Gaussian-smoothed.

    Returns ``(float[B,H,W] smoothed map, [float[B,H_k,W_k] per-level maps])``.
    """
    levels = [cosine_distance_map(f, r) for f, r in zip(features, restored)]
    total = sum(upsample(m, size) for m in levels)
    return smooth(total, sigma), levels


# ------------------------------------------------------------------------------------------- method


class _Indices(Dataset):
    """Bank indices ``0..n-1`` (training runs on the cached backbone features of the bank)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@register
class THFR(AnomalyMethod):
    """Template-guided hierarchical feature restoration.

    ``fit`` fills the template bank with the training images' features (the backbone runs once),
    trains :class:`THFRNet` on them with Eq. 3, then subsamples the bank for inference;
    ``predict`` retrieves each image's template by image-level NNS and scores the cosine distance
    to the restored features. ``fit_visualizer`` trains the optional :class:`FeatureVisualizer`.
    """

    name = "thfr"
    paper = Paper("Guo et al., Template-guided Hierarchical Feature Restoration for Anomaly Detection, ICCV 2023",
                  "THFR")
    config_class = Config
    size_rule = SizeRule(multiple=2, per_stride=True, power_of_two=True,
                         why="the global bottleneck deconvolves a 1 x 1 code to the grid image_size / "
                             "(2 x deepest stride) in 2 x 2 steps")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights).to(self.device)
        self.net = THFRNet(self.backbone.channels, self.backbone.reductions, cfg.image_size, cfg).to(self.device)
        self.visualizer: FeatureVisualizer | None = None  # built by fit_visualizer / load (not part of the detector)
        self.bank: TemplateBank | None = None
        self._candidates: torch.Tensor | None = None  # long[N, n]: the Eq. 1 candidates of each bank entry
        self._generator = torch.Generator(device=self.device)  # draws the template among them
        self.visualizer_result = TrainResult()  # losses of fit_visualizer

    # ----- features ---------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, samples: Sequence[Sample], desc: str = "thfr features") -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone levels of ``samples`` on the device: ``([float[N,C_k,H_k,W_k]], float[N,3,H,W] images)``."""
        feats: list[list[torch.Tensor]] = []
        images = []
        for batch in progress(self.loader(samples), desc=desc, enabled=self.config.progress):
            x = to_device(batch["image"], self.device)
            feats.append(self.backbone(x))
            images.append(x)
        return [torch.cat(level) for level in zip(*feats)], torch.cat(images)

    def build_bank(self, samples: Sequence[Sample]) -> TemplateBank:
        """The full template bank of the normal ``samples`` (one backbone pass)."""
        features, _ = self.extract(samples, desc="thfr template bank")
        return TemplateBank(features, [str(s.image) for s in samples])

    # ----- training ---------------------------------------------------------------------------
    def _index_loader(self, n: int):
        return make_loader(_Indices(n), self.config.batch_size, shuffle=True, seed=self.config.seed)

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Build the bank of ``train`` and the Eq. 1 candidates: the ``n`` nearest *other* training images."""
        cfg = self.config
        if len(train) < 2 and cfg.use_template:
            raise ConfigError("THFR needs at least 2 training images (a template must differ from its input).")
        self.bank = computed_once(lambda: self.build_bank(train), self.device)
        self._candidates = self.bank.candidates(cfg.n_candidates) if cfg.use_template else None
        self._generator.manual_seed(cfg.seed)

    def training_step(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 3 for bank entries ``index: long[B]``, each restored with a template drawn by Eq. 1."""
        bank, candidates = self.bank, self._candidates
        features = bank.gather(index)
        template = bank.gather(draw_template(candidates[index], self._generator)) if candidates is not None else None
        return {"loss": restoration_loss(features, self.net(features, template))}

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.Adam(self.net.parameters(), lr=self.config.lr, betas=self.config.adam_betas), None

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None):
        """Indices into the bank: the backbone ran once in :meth:`on_fit_start`."""
        return self._index_loader(len(self.bank))

    @property
    def generators(self) -> tuple[torch.Generator, ...]:
        return (self._generator,)

    def on_fit_end(self, train: Sequence[Sample]) -> None:
        """Subsample the bank for inference (``bank_ratio``)."""
        cfg = self.config
        self.bank = self.bank.subsample(cfg.bank_ratio, cfg.projection_dim, cfg.seed)

    def fit_visualizer(self, train: Sequence[Sample], epochs: int | None = None) -> THFR:
        """Train the :class:`FeatureVisualizer` with MSE (supp. §1.1) to turn pre-trained features of
        ``train`` images back into the (normalised) images."""
        cfg = self.config
        features, images = self.extract(train, desc="thfr visualizer data")
        self.visualizer = self._new_visualizer()

        def loss_fn(index: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(self.visualizer([f[index] for f in features]).float(), images[index])

        optimizer = torch.optim.Adam(self.visualizer.parameters(), lr=cfg.vis_lr)
        self.visualizer_result = train_fit(self.visualizer, loss_fn, self._index_loader(len(images)), optimizer,
                                           cfg.vis_epochs if epochs is None else epochs, self.device,
                                           show_progress=cfg.progress, desc="thfr visualizer", seed=cfg.seed)
        self.visualizer.eval()
        return self

    def _new_visualizer(self) -> FeatureVisualizer:
        return FeatureVisualizer(self.backbone.channels, self.backbone.reductions, self.config.vis_width).to(self.device)

    # ----- inference --------------------------------------------------------------------------
    def _require_bank(self) -> TemplateBank:
        if self.bank is None:
            raise ConfigError("THFR has no template bank yet: call fit() or load() first.")
        return self.bank

    @torch.no_grad()
    def restore(self, images: torch.Tensor) -> dict[str, Any]:
        """Features, retrieved template and restored features of normalised ``images: float[B,3,H,W]``.

        Returns ``{"features": [float[B,C_k,H_k,W_k]], "restored": [...same], "template": [...same] or
        None, "template_index": long[B], "template_similarity": float[B]}`` (index into :attr:`bank`).
        """
        bank = self._require_bank()
        self.net.eval()
        features = self.backbone(images.to(self.device))
        index, similarity = bank.search(features[-1], 1)
        template = bank.gather(index[:, 0]) if self.config.use_template else None
        with autocast(self.device):
            restored = self.net(features, template)
        return {"features": features, "restored": [r.float() for r in restored], "template": template,
                "template_index": index[:, 0], "template_similarity": similarity[:, 0]}

    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Anomaly maps (Eq. 5, smoothed) and image scores (map maximum) of a batch.

        ``extras``: ``template_index`` (long[B]), ``template_similarity`` (float[B]), ``template_path``
        (list[str]) and ``level_maps`` (per level ``float[B,H_k,W_k]``, Eq. 4).
        """
        images = to_device(batch["image"], self.device)
        out = self.restore(images)
        maps, levels = anomaly_map(out["features"], out["restored"], images.shape[-2:], self.config.sigma)
        paths = self._require_bank().paths
        return AnomalyResult(scores=max_score(maps), maps=maps, extras={
            "template_index": out["template_index"], "template_similarity": out["template_similarity"],
            "template_path": [paths[i] for i in out["template_index"].tolist()], "level_maps": levels})

    @torch.no_grad()
    def visualize(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pictures ``float[B,3,H,W]`` (backbone-normalised) of a feature hierarchy (pre-trained or restored)."""
        if self.visualizer is None:
            raise ConfigError("The feature visualiser is not trained: call fit_visualizer(train) first.")
        self.visualizer.eval()
        with autocast(self.device):
            return self.visualizer([f.to(self.device) for f in features]).float()

    # ----- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        bank = self._require_bank()
        state: dict[str, Any] = {"net": self.net.state_dict(), "bank_features": [f.cpu() for f in bank.features],
                                 "bank_paths": list(bank.paths),
                                 "visualizer_result": asdict(self.visualizer_result)}
        if self.visualizer is not None:
            state["visualizer"] = self.visualizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.net.eval()
        self.bank = TemplateBank([f.to(self.device) for f in state["bank_features"]], list(state["bank_paths"]))
        self.visualizer_result = TrainResult(**state.get("visualizer_result", {}))
        self.visualizer = None
        if "visualizer" in state:
            self.visualizer = self._new_visualizer()
            self.visualizer.load_state_dict(state["visualizer"])
            self.visualizer.eval()


__all__ = [
    "Config", "THFR", "THFRNet", "GlobalBottleneck", "LocalBottleneck", "RelationRepresentation",
    "TemplateCompensation", "RestorationDecoder", "FeatureVisualizer", "TemplateBank", "PAPER_MVTEC_AD",
    "image_nns", "draw_template", "relation_feature", "align_template", "restoration_loss", "anomaly_map",
    "res_block",
]
