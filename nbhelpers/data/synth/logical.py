"""SynthAD's logical categories: counting (nuts), placement (kit), pairing (cables), each built only from locally normal appearances."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from nbhelpers.data.synth.defects import _contamination
from nbhelpers.data.synth.objects import _screw_geometry
from nbhelpers.data.synth.primitives import (
    _bevel,
    _dilate,
    _drop_shadow,
    _f32,
    _grain,
    _grid,
    _light,
    _over,
    _polar,
    _polyline_dist,
    _rect_sdf,
    _shade,
    _value_noise,
)
from nbhelpers.data.synth.spec import DefectType


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
