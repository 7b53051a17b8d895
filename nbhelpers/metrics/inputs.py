"""Input conversion and validation of the metrics (one clear ValueError per malformed input)."""
from __future__ import annotations

from typing import Any

import numpy as np

NAN = float("nan")


# 8-connectivity inside each image (3x3 ones, as the official MVTec AD evaluation), no connection
# between images of the stack: labelling the whole [N, H, W] stack at once with this structure
# equals labelling each image on its own with ``np.ones((3, 3))``.
_STRUCTURE_STACK = np.zeros((3, 3, 3), dtype=int)


_STRUCTURE_STACK[1] = 1


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
