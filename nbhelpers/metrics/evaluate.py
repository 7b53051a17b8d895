"""All metrics at once (evaluate), and MVTec LOCO's logical / structural subsets (evaluate_loco)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nbhelpers.metrics.inputs import NAN, _check_limit, _labels_1d, _maps_3d, _masks_3d, _scores_1d
from nbhelpers.metrics.pro import RegionList, aupro, auspro
from nbhelpers.metrics.ranking import image_ap, image_auroc, image_f1_max, pixel_ap, pixel_auroc

#: Metric key -> pretty name (column headers of result tables).
METRIC_NAMES: dict[str, str] = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "image_f1_max": "Image F1-max",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "aupro": "AUPRO (FPR<=0.3)",
    "auspro": "AUsPRO (FPR<=0.05)",
}


#: Keys of :func:`evaluate_loco` -> pretty names.
LOCO_METRIC_NAMES: dict[str, str] = {
    "image_auroc_logical": "Image AUROC logical",
    "image_auroc_structural": "Image AUROC structural",
    "image_auroc_mean": "Image AUROC mean(L, S)",
    "auspro_logical": "AUsPRO logical",
    "auspro_structural": "AUsPRO structural",
    "auspro_mean": "AUsPRO mean(L, S)",
}


#: MVTec LOCO AD's anomaly subsets: key suffix -> the test folder (``Sample.defect``) that holds them.
LOCO_SUBSETS: dict[str, str] = {"logical": "logical_anomalies", "structural": "structural_anomalies"}


def evaluate(
    scores: Any,
    labels: Any,
    maps: Any = None,
    masks: Any = None,
    regions: RegionList | None = None,
    pro_limit: float = 0.3,
    spro_limit: float = 0.05,
) -> dict[str, float]:
    """All metrics that the given inputs allow.

    Args:
        scores: ``float[N]`` image scores.
        labels: ``{0, 1}[N]`` image labels.
        maps: optional ``float[N, H, W]`` (or ``[N, 1, H, W]``) anomaly maps.
        masks: optional ``[N, H, W]`` pixel ground truth; needs ``maps``. Without masks (datasets
            that ship none) the pixel metrics are left out.
        regions: optional per-image ``(mask, saturation_pixels)`` lists for AUsPRO (see
            :func:`spro_curve`); needs ``maps``.
        pro_limit: FPR limit of AUPRO.
        spro_limit: FPR limit of AUsPRO.

    Returns:
        ``{"image_auroc", "image_ap", "image_f1_max"}`` plus ``{"pixel_auroc", "pixel_ap", "aupro"}``
        when maps and masks are given, plus ``"auspro"`` when regions are given. Plain floats,
        ``nan`` where a metric is undefined (e.g. one class only). Pretty names: :data:`METRIC_NAMES`.

    Raises:
        ValueError: when shapes disagree (the message names both shapes) or inputs are malformed.
    """
    s = _scores_1d(scores, "scores")
    n = s.shape[0]
    y = _labels_1d(labels, n, "labels")
    _check_limit(pro_limit, "pro_limit")
    _check_limit(spro_limit, "spro_limit")
    out = {
        "image_auroc": image_auroc(s, y),
        "image_ap": image_ap(s, y),
        "image_f1_max": image_f1_max(s, y),
    }
    m = None
    if maps is not None:
        m = _maps_3d(maps, "maps")
        if m.shape[0] != n:
            raise ValueError(f"maps has {m.shape[0]} images (shape {tuple(m.shape)}) but scores has {n}.")
    elif masks is not None or regions is not None:
        raise ValueError("masks/regions were given without maps: pass the anomaly maps too.")
    if masks is not None:
        gt = _masks_3d(masks, m.shape, "masks")
        out["pixel_auroc"] = pixel_auroc(m, gt)
        out["pixel_ap"] = pixel_ap(m, gt)
        out["aupro"] = aupro(m, gt, fpr_limit=pro_limit)
    if regions is not None:
        out["auspro"] = auspro(m, regions, fpr_limit=spro_limit)
    return {k: float(v) for k, v in out.items()}


def evaluate_loco(scores: Any, labels: Any, defects: Sequence[str], maps: Any = None,
                  regions: RegionList | None = None, spro_limit: float = 0.05) -> dict[str, float]:
    """MVTec LOCO AD's protocol (Bergmann et al., IJCV 2022): the logical and the structural
    anomalies evaluated apart, each subset against *all* good test images, and the mean of the two.

    Args:
        scores: ``float[N]`` image scores. labels: ``{0, 1}[N]``.
        defects: ``N`` test-folder names (``Sample.defect``): ``good``, ``logical_anomalies`` or
            ``structural_anomalies`` (see :data:`LOCO_SUBSETS`).
        maps, regions: optional, as in :func:`evaluate`; with both the AUsPRO of each subset too.
        spro_limit: FPR limit of AUsPRO.

    Returns:
        ``image_auroc_logical``, ``image_auroc_structural``, ``image_auroc_mean`` (plus the same three
        for ``auspro`` with maps and regions; pretty names: :data:`LOCO_METRIC_NAMES`); ``nan`` for a subset without images, and for the mean
        when either subset is ``nan``.

    Raises:
        ValueError: ``defects`` does not have one entry per score.
    """
    s = _scores_1d(scores, "scores")
    y = _labels_1d(labels, s.shape[0], "labels")
    d = np.asarray(list(defects), dtype=object)
    if d.shape != s.shape:
        raise ValueError(f"defects has {d.shape[0]} entries but scores has {s.shape[0]}.")
    m = _maps_3d(maps, "maps") if maps is not None and regions is not None else None
    out: dict[str, float] = {}
    for key, folder in LOCO_SUBSETS.items():
        keep = (y == 0) | (d == folder)
        has_subset = bool(np.any(keep & (y == 1)))
        out[f"image_auroc_{key}"] = image_auroc(s[keep], y[keep]) if has_subset else NAN
        if m is not None:
            idx = np.flatnonzero(keep)
            out[f"auspro_{key}"] = auspro(m[idx], [regions[i] for i in idx], spro_limit) if has_subset else NAN
    for metric in ("image_auroc", "auspro"):
        if f"{metric}_logical" in out:
            out[f"{metric}_mean"] = (out[f"{metric}_logical"] + out[f"{metric}_structural"]) / 2
    return {k: float(v) for k, v in out.items()}
