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

from nbhelpers.metrics.evaluate import LOCO_METRIC_NAMES, LOCO_SUBSETS, METRIC_NAMES, evaluate, evaluate_loco
from nbhelpers.metrics.inputs import NAN, _STRUCTURE_STACK
from nbhelpers.metrics.pro import RegionList, aupro, auspro, pro_curve, saturation_pixels, spro_curve
from nbhelpers.metrics.ranking import image_ap, image_auroc, image_f1_max, pixel_ap, pixel_auroc

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
    "NAN",
    "_STRUCTURE_STACK",
    "RegionList",
]
