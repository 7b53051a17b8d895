"""Headless-safe figures for the notebooks.

Every function builds a new figure, closes it (``plt.close(fig)``) and returns the closed
:class:`matplotlib.figure.Figure`: a notebook displays the returned value once, scripts can call
``fig.savefig(...)``, and nothing piles up in pyplot's figure manager. The module never selects a
matplotlib backend and never changes global styles (seaborn styles are applied in ``with`` blocks).

Images may be ``uint8[H, W, 3]``, float ``[H, W, 3]`` in [0, 1], grayscale ``[H, W]``, CHW torch
tensors/arrays or image paths; masks may be bool/float ``[H, W]``, ``[1, H, W]`` or mask paths.
"""
from __future__ import annotations

from nbhelpers.viz.base import IMAGENET_MEAN, IMAGENET_STD, MASK_COLOR, denormalize, to_display, to_numpy
from nbhelpers.viz.charts import line_plot, metric_bars, metrics_heatmap, roc_pr_curves, speed_accuracy
from nbhelpers.viz.embeddings import embedding_scatter
from nbhelpers.viz.images import feature_maps, heatmap_grid, overlay_maps, sample_grid

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_numpy",
    "to_display",
    "denormalize",
    "sample_grid",
    "overlay_maps",
    "embedding_scatter",
    "metric_bars",
    "metrics_heatmap",
    "feature_maps",
    "roc_pr_curves",
    "MASK_COLOR",
    "heatmap_grid",
    "line_plot",
    "speed_accuracy",
]
