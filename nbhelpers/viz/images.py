"""Images with ground truth and anomaly maps: sample grids, overlays, feature maps, heat-map grids."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nbhelpers.viz.base import (
    _contour,
    _finish,
    _grid,
    _plt,
    _resize,
    _show,
    _style,
    _to_map,
    _to_mask,
    to_display,
    to_numpy,
)


def sample_grid(images: Sequence[Any], masks: Sequence[Any] | None = None, titles: Sequence[str] | None = None,
                ncols: int = 6, size: float = 2.0, suptitle: str | None = None):
    """A grid of images with the ground-truth mask contours drawn in red.

    Args:
        images: uint8 HWC, float HWC in [0, 1], CHW tensors/arrays, grayscale HW, or image paths.
        masks: one entry per image (``None`` entries allowed) or ``None``.
        titles: one title per image.
        ncols: columns of the grid; size: inches per panel.
    """
    plt = _plt()
    images = list(images)
    if not images:
        raise ValueError("sample_grid: no images given.")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"sample_grid: {len(masks)} masks for {len(images)} images.")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"sample_grid: {len(titles)} titles for {len(images)} images.")
    nrows, ncols = _grid(len(images), ncols)
    with _style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                                 squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= len(images):
                ax.axis("off")
                continue
            img = to_display(images[k])
            _show(ax, img)
            if masks is not None:
                _contour(ax, _to_mask(masks[k], img.shape[:2]))
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=9)
        if suptitle:
            fig.suptitle(suptitle)
        fig.tight_layout()
    return _finish(fig)


def overlay_maps(images: Sequence[Any], maps: Sequence[Any], masks: Sequence[Any] | None = None,
                 scores: Sequence[float] | None = None, titles: Sequence[str] | None = None,
                 vmin: float | None = None, vmax: float | None = None, cmap: str = "jet",
                 alpha: float = 0.5, size: float = 2.4):
    """Rows of ``image | anomaly-map overlay | ground-truth mask`` on ONE fixed colour scale.

    ``vmin``/``vmax`` default to the min / max over all given maps, so colours are comparable
    across rows (one colorbar for the whole figure); fix them to compare several figures. Maps of
    another resolution are resized (bilinear) to their image. Without ``masks`` the mask column is
    left out; mask contours are also drawn on the overlay. The colour limits used are stored on
    ``fig.clim_``.
    """
    plt = _plt()
    from matplotlib import cm, colors

    images, maps = list(images), list(maps)
    if len(images) != len(maps) or not images:
        raise ValueError(f"overlay_maps: need as many maps as images (got {len(images)} and {len(maps)}).")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"overlay_maps: {len(masks)} masks for {len(images)} images.")
    disp = [to_display(im) for im in images]
    mps = [_to_map(m) for m in maps]
    finite = np.concatenate([m[np.isfinite(m)].ravel() for m in mps])  # scale of the maps as given
    mps = [m if m.shape == d.shape[:2] else _resize(m, d.shape[:2]) for m, d in zip(mps, disp)]
    lo = float(vmin) if vmin is not None else float(finite.min()) if finite.size else 0.0
    hi = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
    if hi <= lo:
        hi = lo + 1e-6
    norm = colors.Normalize(vmin=lo, vmax=hi)
    ncols = 3 if masks is not None else 2
    n = len(images)
    with _style():
        fig, axes = plt.subplots(n, ncols, figsize=(size * ncols + 0.8, size * n), squeeze=False)
        for r in range(n):
            mask = _to_mask(masks[r], disp[r].shape[:2]) if masks is not None else None
            ax = axes[r, 0]
            _show(ax, disp[r])
            ax.set_title(str(titles[r]) if titles is not None else "image", fontsize=9)
            ax = axes[r, 1]
            _show(ax, disp[r])
            ax.imshow(mps[r], cmap=cmap, norm=norm, alpha=alpha)
            _contour(ax, mask, color="white")
            ax.set_title("anomaly map" + (f"  score={float(scores[r]):.3g}" if scores is not None else ""),
                         fontsize=9)
            if masks is not None:
                _show(axes[r, 2], mask.astype(np.float32) if mask is not None else np.zeros(disp[r].shape[:2]))
                axes[r, 2].set_title("ground truth", fontsize=9)
        fig.tight_layout()
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.8,
                     label="anomaly score")
    fig.clim_ = (lo, hi)
    return _finish(fig)


def feature_maps(features: Sequence[Any], names: Sequence[str] | None = None, n_channels: int = 4,
                 size: float = 1.6, cmap: str = "viridis"):
    """A few channels and the channel mean of each level of a feature hierarchy.

    Args:
        features: per level ``[C, H, W]`` (or ``[1, C, H, W]``; for a batch the first item is shown).
        names: level names (e.g. the backbone layer names).
        n_channels: channels shown per level: the ones with the largest spatial variance.

    One row per level; columns ``n_channels`` channels + ``mean``. Each panel has its own scale.
    """
    plt = _plt()
    feats = []
    for f in features:
        a = to_numpy(f).astype(np.float32)
        if a.ndim == 4:
            a = a[0]
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ValueError(f"feature_maps: each level must be [C, H, W]; got {a.shape}.")
        feats.append(a)
    if not feats:
        raise ValueError("feature_maps: no features given.")
    names = list(names) if names is not None else [f"level {i}" for i in range(len(feats))]
    ncols = max(min(n_channels, a.shape[0]) for a in feats) + 1
    with _style():
        fig, axes = plt.subplots(len(feats), ncols, figsize=(size * ncols, size * len(feats) + 0.3),
                                 squeeze=False)
        for r, (a, name) in enumerate(zip(feats, names)):
            var = a.reshape(a.shape[0], -1).var(axis=1)
            chans = np.sort(np.argsort(-var, kind="stable")[:min(n_channels, a.shape[0])])
            for c_ax in axes[r]:
                c_ax.axis("off")
            for j, ch in enumerate(chans):
                axes[r, j].axis("on")
                _show(axes[r, j], a[ch], cmap=cmap, vmin=None, vmax=None)
                axes[r, j].set_title(f"ch {ch}", fontsize=8)
            axm = axes[r, ncols - 1]
            axm.axis("on")
            _show(axm, a.mean(axis=0), cmap="magma", vmin=None, vmax=None)
            axm.set_title("mean", fontsize=8)
            axes[r, 0].set_ylabel(f"{name}\n{a.shape[0]}x{a.shape[1]}x{a.shape[2]}", fontsize=8)
        fig.tight_layout()
    return _finish(fig)


def heatmap_grid(maps: Sequence[Any], titles: Sequence[str] | None = None, ncols: int = 6, size: float = 2.0,
                 cmap: str = "viridis", shared_scale: bool = False, marker: tuple[int, int] | None = None,
                 background: Any | None = None, suptitle: str | None = None):
    """A grid of 2-D heat maps (attention / correlation / residual maps), each with its own colour
    scale unless ``shared_scale``; ``marker=(row, col)`` marks a query position on every panel;
    ``background`` (an image) is drawn under semi-transparent maps.

    Args:
        maps: ``float[h, w]`` arrays or tensors, one per panel.
    """
    plt = _plt()
    arrays = [_to_map(m) for m in maps]
    if not arrays:
        raise ValueError("heatmap_grid: no maps given.")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"heatmap_grid: {len(titles)} titles for {len(arrays)} maps.")
    lo = min(float(a.min()) for a in arrays) if shared_scale else None
    hi = max(float(a.max()) for a in arrays) if shared_scale else None
    bg = to_display(background) if background is not None else None
    nrows, ncols = _grid(len(arrays), ncols)
    with _style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                                 squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k >= len(arrays):
                continue
            a = arrays[k]
            if bg is not None:
                ax.imshow(bg, extent=(-0.5, a.shape[1] - 0.5, a.shape[0] - 0.5, -0.5))
            im = ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi, alpha=0.6 if bg is not None else 1.0,
                           interpolation="nearest")
            if marker is not None:
                ax.plot(marker[1], marker[0], marker="x", color="red", markersize=8, mew=2)
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=9)
            if not shared_scale:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if shared_scale:
            fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02)
        if suptitle:
            fig.suptitle(suptitle)
    return _finish(fig)
