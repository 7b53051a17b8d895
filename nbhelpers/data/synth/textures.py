"""SynthAD's texture categories: crops of scikit-image's photographs."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from nbhelpers.data.synth.defects import _FOREIGN, _SURFACE
from nbhelpers.data.synth.primitives import _f32, _grain
from nbhelpers.data.synth.spec import DefectType, RenderFn


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
