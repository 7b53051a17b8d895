"""SynthAD's object categories: washer, screw, capsule."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from nbhelpers.data.synth.defects import _SURFACE, _crack
from nbhelpers.data.synth.primitives import (
    _bevel,
    _changed,
    _drop_shadow,
    _f32,
    _grain,
    _grid,
    _light,
    _over,
    _polar,
    _shade,
    _value_noise,
)
from nbhelpers.data.synth.spec import DefectType


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
