"""The SynthAD categories and how one sample is rendered and planned on disk."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbhelpers.data.synth.logical import _cables, _kit, _nuts
from nbhelpers.data.synth.objects import _capsule, _screw, _washer
from nbhelpers.data.synth.spec import _PARTS, KINDS, LOGICAL, STRUCTURAL, SYNTH_PRESETS, CategorySpec, DefectType
from nbhelpers.data.synth.textures import _texture
from nbhelpers.errors import ConfigError


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
