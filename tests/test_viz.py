"""Headless figures: every function returns a closed Figure that saves to PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import matplotlib.pyplot as plt

from nbhelpers import viz
from nbhelpers.viz.embeddings import _balanced_subsample


def _check(fig, tmp_path, name: str, min_axes: int = 1) -> None:
    assert isinstance(fig, Figure)
    assert not plt.fignum_exists(fig.number), "figure must be closed"
    assert len(fig.axes) >= min_axes
    out = tmp_path / f"{name}.png"
    fig.savefig(out, dpi=60)
    img = np.asarray(Image.open(out).convert("L"))
    assert img.std() > 5, "figure looks blank"


def _images(n: int = 4, size: int = 32):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        base = np.stack([yy, xx, np.full_like(yy, i / n)], axis=-1)
        out.append(np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32))
    return out


def _masks(n: int = 4, size: int = 32):
    masks = []
    for i in range(n):
        m = np.zeros((size, size), bool)
        if i % 2:
            m[8:8 + 4 * i, 10:20] = True
        masks.append(m)
    return masks


def test_no_backend_side_effects():
    import matplotlib

    src = "".join(p.read_text() for p in Path(viz.__file__).parent.glob("*.py"))
    assert "matplotlib.use(" not in src and "set_theme(" not in src and "sns.set(" not in src
    assert matplotlib.get_backend()  # untouched, whatever it is


def test_to_display_conversions():
    u8 = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    out = viz.to_display(u8)
    assert out.shape == (10, 12, 3) and out.dtype == np.float32 and out.max() <= 1.0
    chw = torch.rand(3, 10, 12)
    np.testing.assert_allclose(viz.to_display(chw), chw.permute(1, 2, 0).numpy())
    assert viz.to_display(torch.rand(1, 10, 12)).shape == (10, 12)
    assert viz.to_display(np.ones((5, 6, 3)) * 2).max() == 1.0


def test_denormalize_round_trip():
    img = torch.rand(3, 8, 9)
    mean, std = torch.tensor(viz.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(viz.IMAGENET_STD).view(3, 1, 1)
    out = viz.denormalize((img - mean) / std)
    assert out.shape == (8, 9, 3)
    np.testing.assert_allclose(out, img.permute(1, 2, 0).numpy(), atol=1e-5)
    batch = viz.denormalize(np.zeros((2, 3, 4, 5), np.float32), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert batch.shape == (2, 4, 5, 3) and np.allclose(batch, 0.5)
    with pytest.raises(ValueError):
        viz.denormalize(torch.rand(4, 8, 8))


def test_sample_grid(tmp_path):
    imgs = _images(5)
    mixed = [imgs[0], (imgs[1] * 255).astype(np.uint8), torch.from_numpy(imgs[2]).permute(2, 0, 1),
             imgs[3][..., 0], imgs[4]]
    path = tmp_path / "x.png"
    Image.fromarray((imgs[0] * 255).astype(np.uint8)).save(path)
    mixed.append(path)
    masks = _masks(5) + [torch.from_numpy(_masks(2)[1]).float()[None]]
    masks[0] = None
    fig = viz.sample_grid(mixed, masks=masks, titles=[f"s{i}" for i in range(6)], ncols=4)
    _check(fig, tmp_path, "grid", min_axes=8)
    assert sum(len(ax.images) for ax in fig.axes) == 6
    # mask contours are drawn for the non-empty masks (1, 3, 5)
    drawn = [ax for ax in fig.axes if ax.collections]
    assert len(drawn) == 3
    assert fig.axes[0].get_title() == "s0"
    fig = viz.sample_grid(_images(2))
    _check(fig, tmp_path, "grid2", min_axes=2)
    with pytest.raises(ValueError):
        viz.sample_grid(_images(2), masks=_masks(3))


def test_overlay_maps_fixed_clim(tmp_path):
    imgs = _images(3)
    rng = np.random.default_rng(0)
    maps = [rng.random((32, 32)) * 1.0, torch.rand(1, 16, 16) * 3.0, rng.random((32, 32)) - 1.0]
    fig = viz.overlay_maps(imgs, maps, masks=_masks(3), scores=[0.1, 0.5, 0.9], titles=["a", "b", "c"])
    _check(fig, tmp_path, "overlay", min_axes=3 * 3 + 1)
    lo = min(float(np.min(viz.to_numpy(m))) for m in maps)
    hi = max(float(np.max(viz.to_numpy(m))) for m in maps)
    assert fig.clim_ == pytest.approx((lo, hi))
    map_images = [ax.images[1] for ax in fig.axes if len(ax.images) == 2]
    assert len(map_images) == 3
    clims = {im.get_clim() for im in map_images}
    assert len(clims) == 1 and next(iter(clims)) == pytest.approx((lo, hi))
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1
    assert "score=0.5" in fig.axes[4].get_title()
    # user-fixed scale, no masks -> two columns
    fig = viz.overlay_maps(imgs, maps, vmin=0.0, vmax=2.0)
    _check(fig, tmp_path, "overlay2", min_axes=3 * 2 + 1)
    assert {ax.images[1].get_clim() for ax in fig.axes if len(ax.images) == 2} == {(0.0, 2.0)}
    with pytest.raises(ValueError):
        viz.overlay_maps(imgs, maps[:2])


def _clusters(n: int = 150, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, d)).astype(np.float32)
    y = np.zeros(n, np.int64)
    y[: n // 10] = 1
    x[y == 1] += 6.0
    return x, y


def test_embedding_scatter_tsne(tmp_path):
    x, y = _clusters(150)
    fig = viz.embedding_scatter(x, y, method="tsne", max_points=100, seed=0, title="tsne")
    _check(fig, tmp_path, "tsne")
    assert fig.embedding_.shape == (100, 2)
    idx = fig.embedding_index_
    assert len(idx) == 100 and (y[idx] == 1).sum() == 15  # rare anomalous patches are all kept
    fig2 = viz.embedding_scatter(torch.from_numpy(x), torch.from_numpy(y), method="tsne", max_points=100, seed=0)
    np.testing.assert_allclose(fig.embedding_, fig2.embedding_, atol=1e-5)
    np.testing.assert_array_equal(idx, fig2.embedding_index_)
    # the two clusters are separated in 2-D
    e = fig.embedding_
    lab = y[idx]
    gap = np.linalg.norm(e[lab == 0].mean(0) - e[lab == 1].mean(0))
    assert gap > e[lab == 0].std(0).mean()


def test_embedding_scatter_umap_and_pca(tmp_path):
    x, y = _clusters(80, d=64)
    fig = viz.embedding_scatter(x, y, method="umap", seed=1)
    _check(fig, tmp_path, "umap")
    assert fig.embedding_.shape == (80, 2)
    fig = viz.embedding_scatter(x, y, method="pca", max_points=50, seed=1)
    assert fig.embedding_.shape == (50, 2)
    with pytest.raises(ValueError):
        viz.embedding_scatter(x, y, method="nope")


def test_balanced_subsample():
    y = np.array([0] * 1000 + [1] * 10 + [2] * 300)
    idx = _balanced_subsample(y, 200, seed=0)
    assert len(idx) == 200 and len(np.unique(idx)) == 200
    counts = np.bincount(y[idx])
    assert counts[1] == 10 and counts[0] == 95 and counts[2] == 95
    np.testing.assert_array_equal(idx, _balanced_subsample(y, 200, seed=0))


TABLE = {
    "bottle": {"image_auroc": 0.98, "pixel_auroc": 0.95, "aupro": 0.9},
    "grid": {"image_auroc": 0.71, "pixel_auroc": 0.88},
    "mean": {"image_auroc": 0.845, "pixel_auroc": 0.915, "aupro": 0.9},
}


def test_metric_bars(tmp_path):
    fig = viz.metric_bars(TABLE, "image_auroc")
    _check(fig, tmp_path, "bars")
    assert len(fig.axes[0].patches) == 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["bottle", "grid", "mean"]
    fig = viz.metric_bars(TABLE, "aupro")
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(ValueError, match="image_auroc"):
        viz.metric_bars(TABLE, "f1")


def test_metrics_heatmap(tmp_path):
    fig = viz.metrics_heatmap(TABLE, title="metrics")
    _check(fig, tmp_path, "heatmap", min_axes=2)  # heatmap + colorbar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.980" in texts and len(texts) == 8  # one missing cell


def test_feature_maps(tmp_path):
    feats = [torch.randn(8, 16, 16), torch.randn(1, 16, 8, 8), np.random.default_rng(0).normal(size=(2, 4, 4))]
    fig = viz.feature_maps(feats, names=["layer1", "layer2", "layer3"], n_channels=3)
    _check(fig, tmp_path, "features", min_axes=3 * 4)
    assert sum(len(ax.images) for ax in fig.axes) == 4 + 4 + 3
    assert "layer2" in fig.axes[4].get_ylabel()


def test_roc_pr_curves(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(30)].astype(int)
    s = rng.normal(0, 1, 80) + 1.5 * y
    fig = viz.roc_pr_curves(s, y, title="image level")
    _check(fig, tmp_path, "rocpr", min_axes=2)
    legend = fig.axes[0].get_legend().get_texts()[0].get_text()
    from sklearn.metrics import roc_auc_score

    assert legend == f"AUROC={roc_auc_score(y, s):.3f}"
    assert "AP=" in fig.axes[1].get_legend().get_texts()[0].get_text()
    fig = viz.roc_pr_curves({"a": torch.from_numpy(s), "b": -s}, torch.from_numpy(y))
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(ValueError):
        viz.roc_pr_curves(s, np.zeros(80))


def test_no_open_figures_left():
    before = set(plt.get_fignums())
    viz.sample_grid(_images(2))
    viz.metric_bars(TABLE, "image_auroc")
    assert set(plt.get_fignums()) == before


def test_heatmap_grid_closed_with_marker(tmp_path):
    import matplotlib.pyplot as plt

    from nbhelpers.viz import heatmap_grid

    maps = [np.random.default_rng(i).random((6, 6)) for i in range(3)]
    fig = heatmap_grid(maps, titles=["a", "b", "c"], ncols=2, marker=(2, 3), shared_scale=True)
    assert not plt.fignum_exists(fig.number)
    assert sum(len(ax.images) for ax in fig.axes) == 3
    fig.savefig(tmp_path / "h.png")
    with pytest.raises(ValueError, match="titles"):
        heatmap_grid(maps, titles=["a"])
