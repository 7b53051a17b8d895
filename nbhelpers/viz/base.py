"""Plot plumbing: pyplot without touching the backend, image / mask / map conversion, denormalisation."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


MASK_COLOR = "red"


def _plt():
    import matplotlib.pyplot as plt  # importing pyplot does not select a backend by itself

    return plt


def _style():
    import seaborn as sns

    return sns.axes_style("white")


def _finish(fig):
    _plt().close(fig)
    return fig


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device / dtype, also bf16) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _is_chw(a: np.ndarray) -> bool:
    return a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4)


def to_display(image: Any) -> np.ndarray:
    """Any supported image -> ``float32[H, W, 3]`` or ``float32[H, W]`` in [0, 1] for ``imshow``.

    uint8 is divided by 255; floats are clipped to [0, 1] (use :func:`denormalize` first for
    backbone-normalised tensors); CHW is transposed to HWC; a path is read with ``read_image``.
    """
    if isinstance(image, (str, Path)):
        from nbhelpers.data.io import read_image

        image = read_image(Path(image))
    a = to_numpy(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if _is_chw(a):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot display an image of shape {a.shape}; expected HW, HWC or CHW.")
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / (65535.0 if a.max(initial=0) > 255 else 255.0)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _to_mask(mask: Any, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """A mask (array, tensor, path) -> ``bool[H, W]`` resized (nearest) to ``shape``."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        from nbhelpers.data.io import read_mask

        mask = read_mask(Path(mask))
    m = to_numpy(mask)
    m = np.squeeze(m)
    if m.ndim == 3:  # several region masks: union
        m = m.any(axis=0) if m.shape[0] < m.shape[-1] else m.any(axis=-1)
    m = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m > 0
    if shape is not None and m.shape != tuple(shape):
        m = _resize(m.astype(np.float32), shape, order=0) > 0.5
    return m


def _to_map(x: Any) -> np.ndarray:
    m = np.squeeze(to_numpy(x)).astype(np.float32)
    if m.ndim != 2:
        raise ValueError(f"anomaly maps must be [H, W] (or [1, H, W]); got shape {to_numpy(x).shape}.")
    return m


def _resize(a: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    from skimage.transform import resize

    return resize(a, shape, order=order, preserve_range=True, anti_aliasing=False, mode="edge").astype(np.float32)


def denormalize(image: Any, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Undo backbone normalisation: ``[3, H, W]`` (or ``[B, 3, H, W]``) -> float HWC in [0, 1].

    ``x * std + mean`` per channel, clipped to [0, 1]; batches give ``[B, H, W, 3]``. For the packaged
    EfficientNet-Lite0 use ``mean=std=(0.5, 0.5, 0.5)``.
    """
    a = to_numpy(image).astype(np.float32)
    if a.ndim not in (3, 4) or a.shape[-3] != len(mean):
        raise ValueError(f"denormalize expects [C, H, W] or [B, C, H, W] with C={len(mean)}; got {a.shape}.")
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    out = np.clip(a * s + m, 0.0, 1.0)
    return np.moveaxis(out, -3, -1)


def _show(ax, image: np.ndarray, **kwargs):
    if image.ndim == 2:
        kwargs.setdefault("cmap", "gray")
        kwargs.setdefault("vmin", 0.0)
        kwargs.setdefault("vmax", 1.0)
    im = ax.imshow(image, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _contour(ax, mask: np.ndarray | None, color: str = MASK_COLOR, linewidth: float = 1.2):
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=linewidth)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(int(ncols), n))
    return int(np.ceil(n / ncols)), ncols
