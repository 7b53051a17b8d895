"""SynthAD's structural defects: scratch, crack, hole, contamination."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from nbhelpers.data.synth.primitives import _blob_radius, _f32, _over, _pick, _polar, _polyline_dist, _value_noise

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
