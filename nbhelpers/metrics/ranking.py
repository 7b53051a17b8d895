"""Image- and pixel-level ranking metrics: AUROC, AP, F1-max."""
from __future__ import annotations

from typing import Any

import numpy as np

from nbhelpers.metrics.inputs import NAN, _labels_1d, _maps_3d, _masks_3d, _scores_1d, _two_classes


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
