"""PRN anomaly generation (Sec. 3.4): target areas, extended anomalies (Eq. 4), HEA and HOA."""
from __future__ import annotations

import numpy as np
import pytest

from nbhelpers.data.anomalies import (
    TARGET_SHAPES,
    extended_anomaly,
    foreground_mask,
    heterologous_anomaly,
    homologous_anomaly,
    random_affine,
    simulated_anomaly,
    target_area,
)

SIZE = 64


def _object_image() -> tuple[np.ndarray, np.ndarray]:
    """A grey background with a lighting gradient and a dark-red disk; returns (image, disk mask)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = np.repeat((0.6 + 0.1 * yy + 0.05 * xx)[..., None], 3, axis=-1).astype(np.float32)
    disk = (yy - 0.5) ** 2 + (xx - 0.45) ** 2 < 0.25 ** 2
    img[disk] = (0.6, 0.1, 0.1)
    return img, disk


def _texture_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (SIZE, SIZE, 3)).astype(np.float32)


def _seen_anomaly() -> tuple[np.ndarray, np.ndarray]:
    """A grey image with a bright green square defect, and its mask."""
    img = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:32, 24:36] = True
    img[mask] = (0.1, 0.9, 0.2)
    return img, mask


def test_foreground_of_object_and_texture():
    img, disk = _object_image()
    fg = foreground_mask(img)
    iou = (fg & disk).sum() / (fg | disk).sum()
    assert iou > 0.9
    assert foreground_mask(_texture_image()).all()  # a busy border: texture, anywhere is fine


@pytest.mark.parametrize("shape", TARGET_SHAPES)
def test_target_area_inside_foreground(shape):
    _, disk = _object_image()
    for seed in range(5):
        area = target_area((SIZE, SIZE), np.random.default_rng(seed), disk, shapes=(shape,))
        assert area.any() and not (area & ~disk).any()
    a = target_area((SIZE, SIZE), np.random.default_rng(3), None, shapes=(shape,))
    b = target_area((SIZE, SIZE), np.random.default_rng(3), None, shapes=(shape,))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown shape"):
        target_area((SIZE, SIZE), 0, shapes=("star",))


def test_random_affine_moves_defect_to_center():
    img, mask = _seen_anomaly()
    out, out_mask = random_affine(img, mask, np.random.default_rng(0), center=(45.0, 12.0))
    ys, xs = np.nonzero(out_mask)
    assert abs(ys.mean() - 45) < 1.5 and abs(xs.mean() - 12) < 1.5
    assert 0.6 < out_mask.sum() / mask.sum() < 1.4  # rotation/shear keep the area roughly
    assert np.allclose(out[out_mask].mean(0), (0.1, 0.9, 0.2), atol=0.1)  # the defect's pixels moved with it
    with pytest.raises(ValueError, match="empty"):
        random_affine(img, np.zeros_like(mask), 0)


def test_extended_anomaly_follows_eq4():
    """With a constant-colour defect, no colour ops and a fixed beta, E = (1-b) a + b N inside M."""
    normal, disk = _object_image()
    anomaly = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[28:36, 28:36] = True
    anomaly[mask] = (0.0, 0.8, 1.0)
    anomaly[~mask] = (0.0, 0.8, 1.0)  # constant image: the warped defect is the constant colour
    beta = 0.3
    for seed in range(5):
        out, m = extended_anomaly(normal, anomaly, mask, np.random.default_rng(seed), foreground=disk,
                                  beta_range=(beta, beta), n_color=0)
        inside = m > 0
        assert inside.any() and not (inside & ~disk).any()  # placed in the target area on the object
        np.testing.assert_array_equal(out[~inside], normal[~inside])
        interior = inside.copy()
        interior[:2] = interior[-2:] = False
        interior[:, :2] = interior[:, -2:] = False
        expected = (1 - beta) * np.array((0.0, 0.8, 1.0), np.float32) + beta * normal[interior]
        np.testing.assert_allclose(out[interior], expected, atol=1e-5)


def test_extended_anomaly_is_visible():
    normal = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    anomaly, mask = _seen_anomaly()
    diffs = []
    for seed in range(10):
        out, m = extended_anomaly(normal, anomaly, mask, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert m.sum() > 0
        np.testing.assert_array_equal(out[m == 0], normal[m == 0])
        diffs.append(np.abs(out - normal)[m > 0].mean())
    assert np.mean(diffs) > 0.1  # the pasted defect is clearly visible


def test_extended_anomaly_rejects_bad_inputs():
    anomaly, mask = _seen_anomaly()
    with pytest.raises(TypeError, match="uint8"):
        extended_anomaly((anomaly * 255).astype(np.uint8), anomaly, mask, 0)
    with pytest.raises(ValueError, match="same size"):
        extended_anomaly(anomaly[:32], anomaly, mask, 0)


def test_simulated_anomaly_blend_and_target_area():
    img, disk = _object_image()
    source = np.zeros_like(img)
    for seed in range(5):
        out, m = simulated_anomaly(img, source, np.random.default_rng(seed), foreground=disk, beta_range=(0.25, 0.25))
        inside = m > 0
        assert inside.any() and not (inside & ~disk).any()
        np.testing.assert_array_equal(out[~inside], img[~inside])
        np.testing.assert_allclose(out[inside], 0.25 * img[inside], atol=1e-6)


@pytest.mark.parametrize("kind", ["heterologous", "homologous"])
def test_simulated_anomalies_are_visible(kind):
    img = _texture_image(1)
    other = _texture_image(2)
    diffs = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        if kind == "heterologous":
            out, m = heterologous_anomaly(img, rng)
        else:
            out, m = homologous_anomaly(img, other, rng)
        assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert m.any()
        np.testing.assert_array_equal(out[m == 0], img[m == 0])
        diffs.append(np.abs(out - img)[m > 0].mean())
    assert np.mean(diffs) > 0.05
    with pytest.raises(TypeError):
        heterologous_anomaly((img * 255).astype(np.uint8), 0)


def test_simulated_anomaly_stays_in_a_sampled_target_area():
    """M = Perlin region & a target area (at most half the image side, Sec. 3.4), not the whole
    foreground: on a plain image the masks' extents stay within the target-area sizes, while the
    Perlin regions alone (min_scale 0) spread over most of the image."""
    img, source = np.full((SIZE, SIZE, 3), 0.5, np.float32), np.zeros((SIZE, SIZE, 3), np.float32)
    spans = []
    for seed in range(12):
        _, m = simulated_anomaly(img, source, np.random.default_rng(seed), min_scale=0, max_scale=1)
        ys, xs = np.nonzero(m)
        spans.append(max(np.ptp(ys), np.ptp(xs)) + 1)
    assert max(spans) <= SIZE // 2 + 2, spans  # target_area's extent <= 0.5 * min(H, W)


def test_simulated_anomaly_falls_back_to_the_target_area_not_the_image():
    img, disk = _object_image()
    for seed in range(3):  # threshold 5: the Perlin region is always empty
        _, m = simulated_anomaly(img, np.zeros_like(img), np.random.default_rng(seed), foreground=disk,
                                 threshold=5.0, max_tries=2)
        assert m.any() and not (m.astype(bool) & ~disk).any()


def test_extended_anomaly_never_pastes_outside_the_target_area():
    """A ring-shaped defect whose centroid lies in its hole never overlaps a one-pixel target area
    after the affine moves; the fallback translates one of its pixels onto that pixel."""
    normal = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    anomaly = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    ring = np.abs(np.hypot(yy - 32, xx - 32) - 10) < 1.5
    anomaly[ring] = (1.0, 0.0, 0.0)
    spot = np.zeros((SIZE, SIZE), bool)
    spot[40, 17] = True
    for seed in range(4):
        out, m = extended_anomaly(normal, anomaly, ring, np.random.default_rng(seed), foreground=spot, n_color=0,
                                  beta_range=(0.0, 0.0), max_tries=3)
        assert np.array_equal(m > 0, spot)
        np.testing.assert_allclose(out[40, 17], (1.0, 0.0, 0.0))  # a defect pixel, not background
        np.testing.assert_array_equal(out[~spot], normal[~spot])


def test_prn_training_textures_leave_out_the_category_photograph(synth_root):
    from nbhelpers.data.layouts import load_split
    from nbhelpers.methods import create

    train = load_split(synth_root, "grass").train
    data = create("prn", "smoke", device="cpu", weights=None).training_set(train[:2])
    assert "grass" not in data.textures.names and len(data.textures) > 0
