"""Anomaly detection metrics: image/pixel AUROC, AP, F1-max, AUPRO and AUsPRO.

Every function takes NumPy arrays (or torch tensors, converted with
``.detach().float().cpu().numpy()``) and returns a plain ``float``. Scores are used as they are:
no sigmoid, no normalisation. AUROC/AP/PRO only depend on the *order* of the scores, so any strictly
increasing transform of the scores leaves them unchanged.

Conventions
-----------
* Image level: ``scores[N]`` (higher = more anomalous) and ``labels[N]`` in ``{0, 1}``.
* Pixel level: ``maps[N, H, W]`` and ``masks[N, H, W]``; a mask pixel is anomalous when its value
  is ``> 0.5`` (bool, ``{0, 1}`` and ``{0, 255}`` masks all work). ``[N, 1, H, W]`` inputs (the batch
  layout) are accepted and squeezed.
* A metric that is undefined for the input (only one class present, no ground-truth region, no
  normal pixel ...) returns ``float("nan")`` instead of raising; malformed input (wrong shapes, NaN
  scores, labels outside ``{0, 1}``) raises a :class:`ValueError` that names the problem.

AUPRO (MVTec AD) and AUsPRO (MVTec LOCO AD) are computed exactly, over *every* distinct threshold,
with one global descending sort of the pixel scores: walking down the sorted scores, each normal
pixel adds ``1 / n_negatives`` to the FPR and each region pixel adds its share to the mean
(saturated) per-region overlap; the cumulative sums at the last position of every distinct score
are the curve points (ties: ``score >= threshold``). Pixels scoring below every threshold that can
matter for the FPR limit are found by a partition and left out of the sort (same result, faster). The curve starts at ``(0, 0)``, is linearly interpolated at the FPR limit,
integrated with the trapezoid rule up to the limit and divided by the limit, so the result lies in
``[0, 1]`` (1 = every region fully found before any false positive).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "METRIC_NAMES",
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pro_curve",
    "aupro",
    "spro_curve",
    "auspro",
    "saturation_pixels",
    "evaluate",
    "LOCO_METRIC_NAMES",
    "LOCO_SUBSETS",
    "evaluate_loco",
]

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

NAN = float("nan")

# 8-connectivity inside each image (3x3 ones, as the official MVTec AD evaluation), no connection
# between images of the stack: labelling the whole [N, H, W] stack at once with this structure
# equals labelling each image on its own with ``np.ones((3, 3))``.
_STRUCTURE_STACK = np.zeros((3, 3, 3), dtype=int)
_STRUCTURE_STACK[1] = 1


# ----------------------------------------------------------------------------------------------
# input conversion and validation
# ----------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array-like; torch tensors go through ``.detach().float().cpu().numpy()``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _scores_1d(scores: Any, name: str = "scores") -> np.ndarray:
    arr = _to_numpy(scores)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(arr.shape)}.")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contain NaN values; fix the model output before evaluating.")
    return arr


def _labels_1d(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    arr = _to_numpy(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(arr.shape)}.")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but scores has {n}: they must match.")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must be 0 (normal) or 1 (anomalous); found {bad.tolist()}.")
    return arr.astype(bool)


def _maps_3d(maps: Any, name: str = "maps") -> np.ndarray:
    """``[N, H, W]`` float array (``[N, 1, H, W]`` is squeezed); NaN raises."""
    arr = _to_numpy(maps)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] (or [N, 1, H, W]), got shape {tuple(arr.shape)}.")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contain NaN values; fix the model output before evaluating.")
    return arr


def _masks_3d(masks: Any, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    """Boolean ``[N, H, W]`` ground truth (value ``> 0.5``) with the same shape as the maps."""
    arr = _to_numpy(masks)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(arr.shape)} does not match maps shape {tuple(shape)}.")
    return arr > 0.5


def _check_limit(limit: float, name: str) -> float:
    limit = float(limit)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {limit}.")
    return limit


def _two_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and not bool(labels.all())


# ----------------------------------------------------------------------------------------------
# image and pixel level
# ----------------------------------------------------------------------------------------------
def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of image scores.

    Args:
        scores: ``float[N]`` anomaly scores, higher = more anomalous (raw, no sigmoid needed).
        labels: ``{0, 1}[N]`` ground truth, 1 = anomalous.

    Returns:
        AUROC in ``[0, 1]`` (ties count one half); ``nan`` when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    s = _scores_1d(scores)
    y = _labels_1d(labels, s.shape[0])
    if not _two_classes(y):
        return NAN
    return float(roc_auc_score(y, s))


def image_ap(scores: Any, labels: Any) -> float:
    """Average precision (area under the precision-recall curve, sklearn's step definition).

    Args:
        scores: ``float[N]`` anomaly scores, higher = more anomalous.
        labels: ``{0, 1}[N]`` ground truth, 1 = anomalous (the positive class).

    Returns:
        AP in ``[0, 1]``; ``nan`` when only one class is present.
    """
    from sklearn.metrics import average_precision_score

    s = _scores_1d(scores)
    y = _labels_1d(labels, s.shape[0])
    if not _two_classes(y):
        return NAN
    return float(average_precision_score(y, s))


def image_f1_max(scores: Any, labels: Any) -> float:
    """Best F1 score over all thresholds ``score >= t`` (the "F1-max" of VisA/anomalib papers).

    Computed from :func:`sklearn.metrics.precision_recall_curve`, which evaluates every distinct
    score as a threshold: ``F1 = 2 P R / (P + R)`` (0 where ``P + R = 0``), maximised.

    Args:
        scores: ``float[N]`` anomaly scores, higher = more anomalous.
        labels: ``{0, 1}[N]`` ground truth, 1 = anomalous.

    Returns:
        F1-max in ``[0, 1]``; ``nan`` when only one class is present.
    """
    from sklearn.metrics import precision_recall_curve

    s = _scores_1d(scores)
    y = _labels_1d(labels, s.shape[0])
    if not _two_classes(y):
        return NAN
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def pixel_auroc(maps: Any, masks: Any) -> float:
    """AUROC over all pixels of all images.

    Args:
        maps: ``float[N, H, W]`` anomaly maps (or ``[N, 1, H, W]``).
        masks: ``[N, H, W]`` ground truth, pixel anomalous where ``> 0.5``; same shape as ``maps``.

    Returns:
        Pixel AUROC; ``nan`` when all pixels are normal (or all anomalous).
    """
    from sklearn.metrics import roc_auc_score

    m = _maps_3d(maps)
    gt = _masks_3d(masks, m.shape)
    y = gt.ravel()
    if not _two_classes(y):
        return NAN
    return float(roc_auc_score(y, m.ravel()))


def pixel_ap(maps: Any, masks: Any) -> float:
    """Average precision over all pixels of all images (shapes as :func:`pixel_auroc`).

    Returns:
        Pixel AP; ``nan`` when all pixels are normal (or all anomalous).
    """
    from sklearn.metrics import average_precision_score

    m = _maps_3d(maps)
    gt = _masks_3d(masks, m.shape)
    y = gt.ravel()
    if not _two_classes(y):
        return NAN
    return float(average_precision_score(y, m.ravel()))


# ----------------------------------------------------------------------------------------------
# PRO / sPRO curves
# ----------------------------------------------------------------------------------------------
def _descending(flat: np.ndarray, negative: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels that shape the curve up to FPR ``limit``, by descending score.

    Returns ``order`` (flat pixel indices, descending score) and ``last`` (True at the last position
    of each distinct score: the curve points, ties resolved as ``score >= threshold``).

    Only the pixels scoring at least the ``m``-th highest negative score, ``m = floor(limit * n_neg)
    + 2``, are sorted (found with an O(n) partition): their curve is exactly the full curve up to the
    first point whose FPR exceeds ``limit``, which is all that the interpolated area needs. With 100
    maps of 256x256 and limit 0.3 this sorts about a third of the pixels.
    """
    n_neg = int(np.count_nonzero(negative))
    m = math.floor(limit * n_neg) + 2
    if limit < 1.0 and m <= n_neg:
        neg_scores = flat[negative]
        threshold = np.partition(neg_scores, n_neg - m)[n_neg - m]
        del neg_scores
        idx = np.flatnonzero(flat >= threshold)
        order = idx[np.argsort(flat[idx])[::-1]]
    else:
        order = np.argsort(flat)[::-1]
    s = flat[order]
    last = np.empty(s.shape[0], dtype=bool)
    np.not_equal(s[1:], s[:-1], out=last[:-1])
    last[-1] = True
    return order, last


def _finish_curve(fp_cum: np.ndarray, overlap_cum: np.ndarray, last: np.ndarray,
                  n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    fpr = np.concatenate(([0.0], fp_cum[last] / n_neg))
    ovl = np.concatenate(([0.0], np.clip(overlap_cum[last], 0.0, 1.0)))
    return np.clip(fpr, 0.0, 1.0), ovl


def _area_to_limit(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(fpr)`` on ``[0, limit]`` divided by ``limit``.

    ``fpr`` is non-decreasing from 0 and reaches ``limit`` (the curve may stop after the first point
    beyond ``limit``). Where ``limit`` falls between two points, ``y`` is linearly interpolated
    between the last point ``<= limit`` and the next one.
    """
    n = int(np.searchsorted(fpr, limit, side="right"))  # points with fpr <= limit
    x, v = fpr[:n], y[:n]
    area = float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(x)))
    if x[-1] < limit:
        x0, y0, x1, y1 = fpr[n - 1], y[n - 1], fpr[n], y[n]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_lim) * (limit - x0)
    return min(max(area / limit, 0.0), 1.0)


def _pro_curve(m: np.ndarray, gt: np.ndarray, limit: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """PRO curve (complete with ``limit=1``, else up to the first point beyond ``limit``)."""
    labels, n_regions = ndimage.label(gt, structure=_STRUCTURE_STACK)
    n_neg = int(gt.size - np.count_nonzero(gt))
    if n_regions == 0 or n_neg == 0:
        return None
    # Each pixel of region r adds 1 / (area_r * n_regions) to the mean overlap.
    areas = np.bincount(labels.ravel()).astype(np.float64)
    per_label = np.zeros_like(areas)
    per_label[1:] = 1.0 / (areas[1:] * n_regions)
    labels = labels.ravel()
    order, last = _descending(m.ravel(), labels == 0, limit)
    labels_sorted = labels[order]
    del labels, order
    fp_cum = np.cumsum(labels_sorted == 0)
    overlap_cum = np.cumsum(per_label[labels_sorted])
    return _finish_curve(fp_cum, overlap_cum, last, n_neg)


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Full per-region-overlap curve of MVTec AD at every distinct threshold.

    Regions are the 8-connected components (3x3 ones structure, as in the official MVTec AD
    evaluation) of each image's mask. A pixel is predicted anomalous when ``map >= threshold``.

    Args:
        maps: ``float[N, H, W]`` anomaly maps.
        masks: ``[N, H, W]`` ground truth (``> 0.5`` = anomalous).

    Returns:
        ``(fpr[K], pro[K])``: FPR over all normal pixels of all images and mean overlap over all
        regions, starting at ``(0, 0)`` and ending at ``(1, 1)``; ``fpr`` is non-decreasing.

    Raises:
        ValueError: when there is no ground-truth region or no normal pixel (the curve is undefined).
    """
    m = _maps_3d(maps)
    curve = _pro_curve(m, _masks_3d(masks, m.shape))
    if curve is None:
        raise ValueError("PRO curve undefined: masks need at least one anomalous and one normal pixel.")
    return curve


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD AUPRO, default FPR 0.3).

    See :func:`pro_curve` for the curve. The curve is interpolated at ``fpr_limit``, integrated with
    the trapezoid rule and divided by ``fpr_limit``, so the result is in ``[0, 1]``. Exact (all
    distinct thresholds); 100 maps of 256x256 take well under a second and a few hundred MB.

    Args:
        maps: ``float[N, H, W]`` anomaly maps (raw scores, no sigmoid needed).
        masks: ``[N, H, W]`` ground truth (``> 0.5`` = anomalous).
        fpr_limit: integration limit in ``(0, 1]``.

    Returns:
        AUPRO in ``[0, 1]``; ``nan`` when there is no ground-truth region or no normal pixel.
    """
    limit = _check_limit(fpr_limit, "fpr_limit")
    m = _maps_3d(maps)
    curve = _pro_curve(m, _masks_3d(masks, m.shape), limit)
    if curve is None:
        return NAN
    return _area_to_limit(*curve, limit)


RegionList = Sequence[Sequence[tuple[Any, "float | None"]]]


def _spro_curve(m: np.ndarray, regions: RegionList, limit: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """sPRO curve (complete with ``limit=1``, else up to the first point beyond ``limit``)."""
    n, h, w = m.shape
    if len(regions) != n:
        raise ValueError(f"regions has {len(regions)} entries but maps has {n} images: they must match.")
    hw = h * w
    good = np.array([len(r) == 0 for r in regions], dtype=bool)
    n_neg = int(good.sum()) * hw
    if n_neg == 0:
        order, last = np.arange(n * hw), np.ones(n * hw, dtype=bool)
    else:
        order, last = _descending(m.ravel(), np.repeat(good, hw), limit)
    n_sorted = order.shape[0]
    rank = np.full(n * hw, n_sorted, dtype=np.int64)  # pixels left out of the sort rank last
    rank[order] = np.arange(n_sorted)

    positions: list[np.ndarray] = []
    shares: list[np.ndarray] = []
    n_regions = 0
    for i, image_regions in enumerate(regions):
        for j, item in enumerate(image_regions):
            try:
                mask, sat = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"regions[{i}][{j}] must be a (mask, saturation_pixels) pair, got {type(item).__name__}."
                ) from None
            mk = _to_numpy(mask)
            if tuple(mk.shape) != (h, w):
                raise ValueError(
                    f"regions[{i}][{j}] mask shape {tuple(mk.shape)} does not match map shape {(h, w)}."
                )
            idx = np.flatnonzero(mk > 0.5)
            area = idx.shape[0]
            if area == 0:
                warnings.warn(f"regions[{i}][{j}] has an empty mask; it is ignored by sPRO.", stacklevel=3)
                continue
            sat = float(area) if sat is None else float(sat)
            if not (math.isfinite(sat) and sat > 0):
                raise ValueError(f"regions[{i}][{j}] saturation must be a positive number, got {sat}.")
            sat = min(sat, float(area))
            # The region's k-th pixel (k = 0, 1, ...) along the global order raises its sPRO from
            # min(k, sat)/sat to min(k + 1, sat)/sat: a share clip(sat - k, 0, 1)/sat, zero after
            # the ceil(sat)-th pixel, which keeps the cap at 1 exact.
            n_eff = min(area, math.ceil(sat))
            r = np.sort(rank[idx + i * hw])[:n_eff]
            share = np.clip(sat - np.arange(n_eff, dtype=np.float64), 0.0, 1.0) / sat
            sorted_ = r < n_sorted
            positions.append(r[sorted_])
            shares.append(share[sorted_])
            n_regions += 1
    if n_regions == 0 or n_neg == 0:
        return None
    gain = np.bincount(np.concatenate(positions), weights=np.concatenate(shares), minlength=n_sorted)
    overlap_cum = np.cumsum(gain / n_regions)
    del gain, rank
    fp_cum = np.cumsum(good[order // hw])
    return _finish_curve(fp_cum, overlap_cum, last, n_neg)


def spro_curve(maps: Any, regions: RegionList) -> tuple[np.ndarray, np.ndarray]:
    """Full saturated-per-region-overlap curve of MVTec LOCO AD at every distinct threshold.

    Args:
        maps: ``float[N, H, W]`` anomaly maps.
        regions: ``regions[i]`` lists image ``i``'s ground-truth regions as ``(mask, saturation)``
            pairs: ``mask`` ``[H, W]`` (``> 0.5`` = region; bool or tensor) and ``saturation`` the
            number of pixels at which the region counts as fully found (see
            :func:`saturation_pixels`; ``None`` = its area, i.e. plain PRO; values above the area
            are capped at the area, as in MVTec LOCO). Regions may overlap. Images with an empty
            list are the good (defect-free) images. Empty region masks are ignored with a warning.

    Returns:
        ``(fpr[K], spro[K])`` from ``(0, 0)`` to ``(1, 1)``. ``sPRO`` of a region at a threshold is
        ``min(overlap_pixels / saturation, 1)``, averaged over all regions; the FPR is computed on
        the pixels of the good images only (as in the official MVTec LOCO evaluation).

    Raises:
        ValueError: malformed regions, or no region / no good image (the curve is undefined).
    """
    curve = _spro_curve(_maps_3d(maps), regions)
    if curve is None:
        raise ValueError("sPRO curve undefined: need at least one non-empty region and one good image.")
    return curve


def auspro(maps: Any, regions: RegionList, fpr_limit: float = 0.05) -> float:
    """Normalised area under the sPRO curve up to ``fpr_limit`` (MVTec LOCO AD, default FPR 0.05).

    Args:
        maps: ``float[N, H, W]`` anomaly maps (raw scores).
        regions: per image a list of ``(mask[H, W], saturation_pixels)``; empty list = good image.
            See :func:`spro_curve`.
        fpr_limit: integration limit in ``(0, 1]``.

    Returns:
        AUsPRO in ``[0, 1]``; ``nan`` when there is no region or no good image.
    """
    limit = _check_limit(fpr_limit, "fpr_limit")
    curve = _spro_curve(_maps_3d(maps), regions, limit)
    if curve is None:
        return NAN
    return _area_to_limit(*curve, limit)


def saturation_pixels(region: Any, mask: Any = None, scale: float = 1.0) -> float:
    """Saturation threshold of a :class:`~nbhelpers.data.records.Region`, in pixels of ``mask``.

    * ``region.saturation is None``: the region's area (plain PRO).
    * ``region.relative``: ``saturation * area``.
    * absolute: ``min(saturation * scale, area)``. MVTec LOCO gives absolute thresholds in pixels
      of the *native* mask resolution, so when ``mask`` was resized pass
      ``scale = (h * w) / (H_native * W_native)``, the area ratio of the resized to the native mask.

    The result never exceeds the area (as in MVTec LOCO).

    Args:
        region: a ``Region`` record (``saturation``, ``relative``, ``mask`` path).
        mask: ``[H, W]`` region mask at the evaluation resolution (``> 0.5`` = region); ``None``
            reads ``region.mask`` from disk at its native resolution.
        scale: area ratio resized / native, only used for absolute thresholds.

    Returns:
        Saturation in pixels (``0.0`` for an empty mask).
    """
    if mask is None:
        from nbhelpers.data.io import read_mask

        mask = read_mask(Path(region.mask))
    area = float(np.count_nonzero(_to_numpy(mask) > 0.5))
    sat = region.saturation
    if sat is None:
        return area
    sat = float(sat)
    if not (math.isfinite(sat) and sat > 0):
        raise ValueError(f"{region.mask}: saturation must be a positive number, got {sat}.")
    if region.relative:
        return min(sat * area, area)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive area ratio, got {scale}.")
    return min(sat * float(scale), area)


# ----------------------------------------------------------------------------------------------
# all at once
# ----------------------------------------------------------------------------------------------
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
