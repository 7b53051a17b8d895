"""Region overlap metrics: the PRO / sPRO curves and their normalised areas AUPRO (MVTec AD) and AUsPRO (MVTec LOCO AD)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from nbhelpers.metrics.inputs import _STRUCTURE_STACK, NAN, _check_limit, _maps_3d, _masks_3d, _to_numpy


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
