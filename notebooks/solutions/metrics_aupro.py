"""Notebook 01 · AUPRO by brute force: one threshold at a time."""
import numpy as np
from scipy import ndimage


def my_aupro(maps, masks, fpr_limit):
    """Normalised area under the PRO curve up to ``fpr_limit``.

    ``maps: float[N, H, W]``, ``masks: bool[N, H, W]`` -> ``float`` in [0, 1]. Every distinct map
    value is a threshold (pixel predicted anomalous when ``map >= t``); the curve runs from (0, 0)
    through (FPR over all normal pixels, mean overlap over all 8-connected regions) and is
    interpolated linearly at ``fpr_limit``; area by the trapezoid rule, divided by the limit.
    """
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks) > 0.5
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    normal = ~masks
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        fpr.append(np.count_nonzero(predicted & normal) / np.count_nonzero(normal))
        pro.append(np.mean([np.count_nonzero(predicted[i] & r) / np.count_nonzero(r) for i, r in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    inside = int(np.count_nonzero(fpr <= fpr_limit))
    x, y = fpr[:inside], pro[:inside]
    if x[-1] < fpr_limit:  # interpolate the curve at the limit
        x1, y1 = fpr[inside], pro[inside]
        y = np.append(y, y[-1] + (y1 - y[-1]) * (fpr_limit - x[-1]) / (x1 - x[-1]))
        x = np.append(x, fpr_limit)
    area = np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))
    return float(area / fpr_limit)
