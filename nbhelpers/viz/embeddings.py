"""t-SNE / UMAP scatter plots of normal vs anomalous patch embeddings."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nbhelpers.viz.base import _finish, _plt, _style, to_numpy


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
