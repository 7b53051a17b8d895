"""Grad-CAM saliency and complexity (parameters, FLOPs) of POUTA's networks (Table VI)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nbhelpers.methods.pouta.config import Config
from nbhelpers.methods.pouta.discriminative import POUTANet


def grad_cam(feature: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``score`` w.r.t. a feature map in its autograd graph.

    ``alpha_c = mean_hw d score / d A_c``; ``cam = ReLU(sum_c alpha_c A_c)``.

    Args:
        feature: ``float[B,C,h,w]`` (requires grad, ``score`` depends on it).
        score: ``float[B]``; images are independent (BatchNorm in eval mode).

    Returns:
        ``float[B,h,w]`` (not normalised).
    """
    grads = torch.autograd.grad(score.sum(), feature, retain_graph=True)[0]
    alpha = grads.float().mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * feature.float()).sum(dim=1)).detach()


def count_flops(module: nn.Module, inputs: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (``torch.utils.flop_counter``: 2 per
    multiply-accumulate of convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(inputs)
    return int(counter.get_total_flops())


def complexity(config: Config) -> dict[str, float]:
    """Cost of a configuration (Table VI), counted on the ``meta`` device (no memory, no compute).

    Returns ``params_m``: parameters used at test time (MSS heads excluded: training only), in
    millions; ``discriminative_params_m``: the discriminative network alone, MSS heads included --
    what Table VI's 15.02 M (POUTA) and 28.68 M (vanilla, DRAEM's U-Net) count; ``gflops``: FLOPs of
    one ``image_size`` forward pass."""
    with torch.device("meta"):
        net = POUTANet(config).eval()
        x = torch.zeros(1, 3, config.image_size, config.image_size)
    heads = getattr(net.discriminative, "mss", None)
    training_only = sum(p.numel() for p in heads.parameters()) if heads is not None else 0
    params = sum(p.numel() for p in net.parameters()) - training_only
    discriminative = sum(p.numel() for p in net.discriminative.parameters())
    return {"params_m": params / 1e6, "discriminative_params_m": discriminative / 1e6,
            "gflops": count_flops(net, x) / 1e9}
