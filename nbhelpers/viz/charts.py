"""Charts of results: metric bars and heat maps, ROC / PR curves, line plots, speed vs accuracy."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nbhelpers.viz.base import _finish, _plt, _style, to_numpy


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
