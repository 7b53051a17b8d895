"""The exercises of the collection, notebook by notebook.

Each exercise is checked against the package's own implementation (imported here, never re-written);
the small adapters below only pick one output of a package function or call a package module.
Input generators draw every size at random too, so that an answer that confuses two axes fails.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nbhelpers import metrics
from nbhelpers.data.records import Region
from nbhelpers.exercises.core import Exercise, register
from nbhelpers.methods import fod, pouta, prn, thfr


def _gen(seed: int) -> torch.Generator:
    """The generator of trial ``seed`` (one per trial: a failure repeats with the same inputs)."""
    return torch.Generator().manual_seed(1000 + seed)


def _int(gen: torch.Generator, low: int, high: int) -> int:
    """A random integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _seeded_module(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` with weights drawn from ``seed`` (global RNG state restored), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


# ------------------------------------------------------------------------------- 00 · data


def _saturation_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(12, 24, size=2)
    mask = rng.random((h, w)) < rng.uniform(0.2, 0.6)
    mode = seed % 3  # relative, absolute, none
    saturation = (None if mode == 2 else float(rng.uniform(0.2, 1.5)) if mode == 0
                  else float(rng.uniform(5, 3 * mask.sum())))
    region = Region(Path("ground_truth/defect/000/000.png"), saturation, relative=mode == 0)
    return {"region": region, "mask": mask, "scale": float(rng.uniform(0.2, 1.0))}


register(Exercise(
    "data_saturation_pixels", "00", "MVTec LOCO sPRO, saturation", "my_saturation_pixels",
    "How many pixels of a LOCO region must be flagged before it counts as fully found?",
    metrics.saturation_pixels, _saturation_inputs))


# ---------------------------------------------------------------------------- 01 · metrics


def _auroc_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 40))
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2), 1)  # rounding makes ties
    return {"scores": scores, "labels": labels}


def _aupro_inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(2, 5)), int(rng.integers(10, 16)), int(rng.integers(10, 16))
    masks = np.zeros((n, h, w), bool)
    for i in range(1, n):  # image 0 stays normal; the others get one or two rectangles
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks[i, y:y + rng.integers(2, 5), x:x + rng.integers(2, 5)] = True
    maps = rng.normal(size=(n, h, w)) + masks * rng.uniform(0.5, 2.0)
    if seed % 2:
        maps = np.round(maps, 1)  # ties between pixels
    return {"maps": maps, "masks": masks, "fpr_limit": (0.3, 0.1, 1.0)[seed % 3]}


register(Exercise(
    "metrics_image_auroc", "01", "image AUROC", "my_image_auroc",
    "The probability that a random anomalous image scores higher than a random normal one (ties count 1/2).",
    metrics.image_auroc, _auroc_inputs))
register(Exercise(
    "metrics_aupro", "01", "MVTec AD AUPRO", "my_aupro",
    "Area under the per-region-overlap curve up to an FPR limit, divided by the limit.",
    metrics.aupro, _aupro_inputs))


# ------------------------------------------------------------------------------ 02-03 · THFR


def _nns_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    b, c, h, w, n_bank = _int(g, 2, 5), _int(g, 3, 8), _int(g, 2, 4), _int(g, 2, 4), _int(g, 6, 12)
    keys = F.normalize(torch.randn(n_bank, c * h * w, generator=g), dim=1)
    return {"query": torch.randn(b, c, h, w, generator=g), "keys": keys, "n": _int(g, 1, 3)}


def _image_nns(query: torch.Tensor, keys: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return thfr.image_nns(query, keys, n)


def _others_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    return {"features": torch.randn(_int(g, 5, 10), _int(g, 3, 6), _int(g, 2, 4), _int(g, 2, 4), generator=g),
            "n": _int(g, 1, 3)}


def _nearest_others(features: torch.Tensor, n: int) -> torch.Tensor:
    return thfr.TemplateBank([features], [""] * len(features)).candidates(n)


def _relation_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    b, d, h, w = _int(g, 1, 3), _int(g, 2, 6), _int(g, 2, 4), _int(g, 2, 5)
    return {"query": torch.randn(b, d, h, w, generator=g), "key": torch.randn(b, d, h, w, generator=g)}


def _levels_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    b, side = _int(g, 1, 3), _int(g, 4, 6)
    shapes = [(_int(g, 3, 6), side * 2 ** (2 - k), (side + 1) * 2 ** (2 - k)) for k in range(_int(g, 2, 3))]
    features = [torch.randn(b, *s, generator=g) for s in shapes]
    restored = [f + 0.5 * torch.randn(f.shape, generator=g) for f in features]
    return {"features": features, "restored": restored, "size": (4 * side, 4 * (side + 1))}


def _anomaly_map(features: list[torch.Tensor], restored: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    return thfr.anomaly_map(features, restored, size, sigma=0.0)[0]


def _loss_levels_inputs(seed: int) -> dict[str, Any]:
    return {k: v for k, v in _levels_inputs(seed).items() if k != "size"}


register(Exercise(
    "thfr_image_nns", "02", "THFR Eq. 1", "my_image_nns",
    "The n most similar bank images of every query by cosine similarity of the flattened deepest level.",
    _image_nns, _nns_inputs, grad=("query",)))
register(Exercise(
    "thfr_nearest_others", "02", "THFR Eq. 1, training pairs", "my_nearest_others",
    "For every bank entry the n most similar *other* entries (the training templates).",
    _nearest_others, _others_inputs))
register(Exercise(
    "thfr_relation_feature", "03", "THFR Eq. 2", "my_relation_feature",
    "The bidirectional affinities between every input position and every template position.",
    thfr.relation_feature, _relation_inputs, grad=("query", "key")))
register(Exercise(
    "thfr_restoration_loss", "03", "THFR Eq. 3", "my_restoration_loss",
    "Sum over levels of the mean cosine distance between original and restored features.",
    thfr.restoration_loss, _loss_levels_inputs, grad=("restored",)))
register(Exercise(
    "thfr_anomaly_map", "03", "THFR Eq. 4-5", "my_anomaly_map",
    "Per-level cosine-distance maps, upsampled to the image size and summed (no smoothing).",
    _anomaly_map, _levels_inputs, grad=("restored",)))


# ---------------------------------------------------------------------------------- 04 · POUTA


def _hsg_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    b, d, d_deep, h, w = _int(g, 1, 3), _int(g, 2, 5), _int(g, 2, 5), _int(g, 2, 4), _int(g, 2, 4)
    module = _seeded_module(seed, lambda: pouta.SemanticGuidance(d_deep, d))
    return {"hsg": module, "f_c": torch.randn(b, d, 2 * h, 2 * w, generator=g),
            "deep": torch.randn(b, d_deep, h, w, generator=g)}


def _semantic_guidance(hsg: pouta.SemanticGuidance, f_c: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    return hsg(f_c, deep)


def _segmentation_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    shape = (_int(g, 1, 3), 1, _int(g, 4, 8), _int(g, 4, 8))
    return {"prob": 0.02 + 0.96 * torch.rand(shape, generator=g),
            "mask": (torch.rand(shape, generator=g) < 0.3).float()}


def _segmentation_loss(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return pouta.segmentation_loss(prob, mask, gamma=2.0, alpha=None)


def _score_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    maps = torch.rand(_int(g, 1, 4), _int(g, 8, 14), _int(g, 8, 14), generator=g)
    return {"maps": maps, "window": 2 * _int(g, 1, 3) + 1}


register(Exercise(
    "pouta_semantic_guidance", "04", "POUTA Eq. 2-4", "my_semantic_guidance",
    "HSG: weight a contrastive map by a spatial and a channel weight computed from the deeper map.",
    _semantic_guidance, _hsg_inputs, grad=("f_c", "deep")))
register(Exercise(
    "pouta_segmentation_loss", "04", "POUTA Eq. 5 / Eq. 7", "my_segmentation_loss",
    "Focal loss (gamma 2, no class weights) plus the L1 distance between predicted and true mask.",
    _segmentation_loss, _segmentation_inputs, grad=("prob",)))
register(Exercise(
    "pouta_image_score", "04", "POUTA §III-B, image score", "my_image_score",
    "The maximum of the window x window average pooling (stride 1, zero padding counted) of each map.",
    pouta.image_score, _score_inputs, grad=("maps",)))


# ------------------------------------------------------------------------------------ 05 · PRN


def _residual_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    b, k, c, h, w = _int(g, 2, 5), _int(g, 2, 5), _int(g, 2, 6), _int(g, 2, 4), _int(g, 2, 5)
    prototypes = torch.randn(k, c, h, w, generator=g)
    near = prototypes[torch.randint(k, (b,), generator=g)]
    return {"features": near + 0.7 * torch.randn(b, c, h, w, generator=g), "prototypes": prototypes}


def _nearest_residual(features: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mp = prn.MultiScalePrototypes(1)
    mp.assign([prototypes])
    residuals, index = mp([features])
    return residuals[0], index[:, 0]


def _attention_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    c, ph, pw = _int(g, 2, 4), _int(g, 1, 2), _int(g, 1, 2)
    size = (ph * _int(g, 2, 3), pw * _int(g, 2, 3))
    head = _seeded_module(seed, lambda: prn.PatchAttentionHead(c, size, (ph, pw)))
    return {"head": head, "x": torch.randn(_int(g, 1, 3), c, *size, generator=g)}


def _patch_attention(head: prn.PatchAttentionHead, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return head(x)


def _loss_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    shape = (_int(g, 1, 4), 1, _int(g, 4, 8), _int(g, 4, 8))
    return {"logits": 3 * torch.randn(shape, generator=g).clamp(-1.3, 1.3),
            "mask": (torch.rand(shape, generator=g) < 0.3).float()}


def _prn_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return prn.prn_loss(logits, mask, alpha=0.5, gamma=4.0, weight=5.0)["loss"]


register(Exercise(
    "prn_nearest_residual", "05", "PRN Eq. 1", "my_nearest_residual",
    "The nearest prototype of each feature map (L2 over the whole map) and the element-wise residual |F - P*|.",
    _nearest_residual, _residual_inputs, grad=("features",)))
register(Exercise(
    "prn_patch_attention", "05", "PRN Eq. 3", "my_patch_attention",
    "One MSA head: self-attention between the patches of a map, scaled by 1 / (C p_h p_w).",
    _patch_attention, _attention_inputs, grad=("x",)))
register(Exercise(
    "prn_loss", "05", "PRN Eq. 5", "my_prn_loss",
    "Smooth-L1 plus 5 x focal loss (alpha 0.5, gamma 4) between sigmoid(logits) and the mask.",
    _prn_loss, _loss_inputs, grad=("logits",)))


# ------------------------------------------------------------------------------------ 06 · FOD


def _rbf_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    h, w, heads = _int(g, 2, 4), _int(g, 2, 5), _int(g, 1, 3)
    pos = fod.grid_positions(h, w)
    keys = pos[torch.randperm(h * w, generator=g)[: _int(g, 2, h * w)]]
    sigma = 0.3 + 1.7 * torch.rand(_int(g, 1, 2), heads, h * w, 2, generator=g)
    return {"sigma": sigma, "distances": fod.squared_axis_distances(pos, keys)}


def _distribution_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    shape = (_int(g, 1, 3), _int(g, 2, 4), _int(g, 3, 9))
    p, q = (torch.softmax(2 * torch.randn(shape, generator=g), -1) for _ in range(2))
    return {"p": p, "q": q}


def _patches_inputs(seed: int) -> dict[str, Any]:
    g = _gen(seed)
    x = torch.randn(_int(g, 1, 3), _int(g, 3, 9), _int(g, 2, 6), generator=g)
    return {"x": x, "x_hat": x + 0.5 * torch.randn(x.shape, generator=g)}


register(Exercise(
    "fod_rbf_target", "06", "FOD Eq. 5", "my_rbf_target",
    "RBF target correlation over the patch grid with one width per axis, each row normalised to sum 1.",
    fod.rbf_target, _rbf_inputs, grad=("sigma",)))
register(Exercise(
    "fod_symmetric_kl", "06", "FOD Eq. 6", "my_symmetric_kl",
    "Row-wise KL(p||q) + KL(q||p) with log(x + 1e-4), as in the official code.",
    fod.symmetric_kl, _distribution_inputs, grad=("p", "q")))
register(Exercise(
    "fod_reconstruction_discrepancy", "06", "FOD Eq. 3 / Eq. 12", "my_reconstruction_discrepancy",
    "Per patch: the L2 distance plus the cosine distance between features and reconstruction.",
    fod.reconstruction_discrepancy, _patches_inputs, grad=("x", "x_hat")))
