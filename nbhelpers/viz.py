"""Headless-safe figures for the notebooks.

Every function builds a new figure, closes it (``plt.close(fig)``) and returns the closed
:class:`matplotlib.figure.Figure`: a notebook displays the returned value once, scripts can call
``fig.savefig(...)``, and nothing piles up in pyplot's figure manager. The module never selects a
matplotlib backend and never changes global styles (seaborn styles are applied in ``with`` blocks).

Images may be ``uint8[H, W, 3]``, float ``[H, W, 3]`` in [0, 1], grayscale ``[H, W]``, CHW torch
tensors/arrays or image paths; masks may be bool/float ``[H, W]``, ``[1, H, W]`` or mask paths.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
]

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


# ------------------------------------------------------------------------------------- conversions


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


# ------------------------------------------------------------------------------------------ grids


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


# -------------------------------------------------------------------------------------- embeddings


def _balanced_subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_points`` points; small classes are kept whole, the budget left is
    shared equally among the larger ones (deterministic for a seed)."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = dict.fromkeys(classes.tolist(), 0)
    budget, open_ = max_points, sorted(zip(counts.tolist(), classes.tolist()))
    while open_:
        share = budget // len(open_)
        cnt, c = open_[0]
        if cnt <= share:
            quota[c] = cnt
            budget -= cnt
            open_.pop(0)
        else:
            for j, (cnt_j, c_j) in enumerate(open_):
                quota[c_j] = share + (1 if j < budget - share * len(open_) else 0)
            break
    keep = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in quota.items() if q]
    return np.sort(np.concatenate(keep))


def embedding_scatter(features: Any, labels: Any, method: str = "tsne", max_points: int = 3000, seed: int = 0,
                      title: str = "", label_names: Mapping[int, str] | None = None, perplexity: float = 30.0,
                      size: float = 5.0):
    """2-D t-SNE / UMAP / PCA projection of patch features coloured by label.

    Args:
        features: ``float[N, D]`` (numpy or torch).
        labels: ``int[N]``; by default 0 = "normal patch", 1 = "anomalous patch".
        method: ``"tsne"`` (scikit-learn), ``"umap"`` (umap-learn) or ``"pca"``.
        max_points: deterministic subsample (seeded); rare classes are kept whole so that the few
            anomalous patches are not lost.

    The figure carries ``fig.embedding_`` (``float[n, 2]``) and ``fig.embedding_index_`` (the
    indices of the points shown).
    """
    plt = _plt()
    import seaborn as sns

    from nbhelpers.errors import ConfigError

    X = to_numpy(features).astype(np.float32)
    y = to_numpy(labels).astype(np.int64).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"embedding_scatter: features must be [N, D] with N labels; got {X.shape}, {y.shape}.")
    if len(X) < 3:
        raise ValueError("embedding_scatter: need at least 3 points.")
    idx = _balanced_subsample(y, int(max_points), seed)
    X, y = X[idx], y[idx]
    method = method.lower()
    if X.shape[1] > 50 and method in ("tsne", "umap"):
        from sklearn.decomposition import PCA

        X = PCA(n_components=50, random_state=seed).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        emb = TSNE(n_components=2, perplexity=float(min(perplexity, (len(X) - 1) / 3)), init="pca",
                   random_state=seed).fit_transform(X)
    elif method == "umap":
        import umap

        emb = umap.UMAP(n_components=2, n_neighbors=int(min(15, len(X) - 1)), random_state=seed,
                        n_jobs=1).fit_transform(X)
    elif method == "pca":
        from sklearn.decomposition import PCA

        emb = PCA(n_components=2, random_state=seed).fit_transform(X)
    else:
        raise ConfigError(f"embedding_scatter: unknown method {method!r}; use 'tsne', 'umap' or 'pca'.")
    emb = np.asarray(emb, dtype=np.float32)
    names = {0: "normal patch", 1: "anomalous patch"}
    names.update(label_names or {})
    classes = np.unique(y)
    palette = dict(zip(classes.tolist(), sns.color_palette("tab10", len(classes))))
    if set(classes.tolist()) <= {0, 1}:
        palette.update({0: (0.55, 0.65, 0.8), 1: (0.85, 0.1, 0.1)})
    with _style():
        fig, ax = plt.subplots(figsize=(size * 1.15, size))
        for c in classes:  # normal first, anomalies drawn on top
            sel = y == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=6 if c == 0 else 10, color=palette[int(c)],
                       alpha=0.5 if c == 0 else 0.85, label=f"{names.get(int(c), str(c))} ({sel.sum()})",
                       edgecolors="none")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
        ax.legend(loc="best", fontsize=8, markerscale=2)
        ax.set_title(title or f"{method.upper()} of {len(X)} patch features")
        sns.despine(ax=ax)
        fig.tight_layout()
    fig.embedding_ = emb
    fig.embedding_index_ = idx
    return _finish(fig)


# ----------------------------------------------------------------------------------------- metrics


def _table_frame(table: Mapping[str, Mapping[str, float]]):
    import pandas as pd

    cols: list[str] = []
    for row in table.values():
        cols += [c for c in row if c not in cols]
    return pd.DataFrame([[float(table[r].get(c, np.nan)) for c in cols] for r in table],
                        index=list(table), columns=cols)


def metric_bars(table: Mapping[str, Mapping[str, float]], metric: str, title: str | None = None,
                color: str | None = None, size: tuple[float, float] | None = None):
    """Bar plot of ``table[row][metric]`` for every row (e.g. per category), values annotated.

    A ``"mean"`` row, if present, is drawn last in a darker colour. Values in [0, 1] get a [0, 1.05]
    axis.
    """
    plt = _plt()
    import seaborn as sns

    rows = [r for r in table if metric in table[r]]
    if not rows:
        raise ValueError(f"metric_bars: no row has metric {metric!r}; metrics present: "
                         f"{sorted({k for r in table.values() for k in r})}.")
    vals = np.array([float(table[r][metric]) for r in rows])
    base = color or sns.color_palette("deep")[0]
    cols = [(0.25, 0.25, 0.25) if str(r).lower() in ("mean", "average", "avg") else base for r in rows]
    with _style():
        fig, ax = plt.subplots(figsize=size or (max(4.0, 0.6 * len(rows) + 1.5), 3.6))
        bars = ax.bar(range(len(rows)), vals, color=cols)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([str(r) for r in rows], rotation=45 if len(rows) > 4 else 0, ha="right"
                           if len(rows) > 4 else "center")
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 2), textcoords="offset points")
        finite = vals[np.isfinite(vals)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            ax.set_ylim(0, 1.08)
        ax.set_ylabel(metric)
        ax.set_title(title or metric)
        sns.despine(ax=ax)
        fig.tight_layout()
    return _finish(fig)


def metrics_heatmap(table: Mapping[str, Mapping[str, float]], title: str | None = None, fmt: str = ".3f",
                    cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None):
    """Annotated seaborn heatmap of ``table[row][col]`` (missing cells are blank)."""
    plt = _plt()
    import seaborn as sns

    df = _table_frame(table)
    if df.empty:
        raise ValueError("metrics_heatmap: empty table.")
    with _style():
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * df.shape[1] + 2), max(2.5, 0.45 * df.shape[0] + 1.2)))
        sns.heatmap(df, annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax, linewidths=0.5,
                    cbar_kws={"shrink": 0.8})
        ax.set_title(title or "")
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
        fig.tight_layout()
    return _finish(fig)


def roc_pr_curves(scores: Any, labels: Any, title: str | None = None, size: float = 3.8):
    """ROC and precision-recall curves side by side, AUROC / AP in the legend (scikit-learn).

    ``scores`` is one score array or a ``{name: scores}`` mapping (several methods on the same
    ``labels``). Raw scores are used as they are (no sigmoid).
    """
    plt = _plt()
    import seaborn as sns
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = to_numpy(labels).astype(np.int64).ravel()
    if len(np.unique(y)) != 2:
        raise ValueError("roc_pr_curves: labels must contain both 0 (normal) and 1 (anomalous).")
    series = dict(scores) if isinstance(scores, Mapping) else {"": scores}
    with _style():
        fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(2 * size + 0.4, size))
        for name, s in series.items():
            s = to_numpy(s).astype(np.float64).ravel()
            if len(s) != len(y):
                raise ValueError(f"roc_pr_curves: {len(s)} scores for {len(y)} labels ({name!r}).")
            fpr, tpr, _ = roc_curve(y, s)
            prec, rec, _ = precision_recall_curve(y, s)
            prefix = f"{name}: " if name else ""
            ax_roc.plot(fpr, tpr, lw=1.8, label=f"{prefix}AUROC={roc_auc_score(y, s):.3f}")
            ax_pr.step(rec, prec, where="post", lw=1.8, label=f"{prefix}AP={average_precision_score(y, s):.3f}")
        ax_roc.plot([0, 1], [0, 1], ls="--", color="gray", lw=1)
        ax_pr.axhline(y.mean(), ls="--", color="gray", lw=1)
        ax_roc.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate",
                   title="ROC")
        ax_pr.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="precision-recall")
        for ax in (ax_roc, ax_pr):
            ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
            sns.despine(ax=ax)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return _finish(fig)


# -------------------------------------------------------------------------------------- features


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


# ------------------------------------------------------------------------------------------ curves


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str = "", ylabel: str = "",
              title: str | None = None, logx: bool = False, logy: bool = False,
              size: tuple[float, float] = (5.0, 3.4)):
    """Named curves ``{name: (x, y)}`` on one axis: training-loss curves, or a metric against a
    parameter (e.g. a subsampling ratio, a number of epochs). Points are marked; ``logx``/``logy``
    switch the axes to log scale; a single unnamed series (``{"": (x, y)}``) gets no legend.
    """
    plt = _plt()
    import seaborn as sns

    if not series:
        raise ValueError("line_plot: no series given.")
    with _style():
        fig, ax = plt.subplots(figsize=size)
        for name, (x, y) in series.items():
            x, y = to_numpy(x).astype(np.float64).ravel(), to_numpy(y).astype(np.float64).ravel()
            if len(x) != len(y):
                raise ValueError(f"line_plot: series {name!r} has {len(x)} x values and {len(y)} y values.")
            ax.plot(x, y, marker="o", markersize=3.5, lw=1.6, label=str(name) or None)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
        if any(str(n) for n in series):
            ax.legend(fontsize=8, loc="best")
        sns.despine(ax=ax)
        fig.tight_layout()
    return _finish(fig)


def speed_accuracy(rows: Sequence[Mapping[str, Any]], x: str = "ms_per_image", y: str = "image_auroc",
                   hue: str = "method", title: str | None = None, logx: bool = True,
                   size: tuple[float, float] = (5.5, 3.8)):
    """Scatter of benchmark result rows: ``rows[i][x]`` (e.g. inference ms/image, log scale) against
    ``rows[i][y]`` (e.g. image AUROC), one colour per ``rows[i][hue]`` and the hue's mean as a large marker."""
    plt = _plt()
    import seaborn as sns

    if not rows:
        raise ValueError("speed_accuracy: no rows given.")
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        groups.setdefault(str(r[hue]), []).append((float(r[x]), float(r[y])))
    palette = sns.color_palette("tab10", len(groups))
    with _style():
        fig, ax = plt.subplots(figsize=size)
        for colour, (name, pts) in zip(palette, groups.items()):
            arr = np.array(pts, dtype=np.float64)
            ax.scatter(arr[:, 0], arr[:, 1], color=colour, alpha=0.5, s=18)
            ax.scatter(np.nanmean(arr[:, 0]), np.nanmean(arr[:, 1]), color=colour, s=120, edgecolor="black",
                       label=name, zorder=3)
        if logx:
            ax.set_xscale("log")
        ax.set(xlabel=x, ylabel=y, title=title or "")
        ax.legend(fontsize=8, loc="best")
        sns.despine(ax=ax)
        fig.tight_layout()
    return _finish(fig)
