"""Perlin noise and the thresholded, rotated Perlin masks of DRAEM."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: RngLike = None) -> np.ndarray:
    """2-D gradient (Perlin) noise of any size, ``float32[H, W]`` in about [-1, 1].

    ``res`` is the number of lattice cells along each axis (the noise "frequency"). Sizes need not
    be multiples of ``res``: pixel ``i`` sits at lattice coordinate ``i * res / H`` and is
    interpolated between the random unit gradients of its cell's four corners with the quintic fade
    ``6t^5 - 15t^4 + 10t^3`` (fully vectorised). Values are scaled by ``sqrt(2)`` as in DRAEM, so the
    theoretical range is [-1, 1].
    """
    h, w = _hw(shape)
    ry, rx = _hw(res)
    if h < 1 or w < 1 or ry < 1 or rx < 1:
        raise ValueError(f"perlin_noise: shape {shape} and res {res} must be positive.")
    rng = _rng(rng)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # [ry+1, rx+1, 2]

    y = np.arange(h, dtype=np.float64) * (ry / h)
    x = np.arange(w, dtype=np.float64) * (rx / w)
    iy = np.minimum(np.floor(y).astype(np.int64), ry - 1)
    ix = np.minimum(np.floor(x).astype(np.int64), rx - 1)
    fy = (y - iy)[:, None]  # [H, 1]
    fx = (x - ix)[None, :]  # [1, W]
    IY, IX = iy[:, None], ix[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[IY + dy, IX + dx]  # [H, W, 2]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    n00, n01, n10, n11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    ty, tx = _fade(fy), _fade(fx)
    top = n00 + tx * (n01 - n00)
    bottom = n10 + tx * (n11 - n10)
    noise = math.sqrt(2.0) * (top + ty * (bottom - top))
    return noise.astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: RngLike = None, min_scale: int = 0, max_scale: int = 6,
                threshold: float = 0.5, rotate: bool = True, max_tries: int = 10) -> np.ndarray:
    """DRAEM's anomaly region: thresholded, randomly rotated Perlin noise, ``bool[H, W]``, never empty.

    Per axis the lattice resolution is ``2**k`` with ``k ~ U{min_scale, ..., max_scale - 1}``; the
    noise is rotated by ``U(-90, 90)`` degrees (bilinear, zero outside, like DRAEM's imgaug Affine)
    and thresholded at ``threshold``. An empty result is redrawn up to ``max_tries`` times; after
    that the top 5 % of the last noise draw is used, so the mask is never empty.
    """
    h, w = _hw(shape)
    if not 0 <= min_scale < max_scale:
        raise ValueError(f"perlin_mask: need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}.")
    rng = _rng(rng)
    noise = None
    for _ in range(max(1, max_tries)):
        ky, kx = rng.integers(min_scale, max_scale, size=2)
        noise = perlin_noise((h, w), (2 ** int(ky), 2 ** int(kx)), rng)
        if rotate:
            angle = float(rng.uniform(-90.0, 90.0))
            noise = ndimage.rotate(noise, angle, reshape=False, order=1, mode="constant", cval=0.0)
        mask = noise > threshold
        if mask.any():
            return mask
    return noise >= np.quantile(noise, 0.95)
