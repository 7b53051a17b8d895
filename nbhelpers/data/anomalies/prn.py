"""PRN's anomaly generation (Sec. 3.4): extended anomalies from seen ones, simulated (HEA / HOA) ones on target areas."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from nbhelpers.data.anomalies.draem import check_float_image
from nbhelpers.data.anomalies.perlin import RngLike, _hw, _rng, perlin_mask
from nbhelpers.data.anomalies.textures import TextureSource, _default_textures, augment_texture

#: PRN's Aug1 colour operations (two are drawn per extended anomaly), keys of TEXTURE_AUGMENTATIONS.
EXTENDED_COLOR_AUGMENTATIONS = ("equalize", "solarize", "posterize", "sharpness", "autocontrast", "invert", "gamma")


#: Geometries of PRN's target areas.
TARGET_SHAPES = ("circle", "rectangle", "polygon")


def foreground_mask(image: np.ndarray, border: int = 4, max_border_std: float = 0.08,
                    min_fraction: float = 0.01, max_fraction: float = 0.95) -> np.ndarray:
    """Where an anomaly may be placed: the object for object images, everything for textures.

    The background is modelled by a quadratic surface per colour channel, fitted (least squares) to
    the ``border``-pixel frame of the image, so that vignetting and lighting gradients stay
    background. A frame that the surface does not explain (residual std ``> max_border_std``) means
    a texture: all pixels are foreground. Otherwise the foreground is every pixel farther from the
    surface than twice the 99th percentile of the frame's distances (at least 0.05), cleaned by a
    binary opening. A result covering less than ``min_fraction`` or more than ``max_fraction`` of
    the image also gives an all-True mask.

    Args:
        image: ``float32[H, W, 3]`` in [0, 1].

    Returns:
        ``bool[H, W]``.
    """
    img = check_float_image(image)
    h, w = img.shape[:2]
    b = max(1, min(int(border), h // 4, w // 4))
    frame = np.zeros((h, w), dtype=bool)
    frame[:b] = frame[-b:] = True
    frame[:, :b] = frame[:, -b:] = True
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    basis = np.stack([np.ones_like(yy), yy, xx, yy * yy, xx * xx, yy * xx], axis=-1)
    coef, *_ = np.linalg.lstsq(basis[frame], img[frame], rcond=None)
    dist = np.linalg.norm(img - basis @ coef, axis=-1)
    everything = np.ones((h, w), dtype=bool)
    if float((img[frame] - basis[frame] @ coef).std(axis=0).max()) > max_border_std:
        return everything
    fg = ndimage.binary_opening(dist > max(2.0 * float(np.quantile(dist[frame], 0.99)), 0.05), iterations=2)
    if not min_fraction <= float(fg.mean()) <= max_fraction:
        return everything
    return fg


def target_area(shape: tuple[int, int], rng: RngLike = None, foreground: np.ndarray | None = None,
                size_range: tuple[float, float] = (0.15, 0.5), shapes: Sequence[str] = TARGET_SHAPES) -> np.ndarray:
    """A PRN target area: a random circle, rectangle or polygon centred on a random foreground pixel,
    intersected with the foreground.

    Args:
        shape: ``(H, W)``.
        foreground: ``bool[H, W]`` (see :func:`foreground_mask`); ``None`` = the whole image.
        size_range: the shape's extent as a fraction of ``min(H, W)``.
        shapes: geometries to draw from (:data:`TARGET_SHAPES`).

    Returns:
        ``bool[H, W]``, never empty (it holds at least its centre pixel).
    """
    from skimage.draw import disk, polygon

    h, w = _hw(shape)
    rng = _rng(rng)
    fg = np.ones((h, w), bool) if foreground is None or not np.any(foreground) else np.asarray(foreground, bool)
    ys, xs = np.nonzero(fg)
    k = int(rng.integers(len(ys)))
    cy, cx = float(ys[k]), float(xs[k])
    extent = float(rng.uniform(*size_range)) * min(h, w)
    kind = shapes[int(rng.integers(len(shapes)))]
    area = np.zeros((h, w), dtype=bool)
    if kind == "circle":
        area[disk((cy, cx), max(1.0, extent / 2), shape=(h, w))] = True
    elif kind == "rectangle":
        hh, hw = extent * rng.uniform(0.3, 1.0, size=2) / 2
        area[max(0, int(cy - hh)):int(cy + hh) + 1, max(0, int(cx - hw)):int(cx + hw) + 1] = True
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = extent / 2 * rng.uniform(0.4, 1.0, n)
        area[polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), shape=(h, w))] = True
    else:
        raise ValueError(f"target_area: unknown shape {kind!r}; use {TARGET_SHAPES}.")
    area &= fg
    area[int(cy), int(cx)] = True
    return area


def random_affine(image: np.ndarray, mask: np.ndarray, rng: RngLike = None, center: tuple[float, float] | None = None,
                  rotate: float = 180.0, shear: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """PRN's Aug2: rotate, shear and shift an anomaly together with its mask.

    The mask's centroid is rotated by ``U(-rotate, rotate)`` degrees and sheared by
    ``U(-shear, shear)`` degrees about itself, then shifted to ``center`` (``(row, col)``; ``None``
    = a random pixel). Returns ``(float32[H, W, 3], bool[H, W])`` (bilinear image, nearest mask).
    """
    from skimage.transform import AffineTransform, warp

    rng = _rng(rng)
    m = np.asarray(mask, bool)
    h, w = m.shape
    if not m.any():
        raise ValueError("random_affine: the anomaly mask is empty.")
    ys, xs = np.nonzero(m)
    src = (float(xs.mean()), float(ys.mean()))  # skimage uses (x, y)
    if center is None:
        center = (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1)))
    dst = (float(center[1]), float(center[0]))
    shape_t = AffineTransform(rotation=np.deg2rad(rng.uniform(-rotate, rotate)),
                              shear=np.deg2rad(rng.uniform(-shear, shear)))
    tform = AffineTransform(translation=(-src[0], -src[1])) + shape_t + AffineTransform(translation=dst)
    out = warp(np.asarray(image, np.float32), tform.inverse, order=1, mode="constant", cval=0.0, preserve_range=True)
    out_mask = warp(m.astype(np.float32), tform.inverse, order=0, mode="constant", cval=0.0, preserve_range=True) > 0.5
    return np.clip(out, 0, 1).astype(np.float32), out_mask


def _overlapping_shift(image: np.ndarray, mask: np.ndarray, area: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Translate ``image float32[H,W,3]`` and ``mask bool[H,W]`` (zero fill) so that a random mask
    pixel lands on a random pixel of ``area bool[H,W]``: the moved mask overlaps ``area``."""
    mys, mxs = np.nonzero(mask)
    ays, axs = np.nonzero(area)
    i, j = int(rng.integers(len(mys))), int(rng.integers(len(ays)))
    dy, dx = int(ays[j] - mys[i]), int(axs[j] - mxs[i])
    h, w = mask.shape
    out_img, out_mask = np.zeros_like(image), np.zeros_like(mask)
    dst = (slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx)))
    src = (slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx)))
    out_img[dst], out_mask[dst] = image[src], mask[src]
    return out_img, out_mask


def extended_anomaly(normal: np.ndarray, anomaly: np.ndarray, anomaly_mask: np.ndarray, rng: RngLike = None,
                     foreground: np.ndarray | None = None, beta_range: tuple[float, float] = (0.0, 0.5),
                     n_color: int = 2, max_tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A PRN extended anomaly (Sec. 3.4, Fig. 5, Eq. 4) from one seen anomaly.

    1. ``A``: two colour operations of :data:`EXTENDED_COLOR_AUGMENTATIONS` on the anomalous image
       (Aug1);
    2. ``R``: the defect rotated, sheared and shifted onto a random pixel of a target area ``TA``
       (:func:`target_area` on ``foreground``) by :func:`random_affine` (Aug2), redrawn while ``R``
       does not overlap ``TA``; after ``max_tries`` the defect is translated (not rotated) so that
       one of its pixels lands on a pixel of ``TA`` (:func:`_overlapping_shift`), so ``M`` is
       never empty and never leaves ``TA``;
    3. ``M = mask(R) & TA`` and ``C = M * R`` (the clipped anomaly);
    4. ``E = (1 - M) * N + (1 - beta) * C + beta * M * N`` with the opacity ``beta ~ U[beta_range)``
       (PRN gives no range; a low one keeps the real defect visible).

    Args:
        normal, anomaly: ``float32[H, W, 3]`` in [0, 1] of the same size.
        anomaly_mask: ``bool[H, W]``, the seen anomaly's ground truth (must not be empty).
        foreground: where the defect may go (``None``: anywhere).

    Returns:
        ``(E float32[H, W, 3] in [0, 1], M float32[H, W] in {0, 1})``; pixels outside ``M`` are the
        normal image's, bit for bit.
    """
    n_img = check_float_image(normal, "normal")
    a_img = check_float_image(anomaly, "anomaly")
    if n_img.shape != a_img.shape or n_img.shape[:2] != np.shape(anomaly_mask):
        raise ValueError(f"extended_anomaly: normal {n_img.shape}, anomaly {a_img.shape} and mask "
                         f"{np.shape(anomaly_mask)} must have the same size.")
    rng = _rng(rng)
    h, w = n_img.shape[:2]
    ops = [EXTENDED_COLOR_AUGMENTATIONS[i]
           for i in rng.choice(len(EXTENDED_COLOR_AUGMENTATIONS), n_color, replace=False)]
    a_img = augment_texture(a_img, rng, names=ops)
    area = target_area((h, w), rng, foreground)
    ys, xs = np.nonzero(area)
    for _ in range(max(1, max_tries)):
        k = int(rng.integers(len(ys)))
        r_img, r_mask = random_affine(a_img, anomaly_mask, rng, center=(ys[k], xs[k]))
        m = r_mask & area
        if m.any():
            break
    else:
        r_img, r_mask = _overlapping_shift(a_img, np.asarray(anomaly_mask, bool), area, rng)
        m = r_mask & area
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * r_img + beta * n_img, 0.0, 1.0)
    out = np.where(m[..., None], blended, n_img).astype(np.float32)
    return out, m.astype(np.float32)


def simulated_anomaly(image: np.ndarray, source: np.ndarray, rng: RngLike = None,
                      foreground: np.ndarray | None = None, beta_range: tuple[float, float] = (0.0, 0.8),
                      min_scale: int = 0, max_scale: int = 6, threshold: float = 0.5,
                      max_tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``source`` into ``image`` through a Perlin region restricted to a PRN target area.

    ``TA = target_area(foreground)`` (a random circle, rectangle or polygon on the foreground, Sec.
    3.4), ``M = perlin_mask(...) & TA`` (the Perlin region is redrawn while ``M`` is empty; after
    ``max_tries`` ``M = TA``, so ``M`` never leaves the target area), ``beta ~ U[beta_range)``, and
    ``out = (1 - M) * image + (1 - beta) * M * source + beta * M * image``.

    Returns:
        ``(float32[H, W, 3] in [0, 1], mask float32[H, W] in {0, 1})``, mask never empty.
    """
    img = check_float_image(image)
    src = check_float_image(source, "source")
    rng = _rng(rng)
    h, w = img.shape[:2]
    area = target_area((h, w), rng, foreground)
    for _ in range(max(1, max_tries)):
        m = perlin_mask((h, w), rng, min_scale=min_scale, max_scale=max_scale, threshold=threshold) & area
        if m.any():
            break
    else:
        m = area
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * src + beta * img, 0.0, 1.0)
    return np.where(m[..., None], blended, img).astype(np.float32), m.astype(np.float32)


def heterologous_anomaly(image: np.ndarray, rng: RngLike = None, textures: TextureSource | None = None,
                         foreground: np.ndarray | None = None, n_augment: int = 3,
                         **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """PRN's heterologous anomaly (HEA): Perlin region x a random augmented texture (as DRAEM),
    placed in a target area. ``textures``: the pool (``None``: every offline texture; for training on a
    category use :meth:`TextureSource.for_category`, which leaves out its own source photograph).
    ``kwargs`` go to :func:`simulated_anomaly`."""
    rng = _rng(rng)
    textures = textures if textures is not None else _default_textures()
    tex = augment_texture(textures.sample(rng, check_float_image(image).shape[:2]), rng, n=n_augment)
    return simulated_anomaly(image, tex, rng, foreground, **kwargs)


def homologous_anomaly(image: np.ndarray, normal: np.ndarray, rng: RngLike = None,
                       foreground: np.ndarray | None = None, n_augment: int = 3,
                       **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """PRN's homologous anomaly (HOA): Perlin region x an augmented *normal* image.

    ``normal`` (another or the same normal image) is flipped at random, shifted by a random offset
    (cyclically, so its structure is misaligned with ``image``) and changed by ``n_augment`` of
    :data:`TEXTURE_AUGMENTATIONS`; then :func:`simulated_anomaly` pastes it into the target area.
    """
    rng = _rng(rng)
    src = check_float_image(normal, "normal")
    if rng.uniform() < 0.5:
        src = src[:, ::-1]
    if rng.uniform() < 0.5:
        src = src[::-1]
    h, w = src.shape[:2]
    shift = (int(rng.integers(h // 8, h - h // 8 + 1)), int(rng.integers(w // 8, w - w // 8 + 1)))
    src = np.roll(src, shift, axis=(0, 1))
    src = augment_texture(np.ascontiguousarray(src), rng, n=n_augment)
    return simulated_anomaly(image, src, rng, foreground, **kwargs)
