"""THFR's networks: global and local bottleneck (§3.1), relation-guided template compensation (Eq. 2, §3.3), restoration decoder, feature visualiser (supp. §1.1)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

from nbhelpers.errors import ConfigError
from nbhelpers.layers import conv_bn_relu, deconv_bn_relu
from nbhelpers.methods.thfr.config import Config


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


def strided_alignment(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """``steps`` stride-2 3x3 conv-BN-ReLU blocks: a level brought ``2^steps`` times closer to a deeper
    grid (RD4AD's one-class embedding). ``float[B,in,H,W] -> float[B,out,H/2^s,W/2^s]``."""
    return nn.Sequential(*[conv_bn_relu(in_channels if i == 0 else out_channels, out_channels, 3, 2)
                           for i in range(steps)])


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
            self.align.append(strided_alignment(c, deep, _log2(reductions[-1] / r, "the ratio of level strides")))
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


class TemplateAlignment(nn.Module):
    """The template levels one bottleneck branch is compensated with, brought to the bottleneck grid
    (Fig. 4 compensates at the compressed feature's size).

    ``"conv"`` (the paper's reading): each branch gets the template at *its own* levels — the global
    bottleneck the deepest level (it compresses ``I_K`` only), the local bottleneck every level (it
    compresses them all) — each level aligned by learned stride-2 convolutions to ``width`` channels
    (:func:`strided_alignment`, as the local bottleneck aligns the input), so the details of the
    shallow levels reach the LBN branch. ``"pooled"`` (the ablation, this collection's first version):
    every level average-pooled to the grid, the same tensor for both branches.

    Args:
        levels: indices of the backbone levels used (deepest last).
        grid_reduction: stride of the bottleneck grid (``2 x`` the deepest stride).

    ``list[float[B,C_k,H_k,W_k]] (all levels) -> float[B,out_channels,g,g]``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], grid_reduction: int,
                 levels: Sequence[int], width: int, mode: str = "conv") -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.align = None
        self.out_channels = sum(channels[k] for k in self.levels)
        if mode == "conv":
            self.align = nn.ModuleList(strided_alignment(channels[k], width, _log2(grid_reduction / reductions[k],
                                                                                   "the ratio of level strides"))
                                       for k in self.levels)
            self.out_channels = width * len(self.levels)

    def forward(self, template: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
        picked = [template[k] for k in self.levels]
        if self.align is None:
            return torch.cat([F.adaptive_avg_pool2d(t, grid) for t in picked], dim=1)
        return torch.cat([align(t) for align, t in zip(self.align, picked)], dim=1)


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
        self.gbn = GlobalBottleneck(deep, c, self.grid) if config.use_global else None
        self.lbn = LocalBottleneck(channels, reductions, c, config.lbn_blocks) if config.use_local else None
        self.gbn_compensation = self.lbn_compensation = self.gbn_template = self.lbn_template = None
        if config.use_template:
            every = range(len(channels))
            own = {"gbn": [len(channels) - 1], "lbn": every} if config.template_align == "conv" else \
                {"gbn": every, "lbn": every}
            if self.gbn is not None:  # C_i = C (input semantics), C_t = 1 (template layout)
                self.gbn_template = TemplateAlignment(channels, reductions, grid_reduction, own["gbn"], deep,
                                                      config.template_align)
                self.gbn_compensation = TemplateCompensation(c, self.gbn_template.out_channels, c, 1, self.grid,
                                                             relation_dim)
            if self.lbn is not None:  # C_i = 1 (input layout), C_t = C (template details)
                self.lbn_template = TemplateAlignment(channels, reductions, grid_reduction, own["lbn"], deep,
                                                      config.template_align)
                self.lbn_compensation = TemplateCompensation(c, self.lbn_template.out_channels, 1, c, self.grid,
                                                             relation_dim)
        branches = int(config.use_global) + int(config.use_local)
        self.fusion = nn.Sequential(conv_bn_relu(branches * c, c),
                                    *[res_block(c, c) for _ in range(config.fusion_blocks)])
        self.decoder = RestorationDecoder(c, channels, reductions, grid_reduction, config.decoder_blocks,
                                          config.decoder_min_width)

    def compress(self, features: Sequence[torch.Tensor], template: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Bottleneck branches, compensated by the template when enabled, fused: ``float[B,C,g,g]``."""
        if self.use_template and template is None:
            raise ValueError("THFRNet with use_template=True needs the template features.")
        branches = []
        if self.gbn is not None:
            z = self.gbn(features[-1])
            branches.append(self.gbn_compensation(z, self.gbn_template(template, self.grid))
                            if self.gbn_compensation is not None else z)
        if self.lbn is not None:
            z = self.lbn(features)
            branches.append(self.lbn_compensation(z, self.lbn_template(template, self.grid))
                            if self.lbn_compensation is not None else z)
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
