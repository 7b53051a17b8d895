"""Drawing primitives of SynthAD: smooth noise, shading, compositing, distances, shapes."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(Y, X)`` (float32, read-only)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    y.setflags(write=False)
    x.setflags(write=False)
    return y, x


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


@lru_cache(maxsize=32)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """``[size, cells + 2]`` cubic B-spline weights that upsample a coarse grid (separably)."""
    x = (np.arange(size, dtype=np.float64) + 0.5) * cells / size + 0.5
    t = np.abs(x[:, None] - np.arange(cells + 2)[None, :])
    w = np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    w.setflags(write=False)
    return w


def _value_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise with about ``cells`` blobs across the image."""
    cells = max(2, int(round(cells)))
    low = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    w = _upsampler(size, cells)
    up = w @ low @ w.T
    up -= up.mean()
    return up / (up.std() + 1e-6)


def _light(az: float, el: float) -> np.ndarray:
    """Unit light vector ``(x, y, z)`` (image y points down) from azimuth and elevation."""
    return _f32(math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))


def _shade(h: np.ndarray, albedo: np.ndarray, light: np.ndarray, amb: float = 0.3, ks: float = 0.3,
           shininess: float = 24.0) -> np.ndarray:
    """Lambert + Blinn-Phong shading of height field ``h`` (pixels) with ``albedo`` [H, W, 3] or [3]."""
    gy, gx = np.gradient(h)
    nz = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny = -gx * nz, -gy * nz
    ndl = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    half = light + _f32(0, 0, 1)
    half = half / np.linalg.norm(half)
    ndh = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
    diffuse = (amb + (1.0 - amb) * ndl)[..., None]
    return (albedo * diffuse + (ks * ndh ** shininess)[..., None]).astype(np.float32)


def _over(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1.0 - a) + colour * a


def _drop_shadow(img: np.ndarray, alpha: np.ndarray, size: int, strength: float = 0.35,
                 offset: float = 0.012, blur: float = 0.012) -> np.ndarray:
    k = max(1, int(round(offset * size)))
    sh = np.zeros_like(alpha)
    sh[k:, k:] = alpha[:-k, :-k]
    sh = ndi.gaussian_filter(sh, max(0.5, blur * size))
    return img * (1.0 - strength * sh)[..., None]


def _dilate(mask: np.ndarray, size: int, frac: float = 1 / 128) -> np.ndarray:
    it = max(1, int(round(frac * size)))
    return ndi.binary_dilation(mask, iterations=it)


def _changed(img: np.ndarray, img2: np.ndarray, alpha: np.ndarray, alpha2: np.ndarray, h: np.ndarray,
             h2: np.ndarray, size: int) -> np.ndarray:
    """Ground truth of a shape deformation: where the silhouette, the surface height or the object's
    shading visibly changed (drop-shadow changes on the background excluded), slightly dilated."""
    on_object = (alpha > 0.5) | (alpha2 > 0.5)
    dh = np.abs(h2 - h) * on_object
    thr = max(0.5 * size / 256, 0.2 * float(dh.max()))
    shading = (np.abs(img2 - img).max(-1) > 0.08) & on_object
    return _dilate(((alpha2 > 0.5) ^ (alpha > 0.5)) | (dh > thr) | shading, size, 1 / 64)


def _resample(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points along a polyline (``[N, 2]`` as ``(y, x)``) every ``step`` pixels."""
    seg = np.diff(points, axis=0)
    lens = np.hypot(seg[:, 0], seg[:, 1])
    out = [points[:1]]
    for p, d, n in zip(points[:-1], seg, lens):
        k = max(1, int(math.ceil(n / step)))
        t = (np.arange(1, k + 1, dtype=np.float32) / k)[:, None]
        out.append(p + t * d)
    return np.concatenate(out, axis=0)


def _polyline_dist(polylines: list[np.ndarray], size: int) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest of the polylines."""
    canvas = np.ones((size, size), bool)
    for pts in polylines:
        p = _resample(np.asarray(pts, np.float32))
        iy, ix = np.floor(p[:, 0]).astype(int), np.floor(p[:, 1]).astype(int)
        keep = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
        canvas[iy[keep], ix[keep]] = False
    if canvas.all():
        return np.full((size, size), np.inf, np.float32)
    return ndi.distance_transform_edt(canvas).astype(np.float32)


def _blob_radius(rng: np.random.Generator, theta: np.ndarray, r: float, irregularity: float) -> np.ndarray:
    rr = np.full_like(theta, r)
    for k in range(2, 6):
        rr += r * irregularity * rng.uniform(-1, 1) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return rr


def _polar(size: int, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    Y, X = _grid(size)
    dy, dx = Y - np.float32(cy), X - np.float32(cx)
    return np.hypot(dy, dx), np.arctan2(dy, dx)


def _pick(drng: np.random.Generator, support: np.ndarray) -> tuple[float, float]:
    idx = np.flatnonzero(support)
    if len(idx) == 0:
        idx = np.arange(support.size)
    k = int(idx[drng.integers(len(idx))])
    size = support.shape[1]
    return k // size + 0.5, k % size + 0.5


def _rect_sdf(size: int, cy: float, cx: float, hh: float, hw: float, rc: float,
              angle: float = 0.0) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a rounded rectangle."""
    Y, X = _grid(size)
    dy, dx = Y - np.float32(cy), X - np.float32(cx)
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = dx * c + dy * s, -dx * s + dy * c
    qx, qy = np.abs(dx) - (hw - rc), np.abs(dy) - (hh - rc)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - rc


def _bevel(inside: np.ndarray, width: float, height: float) -> np.ndarray:
    """Rounded-edge height profile from the inside distance (pixels, positive inside)."""
    prof = np.clip(inside / max(width, 1e-3), 0.0, 1.0)
    return (height * np.sqrt(1.0 - (1.0 - prof) ** 2)).astype(np.float32)


def _grain(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    return (rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(sigma))
