"""SynthAD: a deterministic, offline anomaly-detection benchmark written in the real on-disk layouts.

Nine categories, generated from a seed with NumPy, SciPy and the photographs that scikit-image
ships (no download):

* **textures** (MVTec AD layout): ``brick``, ``grass``, ``gravel`` -- random crops of
  ``skimage.data.brick()/grass()/gravel()`` with rotation, scale, brightness and contrast jitter,
  tinted to colour. Defects: scratch, hole, contamination, crack.
* **objects** (MVTec AD layout): ``washer`` (metal ring), ``screw`` (threaded bolt), ``capsule``
  (two-tone pill) -- shaded height-field renderings with varying pose, lighting and slight shape
  jitter, on a background with a drop shadow. Defects: scratch, crack, hole, contamination,
  deformation (locally warped outline).
* **logical** (MVTec LOCO AD layout), each breaking a rule with parts that look normal:
  ``nuts`` (counting: exactly three of a tray's six compartments hold a nut, which ones varies;
  missing / extra nut), ``kit`` (placement: ring, bolt, cap and nut go round four slots clockwise
  in that order from any slot; swapped parts / a part duplicated), ``cables`` (pairing: the top and
  the bottom cable share a colour and a gauge drawn per image; mismatched colour / gauge); plus a
  structural ``contamination`` each. One mask file per defect region, filled with the defect's
  ``pixel_value``; saturation thresholds in ``defects_config.json``.

  The design rule of the logical categories: *every logical anomaly is made only of local
  appearances that occur in normal training images* (an empty compartment, a part in a slot, a
  cable of a colour), and the related parts lie far apart, so patch matching cannot see it while a
  comparison of whole images can (``tests/test_synth.py`` checks the first half at smoke scale;
  notebook 01 measures both halves with the baseline and :mod:`nbhelpers.image_level`).

:data:`VERSION` changes whenever a category's content changes; readers refuse a category of
another version (:func:`check_version`) and bench rows and checkpoints carry it in their key
(:func:`dataset_tag`), so results of an old tree are never mixed with new ones.

Trees written by :func:`generate` (``<out>/synthad.json`` describes them)::

    <out>/<texture|object>/train/good/000.png
    <out>/<texture|object>/test/{good,<defect>}/000.png
    <out>/<texture|object>/ground_truth/<defect>/000_mask.png              (0/255)
    <out>/<logical>/defects_config.json
    <out>/<logical>/{train,validation}/good/000.png
    <out>/<logical>/test/{good,logical_anomalies,structural_anomalies}/000.png
    <out>/<logical>/ground_truth/<logical|structural>_anomalies/000/000.png, 001.png ...

Every sample is drawn from ``numpy.random.default_rng([seed, crc32(category), part, index, 0])``
(its normal content) and ``[..., 1, attempt]`` (its defect), so a seed gives byte-identical files,
and :func:`render_sample` with ``clean=True`` renders an anomalous sample without its defect.

Example:
    >>> from nbhelpers.data.synth import generate, load_manifest
    >>> root = generate("data/synthad", preset="smoke", categories=["grass", "nuts"])  # doctest: +SKIP
    >>> load_manifest(root)["categories"]["nuts"]["layout"]                           # doctest: +SKIP
    'mvtec_loco'
"""
from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from nbhelpers.errors import ConfigError, DatasetError
from nbhelpers.progress import progress as _progress

__all__ = [
    "CATEGORIES",
    "KINDS",
    "MANIFEST",
    "SYNTH_PRESETS",
    "CategorySpec",
    "DefectType",
    "PlannedFile",
    "category_plan",
    "check_version",
    "dataset_tag",
    "ensure",
    "generate",
    "load_manifest",
    "render_sample",
]

MANIFEST = "synthad.json"
VERSION = 2
KINDS = ("texture", "object", "logical")
LOGICAL = "logical_anomalies"
STRUCTURAL = "structural_anomalies"

#: Sizes and counts per preset. ``n_val`` only applies to the MVTec LOCO layout (``validation/good``;
#: MVTec AD has no validation folder). ``n_test_per_defect`` counts per defect *type*: a LOCO
#: ``logical_anomalies`` folder holds ``n_test_per_defect`` images of each logical defect type.
SYNTH_PRESETS: dict[str, dict[str, int]] = {
    "smoke": dict(size=64, n_train=8, n_val=4, n_test_good=4, n_test_per_defect=2),
    "cpu": dict(size=256, n_train=60, n_val=10, n_test_good=40, n_test_per_defect=20),
    "paper": dict(size=256, n_train=240, n_val=40, n_test_good=60, n_test_per_defect=20),
}

_PARTS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class DefectType:
    """One defect type of a category.

    Attributes:
        name: defect name (``defect_name`` in ``defects_config.json``).
        folder: test sub-folder that holds its images (the defect name in MVTec AD layout,
            ``logical_anomalies``/``structural_anomalies`` in MVTec LOCO layout).
        pixel_value: value its LOCO mask files are filled with.
        saturation: sPRO saturation threshold: a fraction of the region's area when ``relative``,
            else an absolute pixel count given as a fraction of the image area (so it scales with
            the generated size; :meth:`config` turns it into pixels).
        relative: how to read ``saturation``.
    """

    name: str
    folder: str
    pixel_value: int = 255
    saturation: float = 1.0
    relative: bool = True

    def config(self, size: int) -> dict[str, Any]:
        """The ``defects_config.json`` entry of this defect for images of ``size`` x ``size``."""
        sat: float | int = float(self.saturation) if self.relative else int(round(self.saturation * size * size))
        return {"defect_name": self.name, "pixel_value": int(self.pixel_value),
                "saturation_threshold": sat, "relative_saturation": bool(self.relative)}


#: ``render(rng, drng, size, defect) -> (float32 image [H, W, 3] in [0, 1], list of bool regions)``;
#: ``rng`` draws the normal content (always the same draws), ``drng`` the defect (``None`` = normal).
RenderFn = Callable[[np.random.Generator, "np.random.Generator | None", int, "DefectType | None"],
                    "tuple[np.ndarray, list[np.ndarray]]"]


@dataclass(frozen=True)
class CategorySpec:
    """One SynthAD category.

    Attributes:
        name: category folder name.
        kind: ``texture``, ``object`` or ``logical``.
        layout: ``mvtec_ad`` or ``mvtec_loco``.
        defect_types: its defect types, in the order they are written.
        description: one line for the manifest and the notebooks.
        render: the render function (see ``RenderFn``).
    """

    name: str
    kind: str
    layout: str
    defect_types: tuple[DefectType, ...]
    description: str
    render: RenderFn = field(repr=False, compare=False)

    @property
    def defects(self) -> list[str]:
        """Test sub-folder names of the anomalies (what readers report as ``Sample.defect``)."""
        return list(dict.fromkeys(d.folder for d in self.defect_types))

    @property
    def defect_names(self) -> list[str]:
        return [d.name for d in self.defect_types]

    def defect_type(self, name: str) -> DefectType:
        for d in self.defect_types:
            if d.name == name:
                return d
        raise ConfigError(f"SynthAD category {self.name!r} has no defect {name!r}; "
                          f"valid: {', '.join(self.defect_names)}.")


# ------------------------------------------------------------------------------------- primitives
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


# ---------------------------------------------------------------------------------------- defects
# Each defect takes a float image [H, W, 3], the defect rng, a support mask where it may sit
# (an object's surface, or the image minus a margin) and returns (image, bool mask).
_FOREIGN = (_f32(0.15, 0.35, 0.85), _f32(0.85, 0.2, 0.55), _f32(0.95, 0.6, 0.1), _f32(0.55, 0.25, 0.8),
            _f32(0.2, 0.65, 0.35), _f32(0.95, 0.9, 0.35))


def _scratch(img: np.ndarray, drng: np.random.Generator, support: np.ndarray, size: int,
             clip: np.ndarray | None = None, tone: float | None = None,
             width: tuple[float, float] = (0.006, 0.01)) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = _pick(drng, support)
    length = size * drng.uniform(0.2, 0.35)
    a = drng.uniform(0, np.pi)
    bend = drng.uniform(-0.35, 0.35)
    t = np.linspace(-0.5, 0.5, 32, dtype=np.float32)
    d = np.array([math.sin(a), math.cos(a)], np.float32)
    n = np.array([d[1], -d[0]], np.float32)
    pts = np.array([cy, cx], np.float32) + (t * length)[:, None] * d + (bend * length * (t * t - 0.25))[:, None] * n
    w = max(1.0, size * drng.uniform(*width))
    dist = _polyline_dist([pts], size)
    fade = 0.75 + 0.25 * _value_noise(drng, size, 6)  # uneven depth along the scratch
    alpha = np.clip(w / 2 + 0.5 - dist, 0, 1) * np.clip(fade, 0.4, 1.0)
    mask = dist <= w / 2 + 1.0
    if clip is not None:
        alpha, mask = alpha * clip, mask & (clip > 0.5)
    if tone is None:  # bright or dark, more often the one that contrasts with the surface
        lum = float(img[mask].mean()) if mask.any() else 0.5
        tone = 0.95 if drng.random() < 1.0 - lum else 0.05
    s = drng.uniform(0.7, 0.9)
    return _over(img, np.float32(tone), alpha * s), mask


def _crack(img: np.ndarray, drng: np.random.Generator, support: np.ndarray, size: int,
           clip: np.ndarray | None = None, start: tuple[float, float] | None = None,
           angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = start if start is not None else _pick(drng, support)
    a = drng.uniform(0, 2 * np.pi) if angle is None else angle
    step = size * drng.uniform(0.014, 0.022)
    n = int(drng.integers(9, 15))
    trunk = [np.array([cy, cx], np.float32)]
    angles = []
    for _ in range(n):
        a += drng.normal(0, 0.28)
        angles.append(a)
        trunk.append(trunk[-1] + step * np.array([math.sin(a), math.cos(a)], np.float32))
    branches = []
    for _ in range(int(drng.integers(1, 3))):
        k = int(drng.integers(2, n - 1))
        b = angles[k] + drng.choice([-1, 1]) * drng.uniform(0.5, 1.1)
        pts = [trunk[k]]
        for _ in range(int(drng.integers(3, 6))):
            b += drng.normal(0, 0.3)
            pts.append(pts[-1] + step * 0.8 * np.array([math.sin(b), math.cos(b)], np.float32))
        branches.append(np.array(pts))
    w = max(1.0, size * drng.uniform(0.007, 0.011))
    d1 = _polyline_dist([np.array(trunk)], size)
    d2 = _polyline_dist(branches, size)
    alpha = np.maximum(np.clip(w / 2 + 0.5 - d1, 0, 1), np.clip(w * 0.3 + 0.5 - d2, 0, 1))
    mask = (d1 <= w / 2 + 1.0) | (d2 <= w * 0.3 + 1.0)
    if clip is not None:
        alpha, mask = alpha * clip, mask & (clip > 0.5)
    dark = drng.uniform(0.7, 0.85)
    return img * (1.0 - dark * alpha)[..., None], mask


def _hole(img: np.ndarray, drng: np.random.Generator, support: np.ndarray, size: int,
          clip: np.ndarray | None = None, radius: tuple[float, float] = (0.025, 0.045),
          light_az: float = -2.3) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = _pick(drng, support)
    r = size * drng.uniform(*radius)
    rho, th = _polar(size, cy, cx)
    coef = np.random.default_rng(drng.integers(2**32))
    rr = _blob_radius(coef, th, r, 0.2)
    inner = np.clip(rr - rho + 0.5, 0, 1)
    rim = np.clip(rr * 1.4 - rho + 0.5, 0, 1) - inner
    # Inside: a dark pit, its far wall lit (depth gradient along the light direction).
    wall = 0.5 + 0.5 * np.cos(th - light_az) * np.clip(rho / np.maximum(rr, 1e-3), 0, 1)
    pit = img * np.float32(0.12) + (0.02 + 0.08 * wall)[..., None]
    out = _over(img, pit, inner)
    # Rim: raised edge, bright towards the light and dark away from it.
    rim_gain = 1.0 + 0.45 * rim * np.cos(th - light_az + np.pi)
    out = out * rim_gain[..., None]
    mask = (inner > 0.3) | (rim > 0.3)
    if clip is not None:
        out = _over(img, out, clip)
        mask &= clip > 0.5
    return out, mask


def _contamination(img: np.ndarray, drng: np.random.Generator, support: np.ndarray, size: int,
                   clip: np.ndarray | None = None, colours: tuple[np.ndarray, ...] = _FOREIGN,
                   radius: tuple[float, float] = (0.03, 0.06)) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = _pick(drng, support)
    r = size * drng.uniform(*radius)
    rho, th = _polar(size, cy, cx)
    rr = _blob_radius(drng, th, r, 0.35)
    soft = max(1.0, 0.15 * r)
    alpha = np.clip((rr - rho) / soft + 0.5, 0, 1) * np.float32(drng.uniform(0.75, 0.95))
    colour = colours[int(drng.integers(len(colours)))]
    tex = 0.8 + 0.2 * _value_noise(drng, size, size / 10) + 0.08 * _value_noise(drng, size, size / 3)
    fibre = colour * np.clip(tex, 0.4, 1.4)[..., None]
    mask = alpha > 0.2
    if clip is not None:
        alpha, mask = alpha * clip, mask & (clip > 0.5)
    return _over(img, fibre, alpha), mask


_SURFACE: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch, "crack": _crack, "hole": _hole, "contamination": _contamination,
}


# --------------------------------------------------------------------------------------- textures
@lru_cache(maxsize=4)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    g = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    if g.ndim == 3:
        g = g[..., :3].mean(-1)
    lo, hi = np.percentile(g, [1, 99])
    g = np.clip((g - lo) / max(hi - lo, 1.0), 0, 1)
    g.setflags(write=False)
    return g


@lru_cache(maxsize=32)
def _photo_filtered(name: str, blur: float) -> np.ndarray:
    g = _photo(name)
    out = ndi.gaussian_filter(g, blur) if blur > 0.3 else g.copy()
    out.setflags(write=False)
    return out


_TEXTURES: dict[str, dict[str, Any]] = {
    "brick": dict(lo=_f32(0.20, 0.09, 0.06), hi=_f32(0.95, 0.62, 0.47), fov=(0.40, 0.52), gamma=1.0,
                  foreign=(_FOREIGN[0], _FOREIGN[4], _FOREIGN[5], _FOREIGN[3])),
    "grass": dict(lo=_f32(0.03, 0.10, 0.02), hi=_f32(0.72, 0.95, 0.42), fov=(0.40, 0.52), gamma=0.9,
                  foreign=(_FOREIGN[0], _FOREIGN[1], _FOREIGN[2], _FOREIGN[3])),
    "gravel": dict(lo=_f32(0.09, 0.08, 0.07), hi=_f32(0.93, 0.89, 0.82), fov=(0.40, 0.52), gamma=1.0,
                   foreign=(_FOREIGN[0], _FOREIGN[1], _FOREIGN[2], _FOREIGN[4])),
}


def _texture(name: str) -> RenderFn:
    cfg = _TEXTURES[name]

    def render(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
               defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
        src = _photo(name).shape[0]
        fov = src * rng.uniform(*cfg["fov"])
        ang = rng.uniform(-0.14, 0.14)
        flip = bool(rng.integers(2))
        c, s = math.cos(ang), math.sin(ang)
        half = fov / 2 * (abs(c) + abs(s)) + 2
        centre = rng.uniform(half, src - half, 2)
        contrast, bright = rng.uniform(0.85, 1.15), rng.uniform(-0.06, 0.06)
        tint = 1.0 + rng.normal(0, 0.02, 3).astype(np.float32)
        ratio = fov / size
        photo = _photo_filtered(name, round(max(0.0, (ratio - 1) * 0.5) * 4) / 4)  # anti-aliasing
        mat = np.array([[c, -s], [s, c]]) * ratio
        offset = centre - mat @ np.array([size / 2, size / 2])
        g = ndi.affine_transform(photo, mat, offset=offset, output_shape=(size, size), order=1, mode="reflect")
        if flip:
            g = g[:, ::-1]
        g = np.clip((g - 0.5) * contrast + 0.5 + bright, 0, 1) ** cfg["gamma"]
        img = cfg["lo"] + g[..., None] * (cfg["hi"] * tint - cfg["lo"])
        img = img + _grain(rng, size, 0.008)
        if defect is None:
            return img, []
        margin = int(0.12 * size)
        support = np.zeros((size, size), bool)
        support[margin:-margin, margin:-margin] = True
        kw = {"contamination": {"colours": cfg["foreign"]}, "scratch": {"width": (0.008, 0.013)}}.get(defect.name, {})
        img, mask = _SURFACE[defect.name](img, drng, support, size, **kw)
        return img, [mask]

    return render


# ---------------------------------------------------------------------------------------- objects
def _washer(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
            defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    cy, cx = size * (0.5 + rng.uniform(-0.04, 0.04, 2))
    R = size * 0.36 * rng.uniform(0.97, 1.03)
    r = R * 0.42 * rng.uniform(0.96, 1.04)
    light = _light(rng.uniform(-2.6, -1.9), rng.uniform(0.75, 1.0))
    gain = rng.uniform(0.92, 1.08)
    steel = _f32(0.60, 0.61, 0.64) * np.float32(gain) * (1 + rng.normal(0, 0.02, 3)).astype(np.float32)
    harm = [(rng.uniform(0, 0.012), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    rings = rng.standard_normal(int(size * 4) + 8).astype(np.float32)
    rings = ndi.gaussian_filter1d(rings, 1.0)
    bg = _f32(0.13, 0.13, 0.145) * (1 + 0.12 * _value_noise(rng, size, 5))[..., None] + _grain(rng, size, 0.012)
    grain = _grain(rng, size, 0.008)
    rho, th = _polar(size, cy, cx)

    def draw(dent: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Rt = np.full_like(th, R)
        for k, (amp, ph) in enumerate(harm, start=2):
            Rt += R * amp * np.cos(k * th + ph)
        h_extra = 0.0
        if dent is not None:
            phi, depth, width = dent
            g = np.exp(-0.5 * (np.angle(np.exp(1j * (th - phi))) / width) ** 2).astype(np.float32)
            Rt -= R * depth * g
            h_extra = 0.06 * R * g * np.clip((rho - 0.65 * R) / (0.35 * R), 0, 1) * (rho < R)
        inside = np.minimum(Rt - rho, rho - r)
        alpha = np.clip(inside + 0.5, 0, 1)
        h = _bevel(inside, 0.08 * R, 0.06 * R) + h_extra
        brushed = rings[np.clip((rho * 4).astype(int), 0, len(rings) - 1)]
        albedo = steel * (1 + 0.05 * brushed)[..., None]
        col = _shade(h, albedo, light, amb=0.28, ks=0.45, shininess=30) + grain
        img = _over(_drop_shadow(bg, alpha, size, 0.5), col, alpha)
        return img, alpha, h

    img, alpha, h = draw()
    if defect is None:
        return img, []
    name = defect.name
    if name == "deformation":
        dent = (drng.uniform(0, 2 * np.pi), drng.uniform(0.06, 0.1), drng.uniform(0.12, 0.22))
        img2, alpha2, h2 = draw(dent)
        return img2, [_changed(img, img2, alpha, alpha2, h, h2, size)]
    inside = np.minimum(R - rho, rho - r)
    support = inside > 0.1 * R
    if name == "crack":
        phi = drng.uniform(0, 2 * np.pi)
        outer = bool(drng.integers(2))
        rad = R - 1.5 if outer else r + 1.5
        start = (cy + rad * math.sin(phi), cx + rad * math.cos(phi))
        img, mask = _crack(img, drng, support, size, clip=alpha, start=start, angle=phi + (np.pi if outer else 0))
    else:
        img, mask = _SURFACE[name](img, drng, support, size, clip=alpha)
    return img, [mask]


def _screw_geometry(size: int, cy: float, cx: float, ang: float, L: float, Rs: float, Rh: float,
                    pitch: float, phase: float, damage: tuple[float, float, float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha, height and axial coordinate of a screw lying on its side (head at ``t = 0``)."""
    Y, X = _grid(size)
    c, s = math.cos(ang), math.sin(ang)
    u = (X - cx) * c + (Y - cy) * s
    v = -(X - cx) * s + (Y - cy) * c
    t = u + L / 2
    Lh = 0.16 * L
    tip = 0.12 * L
    thread_amp = 0.14 * Rs
    phase_t = 2 * np.pi * (t + 0.35 * v) / pitch + phase
    wave = np.float32(thread_amp) * np.abs(np.sin(phase_t * 0.5)) * 2 - thread_amp
    shaft = (t >= Lh + 0.04 * L) & (t <= L)
    amp = np.ones_like(t)
    Rt = np.where(t < Lh, Rh * np.sqrt(np.clip(1 - ((0.45 * Lh - t) / (0.45 * Lh)).clip(0) ** 2, 0.05, 1)),
                  np.float32(Rs))
    if damage is not None:  # chewed thread: threads flattened and the outline bitten off on one side
        t0, width, side = damage
        g = np.exp(-0.5 * ((t - t0) / width) ** 2).astype(np.float32)
        amp = 1 - g
        one_side = 0.5 * (1 + np.tanh(v * side / (0.3 * Rs)))
        Rt = Rt - (0.08 + 0.3 * one_side) * Rs * g
    Rt = Rt + np.where(shaft, wave * amp, 0)
    taper = np.clip((L - t) / tip, 0, 1)
    Rt = np.where(t > L - tip, Rt * np.sqrt(taper), Rt)
    neck = (t >= Lh) & (t < Lh + 0.04 * L)
    Rt = np.where(neck, Rs * 0.92, Rt)
    Rt = np.where((t < 0) | (t > L), 0, np.maximum(Rt, 0))
    inside = Rt - np.abs(v)
    alpha = np.where(Rt > 0, np.clip(inside + 0.5, 0, 1), 0)
    h = np.sqrt(np.clip(Rt * Rt - v * v, 0, None)) + np.where(shaft & (inside > 0), 0.5 * wave * amp, 0)
    return alpha.astype(np.float32), h.astype(np.float32), t


def _screw(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
           defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    cy, cx = size * (0.5 + rng.uniform(-0.05, 0.05, 2))
    ang = rng.uniform(0, 2 * np.pi)
    L = size * 0.64 * rng.uniform(0.97, 1.03)
    Rs = size * 0.042 * rng.uniform(0.97, 1.03)
    Rh = size * 0.082 * rng.uniform(0.97, 1.03)
    pitch = size * 0.05 * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * np.pi)
    light = _light(rng.uniform(-2.6, -1.9), rng.uniform(0.7, 1.0))
    metal = _f32(0.55, 0.56, 0.58) * np.float32(rng.uniform(0.9, 1.1))
    bg = _f32(0.80, 0.80, 0.78) * np.float32(rng.uniform(0.95, 1.03))
    bg = bg * (1 + 0.03 * _value_noise(rng, size, 4))[..., None]
    bg = bg + _grain(rng, size, 0.012)
    grain = _grain(rng, size, 0.008)

    def draw(damage=None):
        alpha, h, t = _screw_geometry(size, cy, cx, ang, L, Rs, Rh, pitch, phase, damage)
        col = _shade(h, metal, light, amb=0.3, ks=0.55, shininess=22) + grain
        return _over(_drop_shadow(bg, alpha, size, 0.4), col, alpha), alpha, h, t

    img, alpha, h, t = draw()
    if defect is None:
        return img, []
    if defect.name == "deformation":
        damage = (drng.uniform(0.35, 0.8) * L, drng.uniform(0.035, 0.06) * L, float(drng.choice([-1, 1])))
        img2, alpha2, h2, _ = draw(damage)
        return img2, [_changed(img, img2, alpha, alpha2, h, h2, size)]
    support = ndi.binary_erosion(alpha > 0.5, iterations=max(1, size // 96))
    if defect.name == "scratch" and drng.random() < 0.5:  # scratch on the head, as in MVTec's scratch_head
        support &= t < 0.16 * L
    img, mask = _SURFACE[defect.name](img, drng, support, size, clip=alpha)
    return img, [mask]


def _capsule(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
             defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    cy, cx = size * (0.5 + rng.uniform(-0.04, 0.04, 2))
    ang = rng.uniform(-0.2, 0.2)
    Rc = size * 0.15 * rng.uniform(0.97, 1.03)
    Lc = size * 0.42 * rng.uniform(0.97, 1.03)
    split = Lc * rng.uniform(-0.04, 0.04)
    light = _light(rng.uniform(-2.6, -1.9), rng.uniform(0.75, 1.0))
    colA = _f32(0.72, 0.13, 0.10) * (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
    colB = _f32(0.92, 0.89, 0.80) * (1 + rng.normal(0, 0.015, 3)).astype(np.float32)
    bg = _f32(0.70, 0.74, 0.78) * (1 + 0.04 * _value_noise(rng, size, 4))[..., None] + _grain(rng, size, 0.01)
    grain = _grain(rng, size, 0.006)
    Y, X = _grid(size)
    c, s = math.cos(ang), math.sin(ang)
    u = (X - cx) * c + (Y - cy) * s
    v = -(X - cx) * s + (Y - cy) * c
    tu = np.clip(u, -Lc / 2, Lc / 2)
    d = np.hypot(u - tu, v)

    def draw(dent=None):
        Rt = np.full_like(d, Rc)
        if dent is not None:  # squeezed side: radius pressed in locally on one side
            u0, width, depth, side = dent
            g = np.exp(-0.5 * ((u - u0) / width) ** 2)
            Rt = Rt - depth * Rc * g * 0.5 * (1 + np.tanh(v * side / (0.3 * Rc)))
        alpha = np.clip(Rt - d + 0.5, 0, 1)
        h = np.sqrt(np.clip(Rt * Rt - d * d, 0, None))
        albedo = np.where((u < split)[..., None], colA, colB)
        seam = np.clip(1.2 - np.abs(u - split), 0, 1) * 0.35
        albedo = albedo * (1 - seam)[..., None]
        col = _shade(h, albedo, light, amb=0.35, ks=0.5, shininess=40) + grain
        return _over(_drop_shadow(bg, alpha, size, 0.3), col, alpha), alpha, h

    img, alpha, h = draw()
    if defect is None:
        return img, []
    if defect.name == "deformation":
        dent = (drng.uniform(-0.45, 0.45) * Lc, drng.uniform(0.05, 0.09) * size, drng.uniform(0.2, 0.3),
                float(drng.choice([-1, 1])))
        img2, alpha2, h2 = draw(dent)
        return img2, [_changed(img, img2, alpha, alpha2, h, h2, size)]
    support = ndi.binary_erosion(alpha > 0.5, iterations=max(1, size // 32))
    kw = {"radius": (0.02, 0.035)} if defect.name == "hole" else {}
    img, mask = _SURFACE[defect.name](img, drng, support, size, clip=alpha, **kw)
    return img, [mask]


# ---------------------------------------------------------------------------------------- logical
def _hex_nut(size: int, cy: float, cx: float, rot: float, Rn: float) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (hole shows what is below) and height of a hex nut seen from above."""
    Y, X = _grid(size)
    dy, dx = Y - np.float32(cy), X - np.float32(cx)
    c, s = math.cos(rot), math.sin(rot)
    u, v = dx * c + dy * s, -dx * s + dy * c
    apo = Rn * 0.866
    dh = np.maximum(np.abs(u), np.maximum(np.abs(0.5 * u + 0.866 * v), np.abs(0.5 * u - 0.866 * v))) - apo
    rho = np.hypot(u, v)
    rh = 0.48 * apo
    inside = np.minimum(-dh, rho - rh)
    alpha = np.clip(inside + 0.5, 0, 1)
    h = _bevel(inside, 0.2 * apo, 0.25 * apo) - 0.6 * np.clip(rho - 0.9 * apo, 0, None)  # chamfered corners
    thread = 0.04 * apo * np.sin(rho * 2 * np.pi / max(1.0, 0.12 * apo))  # thread inside the hole
    thread = thread * np.clip((rh * 1.25 - rho) / (0.25 * rh), 0, 1)
    return alpha.astype(np.float32), (h + thread).astype(np.float32)


def _footprint(alpha: np.ndarray, size: int) -> np.ndarray:
    """Region of an object for ground truth: its filled silhouette, slightly dilated."""
    return _dilate(ndi.binary_fill_holes(alpha > 0.5), size, 1 / 100)


#: Tray compartments of ``nuts`` (centre ``(y, x)`` as fractions of the image): two rows of three.
_NUT_COMPARTMENTS = tuple((y, x) for y in (0.3, 0.7) for x in (0.2, 0.5, 0.8))
_NUTS_FILLED = 3  # the counting rule: exactly this many compartments hold a nut


def _nuts(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
          defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Counting rule: a tray of six identical compartments of which exactly three hold a nut.

    Which three varies from image to image, so an empty compartment and a filled one are both
    normal everywhere; only the *number* of nuts is wrong in a logical anomaly (two or four).
    """
    light = _light(rng.uniform(-2.5, -2.0), rng.uniform(0.8, 1.0))
    bg = _f32(0.22, 0.20, 0.18) * (1 + 0.15 * _value_noise(rng, size, 6))[..., None] + _grain(rng, size, 0.012)
    ty, tx = size * (0.5 + rng.uniform(-0.012, 0.012, 2))
    tray_sdf = _rect_sdf(size, ty, tx, 0.455 * size, 0.465 * size, 0.04 * size)
    tray_alpha = np.clip(-tray_sdf + 0.5, 0, 1)
    th = _bevel(-tray_sdf, 0.015 * size, 0.02 * size)
    centres = [(ty + size * (y - 0.5), tx + size * (x - 0.5)) for y, x in _NUT_COMPARTMENTS]
    for cy, cx in centres:  # recessed compartments
        th = th - _bevel(-_rect_sdf(size, cy, cx, 0.15 * size, 0.12 * size, 0.03 * size), 0.012 * size, 0.015 * size)
    tray_col = _f32(0.70, 0.72, 0.75) * (1 + 0.04 * _value_noise(rng, size, 3))[..., None]
    Rn = 0.075 * size * rng.uniform(0.97, 1.03)

    def nut_in(k: int, g: np.random.Generator) -> tuple[float, float, float]:
        cy, cx = centres[k]
        return cy + size * g.uniform(-0.03, 0.03), cx + size * g.uniform(-0.02, 0.02), g.uniform(0, np.pi / 3)

    filled = sorted(int(k) for k in rng.choice(len(centres), _NUTS_FILLED, replace=False))
    nuts = {k: nut_in(k, rng) for k in filled}
    brass = _f32(0.80, 0.66, 0.32) * np.float32(rng.uniform(0.92, 1.06))
    grain = _grain(rng, size, 0.008)

    regions: list[np.ndarray] = []
    structural = None
    if defect is not None:
        if defect.name == "missing_nut":  # two nuts: the empty compartment that lost its nut is the region
            k = filled[int(drng.integers(len(filled)))]
            regions.append(_footprint(_hex_nut(size, *nuts.pop(k), Rn)[0], size))
        elif defect.name == "extra_nut":  # four nuts: the added one is the region
            empty = [k for k in range(len(centres)) if k not in nuts]
            k = empty[int(drng.integers(len(empty)))]
            nuts[k] = nut_in(k, drng)
            regions.append(_footprint(_hex_nut(size, *nuts[k], Rn)[0], size))
        else:
            structural = defect.name

    img = _drop_shadow(bg, tray_alpha, size, 0.45, offset=0.015, blur=0.02)
    img = _over(img, _shade(th, tray_col, light, amb=0.35, ks=0.15, shininess=12) + grain, tray_alpha)
    for ny, nx, rot in nuts.values():
        a, h = _hex_nut(size, ny, nx, rot, Rn)
        img = _drop_shadow(img, a, size, 0.35)
        img = _over(img, _shade(h, brass, light, amb=0.3, ks=0.5, shininess=28) + grain, a)
    if structural is not None:
        support = tray_sdf < -0.06 * size
        img, mask = _contamination(img, drng, support, size)
        regions.append(mask)
    return img, regions


def _ring_part(size: int, cy: float, cx: float, R: float) -> tuple[np.ndarray, np.ndarray]:
    rho, _ = _polar(size, cy, cx)
    w = 0.3 * R
    dd = np.abs(rho - 0.7 * R)
    return np.clip(w - dd + 0.5, 0, 1).astype(np.float32), np.sqrt(np.clip(w * w - dd * dd, 0, None)).astype(np.float32)


def _cap_part(size: int, cy: float, cx: float, R: float) -> tuple[np.ndarray, np.ndarray]:
    rho, th = _polar(size, cy, cx)
    inside = R * (1 + 0.02 * np.cos(24 * th)) - rho  # knurled rim
    h = _bevel(inside, 0.25 * R, 0.35 * R) + 0.1 * R * np.clip(1 - (rho / (0.55 * R)) ** 2, 0, 1)
    return np.clip(inside + 0.5, 0, 1).astype(np.float32), h.astype(np.float32)


def _bolt_part(size: int, cy: float, cx: float, R: float, ang: float) -> tuple[np.ndarray, np.ndarray]:
    a, h, _ = _screw_geometry(size, cy, cx, ang, 2.1 * R, 0.22 * R, 0.42 * R, 0.26 * R, 0.0)
    return a, h


#: Slots of ``kit`` (centre ``(y, x)`` as fractions of the image) in clockwise order, far apart on
#: a foam insert that fills the whole picture.
_KIT_SLOTS = ((0.28, 0.28), (0.28, 0.72), (0.72, 0.72), (0.72, 0.28))


def _kit(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
         defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Placement rule: a ring, a bolt, a cap and a nut go round four identical slots clockwise, in
    that order, starting from any slot.

    The start varies from image to image, so every part is normal in every slot, and the slots sit
    far apart on an insert without visible edges: a slot holding the wrong part looks locally like
    a normal slot; only the *order* of the parts is wrong.
    """
    light = _light(rng.uniform(-2.5, -2.0), rng.uniform(0.8, 1.0))
    foam = _f32(0.24, 0.26, 0.30) * (1 + 0.05 * _value_noise(rng, size, 5))[..., None]
    h = 0.3 * _value_noise(rng, size, 24)  # foam surface
    oy, ox = size * rng.uniform(-0.012, 0.012, 2)
    slots = [(size * y + oy, size * x + ox) for y, x in _KIT_SLOTS]
    slot_alpha = np.zeros((size, size), np.float32)
    for sy, sx in slots:
        sd = _rect_sdf(size, sy, sx, 0.15 * size, 0.15 * size, 0.035 * size)
        h = h - _bevel(-sd, 0.012 * size, 0.015 * size)
        slot_alpha = np.maximum(slot_alpha, np.clip(-sd + 0.5, 0, 1))
    foam = foam * (1 - 0.3 * slot_alpha)[..., None]
    R = 0.095 * size * rng.uniform(0.97, 1.03)
    bolt_ang = rng.uniform(-0.3, 0.3) + np.pi / 4
    nut_rot = rng.uniform(0, np.pi / 3)
    start = int(rng.integers(len(slots)))
    jit = [(sy + size * rng.uniform(-0.015, 0.015), sx + size * rng.uniform(-0.015, 0.015)) for sy, sx in slots]
    grain = _grain(rng, size, 0.008) + _grain(rng, size, 0.012)
    parts = [  # (colour, geometry(cy, cx), shading (ambient, specular, shininess))
        (_f32(0.92, 0.45, 0.10), lambda y, x: _ring_part(size, y, x, R), (0.4, 0.2, 16)),
        (_f32(0.62, 0.63, 0.66), lambda y, x: _bolt_part(size, y, x, R, bolt_ang), (0.3, 0.55, 24)),
        (_f32(0.15, 0.35, 0.80), lambda y, x: _cap_part(size, y, x, 0.85 * R), (0.35, 0.35, 30)),
        (_f32(0.80, 0.66, 0.32), lambda y, x: _hex_nut(size, y, x, nut_rot, R), (0.3, 0.5, 28)),
    ]
    should = [(k - start) % len(slots) for k in range(len(slots))]  # the part slot k holds by the rule
    held = list(should)  # the part slot k holds
    regions: list[np.ndarray] = []
    structural = None

    def slot_region(k: int) -> np.ndarray:  # what slot k holds now and what it should hold
        return _footprint(np.maximum(parts[held[k]][1](*jit[k])[0], parts[should[k]][1](*jit[k])[0]), size)

    if defect is not None:
        if defect.name == "swapped_parts":
            i, j = (int(v) for v in drng.choice(len(slots), 2, replace=False))
            held[i], held[j] = held[j], held[i]
            regions += [slot_region(i), slot_region(j)]
        elif defect.name == "duplicated_part":  # a second copy of one part, the part it replaces is absent
            i, j = (int(v) for v in drng.choice(len(slots), 2, replace=False))
            held[i] = held[j]
            regions.append(slot_region(i))
        else:
            structural = defect.name
    img = _shade(h, foam, light, amb=0.4, ks=0.08, shininess=8) + grain
    for k, (y, x) in enumerate(jit):
        colour, geom, (amb, ks, sh) = parts[held[k]]
        a, ph = geom(y, x)
        img = _drop_shadow(img, a, size, 0.4, offset=0.008, blur=0.008)
        img = _over(img, _shade(ph, colour, light, amb=amb, ks=ks, shininess=sh) + grain, a)
    if structural is not None:
        margin = int(0.1 * size)
        support = np.zeros((size, size), bool)
        support[margin:-margin, margin:-margin] = True
        img, mask = _contamination(img, drng, support, size, colours=(_f32(0.9, 0.9, 0.85), _f32(0.75, 0.85, 0.2)))
        regions.append(mask)
    return img, regions


_CABLE_COLOURS = (_f32(0.80, 0.12, 0.10), _f32(0.12, 0.30, 0.80), _f32(0.92, 0.78, 0.10), _f32(0.10, 0.58, 0.25))
_CABLE_GAUGES = (0.026, 0.05)  # cable radius as a fraction of the image: thin, thick


def _bezier(p0, p1, p2, p3, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t * t * p2 + t ** 3 * p3).astype(np.float32)


def _tube(size: int, path: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    d = _polyline_dist([path], size)
    alpha = np.clip(r + 0.5 - d, 0, 1).astype(np.float32)
    h = np.sqrt(np.clip(r * r - d * d, 0, None)).astype(np.float32)
    return alpha, ndi.gaussian_filter(h, 0.7)


def _cables(rng: np.random.Generator, drng: np.random.Generator | None, size: int,
            defect: DefectType | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pairing rule: two cables, one along the top and one along the bottom, always share one colour
    and one gauge, both drawn per image (four colours, thin or thick).

    Every colour and gauge occurs in normal images and the cables lie far apart, so a cable of the
    wrong colour or gauge looks locally normal; only the *combination* is wrong.
    """
    light = _light(rng.uniform(-2.4, -2.1), rng.uniform(0.85, 1.0))
    bg = _f32(0.84, 0.85, 0.82) * np.float32(rng.uniform(0.98, 1.015))
    bg = bg * (1 + 0.015 * _value_noise(rng, size, 5))[..., None]
    bg = bg + _grain(rng, size, 0.01)
    colour = int(rng.integers(len(_CABLE_COLOURS)))
    gauge = int(rng.integers(len(_CABLE_GAUGES)))
    scale = rng.uniform(0.95, 1.05)
    paths, plugs = [], []
    for base in (0.2, 0.8):
        y0 = size * (base + rng.uniform(-0.02, 0.02))
        x0, x3 = size * rng.uniform(0.08, 0.11), size * rng.uniform(0.89, 0.92)
        y3 = y0 + size * rng.uniform(-0.03, 0.03)
        p1 = (y0 + size * rng.uniform(-0.03, 0.03), size * rng.uniform(0.3, 0.4))
        p2 = (y0 + size * rng.uniform(-0.03, 0.03), size * rng.uniform(0.6, 0.7))
        paths.append(_bezier(np.array([y0, x0], np.float32), np.array(p1, np.float32),
                             np.array(p2, np.float32), np.array([y3, x3], np.float32)))
        plugs += [(y0, x0), (y3, x3)]
    grain = _grain(rng, size, 0.008)
    colours, gauges = [colour, colour], [gauge, gauge]
    regions: list[np.ndarray] = []
    structural = None
    if defect is not None:
        k = int(drng.integers(2))
        if defect.name == "mismatched_colour":
            colours[k] = [i for i in range(len(_CABLE_COLOURS)) if i != colour][int(drng.integers(len(_CABLE_COLOURS) - 1))]
        elif defect.name == "mismatched_gauge":
            gauges[k] = 1 - gauge
        else:
            structural = defect.name
        if structural is None:  # the odd cable, at the larger of its two gauges
            r = size * max(_CABLE_GAUGES[gauge], _CABLE_GAUGES[gauges[k]]) * scale
            regions.append(_footprint(_tube(size, paths[k], r)[0], size))
    img = bg
    for k in range(2):
        a, h = _tube(size, paths[k], size * _CABLE_GAUGES[gauges[k]] * scale)
        img = _drop_shadow(img, a, size, 0.35, offset=0.01, blur=0.01)
        img = _over(img, _shade(h, _CABLE_COLOURS[colours[k]], light, amb=0.35, ks=0.45, shininess=30) + grain, a)
    for py, px in plugs:  # grey plugs over the cable ends
        sd = _rect_sdf(size, py, px, 0.04 * size, 0.035 * size, 0.01 * size)
        a = np.clip(-sd + 0.5, 0, 1)
        img = _drop_shadow(img, a, size, 0.4)
        img = _over(img, _shade(_bevel(-sd, 0.012 * size, 0.015 * size), _f32(0.45, 0.46, 0.48), light,
                                amb=0.4, ks=0.2, shininess=14) + grain, a)
    if structural is not None:
        support = np.zeros((size, size), bool)
        support[int(0.12 * size):int(0.88 * size), int(0.15 * size):int(0.85 * size)] = True
        img, mask = _contamination(img, drng, support, size, radius=(0.025, 0.045),
                                   colours=(_f32(0.35, 0.22, 0.12), _f32(0.2, 0.2, 0.2), _f32(0.6, 0.3, 0.7)))
        regions.append(mask)
    return img, regions


# -------------------------------------------------------------------------------------- registry
def _ad(*names: str) -> tuple[DefectType, ...]:
    return tuple(DefectType(n, n) for n in names)


_NUT_AREA = 0.8 * 2.598 * 0.075 ** 2  # 80 % of a nut's area, as a fraction of the image

CATEGORIES: dict[str, CategorySpec] = {
    spec.name: spec
    for spec in (
        CategorySpec("brick", "texture", "mvtec_ad", _ad("crack", "hole", "contamination"),
                     "Crops of a brick wall photograph (skimage.data.brick), tinted red-brown.", _texture("brick")),
        CategorySpec("grass", "texture", "mvtec_ad", _ad("scratch", "hole", "contamination"),
                     "Crops of a grass photograph (skimage.data.grass), tinted green.", _texture("grass")),
        CategorySpec("gravel", "texture", "mvtec_ad", _ad("scratch", "crack", "contamination"),
                     "Crops of a gravel photograph (skimage.data.gravel), tinted warm grey.", _texture("gravel")),
        CategorySpec("washer", "object", "mvtec_ad", _ad("scratch", "crack", "deformation"),
                     "A brushed steel washer on dark cloth; deformation = dented outer rim.", _washer),
        CategorySpec("screw", "object", "mvtec_ad", _ad("scratch", "contamination", "deformation"),
                     "A threaded screw lying in any orientation; deformation = chewed thread.", _screw),
        CategorySpec("capsule", "object", "mvtec_ad", _ad("crack", "hole", "deformation"),
                     "A red/cream gelatin capsule; hole = poke, deformation = squeezed side.", _capsule),
        CategorySpec("nuts", "logical", "mvtec_loco", (
            DefectType("missing_nut", LOGICAL, 255, 1.0, True),
            DefectType("extra_nut", LOGICAL, 254, _NUT_AREA, False),
            DefectType("contamination", STRUCTURAL, 253, 1.0, True),
        ), "Counting rule: exactly three of the tray's six compartments hold a nut (which ones varies).", _nuts),
        CategorySpec("kit", "logical", "mvtec_loco", (
            DefectType("swapped_parts", LOGICAL, 255, 1.0, True),
            DefectType("duplicated_part", LOGICAL, 254, 1.0, True),
            DefectType("contamination", STRUCTURAL, 253, 1.0, True),
        ), "Placement rule: ring, bolt, cap and nut go round the four slots clockwise in that order, from any slot.", _kit),
        CategorySpec("cables", "logical", "mvtec_loco", (
            DefectType("mismatched_colour", LOGICAL, 255, 0.5, True),
            DefectType("mismatched_gauge", LOGICAL, 254, 0.5, True),
            DefectType("contamination", STRUCTURAL, 253, 1.0, True),
        ), "Pairing rule: the top and the bottom cable share one colour and one gauge (drawn per image).", _cables),
    )
}


# ----------------------------------------------------------------------------------- sampling API
def _category(name: str) -> CategorySpec:
    if name not in CATEGORIES:
        raise ConfigError(f"SynthAD has no category {name!r}; valid names: {', '.join(CATEGORIES)} "
                          f"(or a kind: {', '.join(KINDS)}).")
    return CATEGORIES[name]


def _key(seed: int, category: str, part: int, index: int) -> list[int]:
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}.")
    return [int(seed), zlib.crc32(category.encode()), int(part), int(index)]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_sample(category: str, index: int, split: str = "train", defect: str | None = None, seed: int = 0,
                  size: int = 256, clean: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one SynthAD sample in memory, exactly as :func:`generate` writes it.

    Args:
        category: a name of :data:`CATEGORIES`.
        index: sample index within its split part (``test`` + ``defect``: within that defect type).
        split: ``train``, ``val`` or ``test``.
        defect: defect type name (``None``: a normal ``test/good`` sample; only with ``split="test"``).
        clean: render the anomalous sample's normal counterpart: same pose, lighting and jitter,
            without the defect (for checks and teaching).

    Returns:
        ``(uint8 image [size, size, 3], regions)`` with one ``bool[size, size]`` per defect region
        (empty for normal samples).
    """
    spec = _category(category)
    if split not in _PARTS:
        raise ConfigError(f"split {split!r} is not valid; valid: {', '.join(_PARTS)}.")
    dtype = None
    part = _PARTS.index(split)
    if defect is not None:
        if split != "test":
            raise ConfigError(f"defect {defect!r} given for split {split!r}; anomalies only exist in 'test'.")
        dtype = spec.defect_type(defect)
        part = 3 + spec.defect_types.index(dtype)
    key = _key(seed, category, part, index)
    if dtype is None or clean:
        img, _ = spec.render(np.random.default_rng(key + [0]), None, size, None)
        return _to_uint8(img), []
    min_area = max(4, int(2e-4 * size * size))
    for attempt in range(16):  # redraw a defect that would be clipped away (rare)
        img, regions = spec.render(np.random.default_rng(key + [0]), np.random.default_rng(key + [1, attempt]),
                                   size, dtype)
        if regions and all(int(r.sum()) >= min_area for r in regions):
            break
    else:  # pragma: no cover - would be a bug in a renderer
        raise RuntimeError(f"SynthAD {category}/{defect} #{index}: could not draw a visible defect.")
    return _to_uint8(img), [np.asarray(r, bool) for r in regions]


def _params(preset: str, overrides: dict[str, Any]) -> dict[str, int]:
    if preset not in SYNTH_PRESETS:
        raise ConfigError(f"SynthAD preset {preset!r} is not known; valid presets: {', '.join(SYNTH_PRESETS)}.")
    params = dict(SYNTH_PRESETS[preset])
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ConfigError(f"unknown SynthAD setting(s) {', '.join(unknown)}; valid: {', '.join(params)}.")
    params.update({k: int(v) for k, v in overrides.items()})
    if params["size"] < 32:
        raise ConfigError(f"size must be at least 32 pixels, got {params['size']}.")
    for k in ("n_train", "n_test_good", "n_test_per_defect"):
        if params[k] < 1:
            raise ConfigError(f"{k} must be at least 1, got {params[k]}.")
    if params["n_val"] < 0:
        raise ConfigError(f"n_val must be >= 0, got {params['n_val']}.")
    return params


def _resolve(categories: list[str] | str | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [c for c in categories.split(",") if c]
    names: list[str] = []
    for c in categories:
        group = [n for n, s in CATEGORIES.items() if s.kind == c] if c in KINDS else [_category(c).name]
        names += [n for n in group if n not in names]
    if not names:
        raise ConfigError(f"no SynthAD category selected; valid names: {', '.join(CATEGORIES)}.")
    return names


@dataclass(frozen=True)
class PlannedFile:
    """One image :func:`generate` writes: its path (relative to the category folder), the
    ``split``/``index``/``defect`` it is rendered from and its mask path (file for MVTec AD, folder
    for MVTec LOCO; ``None`` for normal images)."""

    relpath: str
    split: str
    index: int
    defect: DefectType | None
    mask_relpath: str | None


def category_plan(category: str, params: dict[str, int]) -> list[PlannedFile]:
    """Every file of one category: image path (relative to the category), split, index, defect."""
    spec = _category(category)
    loco = spec.layout == "mvtec_loco"
    jobs = [PlannedFile(f"train/good/{i:03d}.png", "train", i, None, None) for i in range(params["n_train"])]
    if loco:
        jobs += [PlannedFile(f"validation/good/{i:03d}.png", "val", i, None, None) for i in range(params["n_val"])]
    jobs += [PlannedFile(f"test/good/{i:03d}.png", "test", i, None, None) for i in range(params["n_test_good"])]
    counter: dict[str, int] = {}
    for dt in spec.defect_types:
        for i in range(params["n_test_per_defect"]):
            n = counter.get(dt.folder, 0)
            counter[dt.folder] = n + 1
            mask = f"ground_truth/{dt.folder}/{n:03d}" if loco else f"ground_truth/{dt.folder}/{n:03d}_mask.png"
            jobs.append(PlannedFile(f"test/{dt.folder}/{n:03d}.png", "test", i, dt, mask))
    return jobs


def _counts(spec: CategorySpec, params: dict[str, int]) -> dict[str, int]:
    counts = {"train": params["n_train"], "val": params["n_val"] if spec.layout == "mvtec_loco" else 0,
              "test/good": params["n_test_good"]}
    for dt in spec.defect_types:
        key = f"test/{dt.folder}"
        counts[key] = counts.get(key, 0) + params["n_test_per_defect"]
    return counts


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Write a PNG without metadata (no time stamp: the same pixels give the same bytes)."""
    Image.fromarray(arr).save(path, format="PNG", compress_level=3)


def _entry(spec: CategorySpec, params: dict[str, int], seed: int, preset: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": spec.kind, "layout": spec.layout, "defects": spec.defects, "description": spec.description,
        "defect_types": {f: [d.name for d in spec.defect_types if d.folder == f] for f in spec.defects},
        "version": VERSION, "seed": int(seed), "preset": preset, "params": dict(params),
        "counts": _counts(spec, params),
    }
    if spec.layout == "mvtec_loco":
        entry["defects_config"] = [d.config(params["size"]) for d in spec.defect_types]
    return entry


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_leftovers(out: Path, name: str) -> None:
    """Remove temporary folders of ``name`` left behind by interrupted runs (not by running ones)."""
    for d in list(out.glob(f".tmp-{name}-*")) + list(out.glob(f".old-{name}-*")):
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and (not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)


def _write_category(out: Path, spec: CategorySpec, params: dict[str, int], seed: int, show: bool) -> None:
    _clean_leftovers(out, spec.name)
    tmp = out / f".tmp-{spec.name}-{os.getpid()}"
    size = params["size"]
    jobs = category_plan(spec.name, params)
    folders = {Path(j.relpath).parent for j in jobs} | {Path(j.mask_relpath).parent for j in jobs if j.mask_relpath}
    for d in sorted(folders):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    try:
        for job in _progress(jobs, desc=f"SynthAD {spec.name}", enabled=None if show else False):
            img, regions = render_sample(spec.name, job.index, job.split, job.defect.name if job.defect else None,
                                         seed=seed, size=size)
            _save_png(img, tmp / job.relpath)
            if job.defect is None:
                continue
            if spec.layout == "mvtec_loco":
                mdir = tmp / job.mask_relpath
                mdir.mkdir(parents=True, exist_ok=True)
                for k, region in enumerate(regions):
                    _save_png(region.astype(np.uint8) * np.uint8(job.defect.pixel_value), mdir / f"{k:03d}.png")
            else:
                union = np.logical_or.reduce(regions)
                _save_png(union.astype(np.uint8) * np.uint8(255), tmp / job.mask_relpath)
        if spec.layout == "mvtec_loco":
            config = [d.config(size) for d in spec.defect_types]
            (tmp / "defects_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        final = out / spec.name
        if final.exists():
            old = out / f".old-{spec.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        return None
    return data


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def generate(out: str | Path, categories: list[str] | str | None = None, preset: str = "cpu", seed: int = 0,
             overwrite: bool = False, progress: bool = True, **overrides: int) -> Path:
    """Write SynthAD to ``out`` (one folder per category plus ``synthad.json``) and return ``out``.

    Args:
        out: dataset root (``DATA_ROOT`` of the notebooks).
        categories: names from :data:`CATEGORIES` and/or kinds (``texture``, ``object``,
            ``logical``); ``None`` = all nine. A comma-separated string works too.
        preset: a key of :data:`SYNTH_PRESETS` (``smoke``, ``cpu``, ``paper``).
        seed: the same seed gives byte-identical files.
        overwrite: regenerate categories whose folder exists; with ``False`` they are skipped
            (their manifest entry is kept), except SynthAD categories of another :data:`VERSION`,
            which are always regenerated (never mixed with current ones).
        progress: show a progress bar per category.
        **overrides: replace preset values (``size``, ``n_train``, ``n_val``, ``n_test_good``,
            ``n_test_per_defect``).

    Each category is written to a hidden temporary folder and renamed into place when complete,
    so an interrupted run leaves no half category. The manifest is rewritten after every category.

    Raises:
        ConfigError: unknown category, preset or setting (the message lists the valid ones).
    """
    params = _params(preset, overrides)
    names = _resolve(categories)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; expected the SynthAD output folder.")
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out / MANIFEST) or {}
    entries: dict[str, Any] = dict(manifest.get("categories", {}))
    manifest = {"name": "SynthAD", "version": VERSION, "seed": int(seed), "size": params["size"],
                "preset": preset, "params": params, "categories": entries}
    for name in names:
        spec = CATEGORIES[name]
        exists = (out / name).is_dir()
        outdated = _outdated(entries.get(name))
        if exists and not overwrite and not outdated:  # keep its entry; an unknown origin is marked for ensure()
            entries.setdefault(name, {"kind": spec.kind, "layout": spec.layout, "defects": spec.defects,
                                      "description": spec.description, "unverified": True})
        else:
            _write_category(out, spec, params, seed, progress)
            entries[name] = _entry(spec, params, seed, preset)
        manifest["categories"] = {n: entries[n] for n in CATEGORIES if n in entries}
        _write_manifest(out, manifest)
    return out


def _outdated(entry: Any) -> bool:
    """Whether a manifest entry describes a category written by another SynthAD :data:`VERSION`
    (entries of version 1 carry no version; folders of unknown origin are not SynthAD's)."""
    return isinstance(entry, dict) and not entry.get("unverified") and entry.get("version", 1) != VERSION


def check_version(root: str | Path, category: str) -> None:
    """Refuse a SynthAD category that an older (or newer) generator wrote.

    Does nothing for folders that hold no ``synthad.json`` (any other dataset) or for categories
    the manifest does not know.

    Raises:
        DatasetError: one line naming the folder, both versions and the command that regenerates it.
    """
    root = Path(root).expanduser()
    manifest = _read_manifest(root / MANIFEST)
    entry = (manifest or {}).get("categories", {}).get(category)
    if _outdated(entry):
        raise DatasetError(
            f"{root / category}: written by SynthAD version {entry.get('version', 1)}, but this nbhelpers reads "
            f"version {VERSION} (its categories changed). Regenerate it with `nbhelpers synth --out {root}` "
            f"(outdated categories are rewritten; `make run` does this too).")


def dataset_tag(root: str | Path, category: str) -> str:
    """``synthad-v<VERSION>`` for a SynthAD category, else ``""``: part of the key of bench rows and
    checkpoints, so results computed on another generator version are never reused."""
    manifest = _read_manifest(Path(root).expanduser() / MANIFEST)
    entry = (manifest or {}).get("categories", {}).get(category)
    return f"synthad-v{entry.get('version', 1)}" if isinstance(entry, dict) and not entry.get("unverified") else ""


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read ``<root>/synthad.json``.

    Raises:
        DatasetError: the manifest is missing or malformed (the message says how to generate it).
    """
    path = Path(root).expanduser() / MANIFEST
    fix = (f"Generate SynthAD with `nbhelpers synth --out {Path(root)}` or "
           f"`nbhelpers.data.synth.generate({str(root)!r})`.")
    if not path.is_file():
        raise DatasetError(f"{path}: SynthAD manifest is missing, so {root} holds no generated SynthAD. {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read as JSON ({exc}). Delete it and regenerate. {fix}") from exc
    if not isinstance(data, dict) or data.get("name") != "SynthAD" or not isinstance(data.get("categories"), dict):
        raise DatasetError(f"{path}: not a SynthAD manifest (expected name 'SynthAD' and a categories "
                           f"mapping). Delete it and regenerate. {fix}")
    return data


def ensure(out: str | Path, preset: str = "cpu", seed: int = 0, categories: list[str] | str | None = None,
           progress: bool = True) -> Path:
    """Generate SynthAD into ``out`` only where it is missing or stale; return ``out``.

    A category is (re)generated when the manifest is missing, has no entry for it, its folder is
    missing, or the entry was made with another :data:`VERSION`, seed or preset settings (a category
    folder of unknown origin is regenerated, i.e. overwritten).
    """
    params = _params(preset, {})
    names = _resolve(categories)
    out = Path(out).expanduser()
    manifest = _read_manifest(out / MANIFEST) or {}
    entries = manifest.get("categories", {})
    stale = [
        n for n in names
        if not (out / n).is_dir()
        or not isinstance(entries.get(n), dict)
        or entries[n].get("version", 1) != VERSION
        or entries[n].get("seed") != seed
        or entries[n].get("params") != params
    ]
    if stale:
        generate(out, stale, preset=preset, seed=seed, overwrite=True, progress=progress)
    return out
