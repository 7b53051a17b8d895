"""Tests of nbhelpers.metrics against independent, slow references."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from nbhelpers import metrics as M
from nbhelpers.data.records import Region


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def ref_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def ref_f1_max(scores, labels):
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        fp = np.sum(pred & (labels == 0))
        fn = np.sum(~pred & (labels == 1))
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def ref_area(fpr, y, limit):
    """Trapezoids segment by segment up to ``limit`` (linear interpolation inside the last one)."""
    area = 0.0
    for k in range(len(fpr) - 1):
        x0, x1, y0, y1 = fpr[k], fpr[k + 1], y[k], y[k + 1]
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            if x0 < limit:
                y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += 0.5 * (y0 + y_lim) * (limit - x0)
            break
    return area / limit


def ref_aupro(maps, masks, limit):
    """Per-threshold loop: 8-connected components per image, FPR over all normal pixels."""
    regions = []
    for i in range(len(masks)):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3), dtype=int))
        regions += [(i, lab == k + 1) for k in range(n)]
    neg = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append(np.sum(pred & neg) / np.sum(neg))
        pros.append(np.mean([np.sum(pred[i] & r) / np.sum(r) for i, r in regions]))
    return ref_area(fprs, pros, limit)


def ref_auspro(maps, regions, limit):
    """Per-threshold loop: min(overlap / saturation, 1) per region, FPR on good images only."""
    good = np.array([len(r) == 0 for r in regions])
    flat_regions = [(i, m, min(s, m.sum())) for i, rr in enumerate(regions) for m, s in rr]
    fprs, spros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append(pred[good].sum() / pred[good].size)
        spros.append(np.mean([min(np.sum(pred[i] & m) / s, 1.0) for i, m, s in flat_regions]))
    return ref_area(fprs, spros, limit)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def blob_masks(rng, n=6, size=24, empty=(0, 3)):
    """Random blob masks (thresholded smoothed noise); images in ``empty`` stay defect-free."""
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if i in empty:
            continue
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=2.0)
        masks[i] = noise > np.quantile(noise, 0.85)
    return masks


def random_maps(rng, masks, rounded):
    maps = rng.random(masks.shape) + 0.6 * masks
    return np.round(maps, 2) if rounded else maps


# ----------------------------------------------------------------------------------------------
# image level
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=40)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=40) + labels, 1)  # rounded: ties
    assert M.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.image_auroc(scores, labels) == pytest.approx(ref_auroc(scores, labels), abs=1e-12)
    assert M.image_ap(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert M.image_f1_max(scores, labels) == pytest.approx(ref_f1_max(scores, labels), abs=1e-12)
    for f in (M.image_auroc, M.image_ap, M.image_f1_max):
        assert isinstance(f(scores, labels), float)


def test_image_metrics_single_class_is_nan():
    scores = np.array([0.1, 0.5, 0.9])
    for f in (M.image_auroc, M.image_ap, M.image_f1_max):
        assert math.isnan(f(scores, np.zeros(3, int)))
        assert math.isnan(f(scores, np.ones(3, int)))
        assert math.isnan(f(np.array([]), np.array([])))


def test_image_metrics_accept_torch_and_need_no_sigmoid():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=30)
    scores = rng.normal(size=30) * 50 + labels * 20  # raw logits-like scale
    expected = M.image_auroc(scores, labels)
    assert M.image_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(expected, abs=1e-6)
    assert M.image_auroc(1 / (1 + np.exp(-scores / 50)), labels) == pytest.approx(expected, abs=1e-12)
    assert M.image_f1_max(scores, labels) == pytest.approx(M.image_f1_max(np.exp(scores / 50), labels))


def test_image_metrics_validate_input():
    with pytest.raises(ValueError, match="labels has 2 entries but scores has 3"):
        M.image_auroc(np.zeros(3), np.array([0, 1]))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        M.image_auroc(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        M.image_ap(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        M.image_auroc(np.zeros((3, 2)), np.array([0, 1, 0]))


def test_pixel_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded=True)
    assert M.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert M.pixel_ap(maps, masks) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    # [N, 1, H, W] batch layout and {0, 255} masks
    assert M.pixel_auroc(maps[:, None], masks[:, None].astype(np.uint8) * 255) == pytest.approx(
        M.pixel_auroc(maps, masks))
    assert math.isnan(M.pixel_auroc(maps, np.zeros_like(masks)))
    assert math.isnan(M.pixel_ap(maps, np.zeros_like(masks)))


# ----------------------------------------------------------------------------------------------
# AUPRO
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,rounded,limit", [
    (0, True, 0.3), (1, False, 0.3), (2, True, 0.3), (3, False, 0.05), (4, True, 1.0), (5, True, 0.11),
])
def test_aupro_matches_per_threshold_reference(seed, rounded, limit):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded)
    assert M.aupro(maps, masks, fpr_limit=limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-6)


def test_limited_curves_equal_the_full_curves():
    """aupro/auspro sort only the pixels that reach the FPR limit: same area as the full curve."""
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, n=8, size=32, empty=(0, 3, 5))
    maps = np.round(rng.random(masks.shape) + 0.3 * masks, 1)  # coarse: many ties at the cut
    regions = loco_regions(rng, masks, lambda r, c: float(r.uniform(0.1, 1.0) * c.sum()))
    pro = M.pro_curve(maps, masks)
    spro = M.spro_curve(maps, regions)
    for limit in (1e-4, 0.003, 0.01, 0.05, 0.1, 0.2999, 0.3, 0.5, 0.99, 1.0):
        assert M.aupro(maps, masks, limit) == pytest.approx(ref_area(*pro, limit), abs=1e-12)
        assert M.auspro(maps, regions, limit) == pytest.approx(ref_area(*spro, limit), abs=1e-12)


def test_aupro_uses_8_connectivity_per_image():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # diagonal neighbours: one region
    masks[0, 4, 4] = True                   # second region
    masks[1, 0, 0] = True                   # third region (other image)
    maps = np.zeros(masks.shape)
    maps[0, 1, 1] = 1.0                     # half of region 1 found first
    maps[0, 4, 4] = 0.5
    maps[1, :, 3] = 0.75                    # false positives
    for limit in (0.05, 0.3, 1.0):
        assert M.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-12)
    fpr, pro = M.pro_curve(maps, masks)
    assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == 1 and pro[-1] == pytest.approx(1)
    assert pro[1] == pytest.approx(0.5 / 3)  # 1 region of 3 half covered


def test_aupro_perfect_inverted_bounded_and_monotone_invariant():
    rng = np.random.default_rng(7)
    masks = blob_masks(rng)
    assert M.aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)
    assert M.aupro(1.0 - masks, masks) == pytest.approx(0.0, abs=1e-12)
    inverted = -random_maps(rng, masks, rounded=False) - 0.6 * masks
    assert M.aupro(inverted, masks) < 0.05
    for seed in range(20):
        r = np.random.default_rng(100 + seed)
        mk = blob_masks(r, n=4, size=16, empty=(0,))
        mp = r.random(mk.shape) + r.uniform(0, 3) * mk
        for limit in (0.01, 0.3, 1.0):
            a = M.aupro(mp, mk, limit)
            assert 0.0 <= a <= 1.0
    maps = random_maps(rng, masks, rounded=True)
    a = M.aupro(maps, masks)
    assert M.aupro(np.exp(3 * maps) - 7, masks) == pytest.approx(a, abs=1e-12)
    assert M.aupro(1 / (1 + np.exp(-maps)), masks) == pytest.approx(a, abs=1e-12)


def test_aupro_nan_torch_and_errors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded=True).astype(np.float32)
    assert M.aupro(torch.from_numpy(maps), torch.from_numpy(masks)) == pytest.approx(M.aupro(maps, masks))
    assert math.isnan(M.aupro(maps, np.zeros_like(masks)))  # no region
    assert math.isnan(M.aupro(maps, np.ones_like(masks)))   # no normal pixel
    with pytest.raises(ValueError, match="does not match maps shape"):
        M.aupro(maps, masks[:, :-1])
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(maps, masks, fpr_limit=0.0)
    with pytest.raises(ValueError, match="undefined"):
        M.pro_curve(maps, np.zeros_like(masks))
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.aupro(maps, masks)


# ----------------------------------------------------------------------------------------------
# AUsPRO
# ----------------------------------------------------------------------------------------------
def loco_regions(rng, masks, saturation):
    """Per image: a list of (mask, saturation_pixels); splits each blob mask in two channels."""
    regions = []
    for i, m in enumerate(masks):
        if not m.any():
            regions.append([])
            continue
        lab, n = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
        chans = [lab == k + 1 for k in range(n)]
        if len(chans) > 1:  # merge two components into one channel, like a LOCO defect
            chans = [chans[0] | chans[1]] + chans[2:]
        if i == 1:  # overlapping channel
            chans.append(m.copy())
        regions.append([(c, saturation(rng, c)) for c in chans])
    return regions


@pytest.mark.parametrize("seed,rounded,limit", [(0, True, 0.05), (1, False, 0.05), (2, True, 0.3), (3, True, 1.0)])
def test_auspro_matches_per_threshold_reference(seed, rounded, limit):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng)
    masks[4] = False  # third good image
    maps = random_maps(rng, masks, rounded)
    regions = loco_regions(rng, masks, lambda r, c: float(r.uniform(0.2, 1.3) * c.sum()))
    expected = ref_auspro(maps, regions, limit)
    assert M.auspro(maps, regions, fpr_limit=limit) == pytest.approx(expected, abs=1e-6)
    # fractional saturations and tensors as masks
    torch = pytest.importorskip("torch")
    regions_t = [[(torch.from_numpy(c), s + 0.37) for c, s in rr] for rr in regions]
    regions_np = [[(c, s + 0.37) for c, s in rr] for rr in regions]
    assert M.auspro(maps, regions_t, limit) == pytest.approx(ref_auspro(maps, regions_np, limit), abs=1e-6)


def test_auspro_with_area_saturation_is_pro_with_fpr_on_good_images():
    rng = np.random.default_rng(5)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded=True)
    regions = []
    for m in masks:
        lab, n = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
        regions.append([(lab == k + 1, None) for k in range(n)])
    good = np.array([len(r) == 0 for r in regions])
    # plain per-region PRO, but the FPR counts the good images' pixels only
    lim = 0.05
    fprs, pros = [0.0], [0.0]
    flat = [(i, r) for i, rr in enumerate(regions) for r, _ in rr]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append(pred[good].mean())
        pros.append(np.mean([np.sum(pred[i] & r) / r.sum() for i, r in flat]))
    assert M.auspro(maps, regions, lim) == pytest.approx(ref_area(fprs, pros, lim), abs=1e-9)
    # when the anomalous images have no normal pixel outside their regions, AUsPRO == AUPRO
    full = masks.copy()
    full[~good] = True
    full_regions = [[(np.ones_like(m), None)] if not g else [] for m, g in zip(masks, good)]
    assert M.auspro(maps, full_regions, lim) == pytest.approx(M.aupro(maps, full, lim), abs=1e-9)


def test_auspro_early_saturation_and_bounds():
    rng = np.random.default_rng(9)
    masks = blob_masks(rng, n=4, empty=(0,))
    maps = random_maps(rng, masks, rounded=True)
    fpr_a, spro_a = M.spro_curve(maps, loco_regions(rng, masks, lambda r, c: None))
    fpr_s, spro_s = M.spro_curve(maps, loco_regions(rng, masks, lambda r, c: 0.25 * c.sum()))
    np.testing.assert_array_equal(fpr_a, fpr_s)
    assert np.all(spro_s >= spro_a - 1e-12)
    first_full = lambda f, s: f[np.argmax(s >= 1 - 1e-12)]  # noqa: E731
    assert first_full(fpr_s, spro_s) < first_full(fpr_a, spro_a)
    assert M.auspro(maps, loco_regions(rng, masks, lambda r, c: 0.25 * c.sum()), 0.3) > M.auspro(
        maps, loco_regions(rng, masks, lambda r, c: None), 0.3)
    # a single-pixel saturation: sPRO jumps to 1 at the region's best pixel
    region = masks[1]
    m = np.zeros(masks.shape)
    m[1][np.argwhere(region)[0][0], np.argwhere(region)[0][1]] = 1.0
    regions = [[] for _ in masks]
    regions[1] = [(region, 1.0)]
    assert M.auspro(m, regions) == pytest.approx(1.0)
    for seed in range(10):
        r = np.random.default_rng(50 + seed)
        mk = blob_masks(r, n=4, size=16, empty=(0,))
        mp = r.random(mk.shape) + r.uniform(0, 2) * mk
        a = M.auspro(mp, loco_regions(r, mk, lambda rr, c: float(rr.uniform(0.1, 2) * c.sum())), 0.05)
        assert 0.0 <= a <= 1.0


def test_auspro_nan_and_errors():
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, n=3, empty=(0,))
    maps = random_maps(rng, masks, rounded=True)
    regions = loco_regions(rng, masks, lambda r, c: None)
    assert math.isnan(M.auspro(maps, [[] for _ in masks]))  # no region
    no_good = [rr if rr else [(masks[1], None)] for rr in regions]
    assert math.isnan(M.auspro(maps, no_good))  # no good image
    with pytest.raises(ValueError, match="regions has 2 entries"):
        M.auspro(maps, regions[:2])
    with pytest.raises(ValueError, match="mask shape"):
        M.auspro(maps, [[], [(masks[1][:-1], None)], []])
    with pytest.raises(ValueError, match="positive"):
        M.auspro(maps, [[], [(masks[1], 0.0)], []])
    with pytest.warns(UserWarning, match="empty mask"):
        a = M.auspro(maps, [[], [(masks[1], None), (np.zeros_like(masks[1]), 3.0)], []])
    assert a == pytest.approx(M.auspro(maps, [[], [(masks[1], None)], []]))


def test_saturation_pixels(tmp_path: Path):
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 2:7] = True  # area 20
    assert M.saturation_pixels(Region(Path("m.png"), None), mask) == 20.0
    assert M.saturation_pixels(Region(Path("m.png"), 0.5, relative=True), mask) == 10.0
    assert M.saturation_pixels(Region(Path("m.png"), 8, relative=False), mask) == 8.0
    assert M.saturation_pixels(Region(Path("m.png"), 800, relative=False), mask) == 20.0
    # absolute thresholds are native-resolution pixels: a 4x smaller area scales them by 1/4
    assert M.saturation_pixels(Region(Path("m.png"), 40, relative=False), mask, scale=0.25) == 10.0
    with pytest.raises(ValueError, match="positive"):
        M.saturation_pixels(Region(Path("m.png"), -1.0), mask)
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert M.saturation_pixels(Region(tmp_path / "m.png", 0.25)) == 5.0


# ----------------------------------------------------------------------------------------------
# evaluate()
# ----------------------------------------------------------------------------------------------
def test_evaluate_keys_values_and_nan():
    rng = np.random.default_rng(4)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded=True)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    out = M.evaluate(scores, labels)
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max"}
    out = M.evaluate(scores, labels, maps, masks)
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro"}
    assert out["aupro"] == pytest.approx(M.aupro(maps, masks, 0.3))
    regions = loco_regions(rng, masks, lambda r, c: None)
    out = M.evaluate(scores, labels, maps, masks, regions=regions, pro_limit=0.1, spro_limit=0.2)
    assert set(out) == set(M.METRIC_NAMES)
    assert out["aupro"] == pytest.approx(M.aupro(maps, masks, 0.1))
    assert out["auspro"] == pytest.approx(M.auspro(maps, regions, 0.2))
    assert all(type(v) is float for v in out.values())
    assert all(0.0 <= v <= 1.0 for v in out.values())
    # only good images: everything undefined, nothing raises
    out = M.evaluate(scores, np.zeros_like(labels), maps, np.zeros_like(masks))
    assert all(math.isnan(v) for v in out.values())


def test_evaluate_shape_errors():
    rng = np.random.default_rng(4)
    masks = blob_masks(rng)
    maps = random_maps(rng, masks, rounded=True)
    scores, labels = maps.max(axis=(1, 2)), masks.any(axis=(1, 2)).astype(int)
    with pytest.raises(ValueError, match="labels has 5 entries but scores has 6"):
        M.evaluate(scores, labels[:5])
    with pytest.raises(ValueError, match="maps has 5 images"):
        M.evaluate(scores, labels, maps[:5], masks[:5])
    with pytest.raises(ValueError, match=r"masks shape \(6, 24, 23\) does not match maps shape \(6, 24, 24\)"):
        M.evaluate(scores, labels, maps, masks[..., :-1])
    with pytest.raises(ValueError, match="without maps"):
        M.evaluate(scores, labels, masks=masks)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        M.evaluate(scores, labels, maps[0], masks[0])
    with pytest.raises(ValueError, match="spro_limit"):
        M.evaluate(scores, labels, spro_limit=2.0)


def test_metric_names_cover_evaluate_keys():
    assert set(M.METRIC_NAMES) == {
        "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro", "auspro"}
    assert all(isinstance(v, str) and v for v in M.METRIC_NAMES.values())


# ------------------------------------------------------------------------------ LOCO subsets
def test_evaluate_loco_matches_sklearn_on_each_subset():
    from sklearn.metrics import roc_auc_score

    from nbhelpers.metrics import evaluate_loco

    rng = np.random.default_rng(0)
    defects = ["good"] * 6 + ["logical_anomalies"] * 5 + ["structural_anomalies"] * 4
    labels = np.array([d != "good" for d in defects], int)
    scores = rng.normal(size=len(defects)) + 0.8 * labels
    maps = rng.random((len(defects), 8, 8)).astype(np.float32)
    regions = []
    for i, d in enumerate(defects):
        if d == "good":
            regions.append([])
            continue
        m = np.zeros((8, 8), bool)
        m[i % 6:i % 6 + 2, 1:4] = True
        maps[i][m] += 0.5
        regions.append([(m, float(m.sum()))])
    out = evaluate_loco(scores, labels, defects, maps, regions)
    good = np.array([d == "good" for d in defects])
    for key, folder in (("logical", "logical_anomalies"), ("structural", "structural_anomalies")):
        keep = good | (np.array(defects) == folder)
        assert out[f"image_auroc_{key}"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]))
        idx = np.flatnonzero(keep)
        assert out[f"auspro_{key}"] == pytest.approx(M.auspro(maps[idx], [regions[i] for i in idx]))
    assert out["image_auroc_mean"] == pytest.approx((out["image_auroc_logical"] + out["image_auroc_structural"]) / 2)
    assert out["auspro_mean"] == pytest.approx((out["auspro_logical"] + out["auspro_structural"]) / 2)
    # the mixed figure is neither subset's: a logical subset at chance hides behind an easy structural one
    mixed = roc_auc_score(labels, scores)
    assert mixed not in (out["image_auroc_logical"], out["image_auroc_structural"])
    only_images = evaluate_loco(scores, labels, defects)
    assert set(only_images) == {"image_auroc_logical", "image_auroc_structural", "image_auroc_mean"}
    with pytest.raises(ValueError, match="defects has 3 entries"):
        evaluate_loco(scores, labels, defects[:3])
    no_structural = evaluate_loco(scores[:11], labels[:11], defects[:11])
    assert math.isnan(no_structural["image_auroc_structural"]) and math.isnan(no_structural["image_auroc_mean"])
