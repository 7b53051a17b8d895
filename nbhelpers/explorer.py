"""Interactive explorer of anomaly maps: an image selector and a threshold slider showing image, map,
binarised map and ground truth with the image score (ipywidgets).

Headless (``NBHELPERS_HEADLESS=1``, set by ``nbhelpers run`` / ``report`` for their kernels, or
``interactive=False``) it returns a static small-multiples figure instead: the selected images
binarised at several thresholds, so an executed report still shows what the slider would.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from nbhelpers.viz.base import _contour, _finish, _plt, _resize, _show, _style, _to_map, _to_mask, to_display

HEADLESS_ENV = "NBHELPERS_HEADLESS"


def is_headless() -> bool:
    """True when no interactive front-end is expected (papermill runs of this package, CI)."""
    return os.environ.get(HEADLESS_ENV, "0") not in ("0", "", "false", "False")


def threshold_panels(images: Sequence[Any], maps: Sequence[Any], thresholds: Sequence[float],
                     masks: Sequence[Any] | None = None, scores: Sequence[float] | None = None,
                     titles: Sequence[str] | None = None, size: float = 2.0):
    """Rows of ``image | map | map >= t for each t | ground truth`` (map on one colour scale per figure).

    Args:
        images: images (any form ``viz.to_display`` takes); maps: ``float[H,W]`` each; thresholds:
            binarisation thresholds (columns); masks, scores, titles: optional, one per image.
    """
    plt = _plt()
    disp = [to_display(im) for im in images]
    mps = [_to_map(m) for m in maps]
    mps = [m if m.shape == d.shape[:2] else _resize(m, d.shape[:2]) for m, d in zip(mps, disp)]
    lo, hi = min(float(m.min()) for m in mps), max(float(m.max()) for m in mps)
    ncols = 2 + len(thresholds) + (masks is not None)
    with _style():
        fig, axes = plt.subplots(len(disp), ncols, figsize=(size * ncols, size * len(disp)), squeeze=False)
        for r, (img, m) in enumerate(zip(disp, mps)):
            head = titles[r] if titles is not None else f"image {r}"
            _show(axes[r, 0], img)
            axes[r, 0].set_title(head + (f"\nscore {float(scores[r]):.3g}" if scores is not None else ""), fontsize=8)
            _show(axes[r, 1], m, cmap="jet", vmin=lo, vmax=hi)
            axes[r, 1].set_title("anomaly map", fontsize=8)
            for c, t in enumerate(thresholds):
                _show(axes[r, 2 + c], (m >= t).astype(np.float32), cmap="gray", vmin=0, vmax=1)
                axes[r, 2 + c].set_title(f"map ≥ {t:.3g}", fontsize=8)
            if masks is not None:
                mask = _to_mask(masks[r], img.shape[:2])
                _show(axes[r, -1], mask.astype(np.float32) if mask is not None else np.zeros(img.shape[:2]),
                      cmap="gray", vmin=0, vmax=1)
                _contour(axes[r, -1], mask)
                axes[r, -1].set_title("ground truth", fontsize=8)
        fig.tight_layout()
    return _finish(fig)


def default_thresholds(maps: Sequence[Any], n: int = 3) -> list[float]:
    """``n`` thresholds spread over the upper range of the maps (the 90th..99.9th percentile of all pixels)."""
    values = np.concatenate([_to_map(m).ravel() for m in maps])
    return [float(np.quantile(values, q)) for q in np.linspace(0.9, 0.999, n)]


def explorer(images: Sequence[Any], maps: Sequence[Any], masks: Sequence[Any] | None = None,
             scores: Sequence[float] | None = None, titles: Sequence[str] | None = None,
             threshold: float | None = None, interactive: bool | None = None, static_rows: int = 4):
    """An ipywidgets explorer (image selector + threshold slider), or a static figure when headless.

    Returns an ``ipywidgets.VBox`` (interactive) or a closed matplotlib ``Figure`` of the first
    ``static_rows`` images binarised at three thresholds (headless); display it either way.
    """
    images, maps = list(images), list(maps)
    if len(images) != len(maps) or not images:
        raise ValueError(f"explorer: need as many maps as images (got {len(images)} and {len(maps)}).")
    interactive = (not is_headless()) if interactive is None else interactive
    thresholds = default_thresholds(maps)
    if not interactive:
        k = min(static_rows, len(images))
        pick = lambda seq: None if seq is None else list(seq)[:k]  # noqa: E731
        return threshold_panels(images[:k], maps[:k], thresholds, pick(masks), pick(scores), pick(titles))

    import ipywidgets as widgets
    from IPython.display import display

    values = np.concatenate([_to_map(m).ravel() for m in maps])
    lo, hi = float(values.min()), float(values.max())
    names = [titles[i] if titles is not None else f"image {i}" for i in range(len(images))]
    select = widgets.Dropdown(options=list(zip(names, range(len(images)))), value=0, description="image")
    slider = widgets.FloatSlider(value=threshold if threshold is not None else thresholds[1], min=lo, max=hi,
                                 step=(hi - lo) / 200 or 1e-6, description="threshold", continuous_update=False)
    out = widgets.Output()

    def render(*_: Any) -> None:
        i = select.value
        with out:
            out.clear_output(wait=True)
            display(threshold_panels([images[i]], [maps[i]], [slider.value],
                                     None if masks is None else [masks[i]],
                                     None if scores is None else [scores[i]], [names[i]], size=3.0))

    select.observe(render, names="value")
    slider.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([select, slider]), out])
