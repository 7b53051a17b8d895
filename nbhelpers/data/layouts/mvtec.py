"""Readers of the MVTec AD, BTAD and MVTec LOCO AD layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nbhelpers.data.io import list_images, open_image
from nbhelpers.data.layouts.common import (
    _LOCO_CONFIG,
    TREES,
    _as_root,
    _category_dir,
    _Check,
    _missing_mask,
    _nonempty_test,
    _orphan,
    _read_tree,
    _require_dir,
    _sorted,
    _subdirs,
    _train_images,
)
from nbhelpers.data.records import GOOD, Region, Sample, Split
from nbhelpers.errors import DatasetError


def read_mvtec_ad(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read one category of MVTec AD.

    Expected tree::

        <root>/<category>/train/good/000.png ...
        <root>/<category>/test/good/000.png ...
        <root>/<category>/test/<defect>/000.png ...            (e.g. broken_large, contamination)
        <root>/<category>/ground_truth/<defect>/000_mask.png ...

    Every anomalous test image gets one :class:`Region` (its ``<stem>_mask.png``, no saturation).

    Raises:
        DatasetError: missing/empty ``train/good``, empty test split, an anomalous image without
            mask, a mask without image or of another size than its image, an unreadable image.
    """
    return _read_tree(
        root, category, "mvtec_ad", GOOD, lambda stem: (f"{stem}_mask",), require_masks=True, validate=validate
    )


def read_btad(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read one category (``01``, ``02``, ``03``) of BTAD (beanTech Anomaly Detection).

    Expected tree::

        <root>/<category>/train/ok/0000.bmp ...                (02 ships .png)
        <root>/<category>/test/ok/0000.bmp ...
        <root>/<category>/test/ko/0000.bmp ...
        <root>/<category>/ground_truth/ko/0000.png ...         (.png or .bmp, same stem as the image)

    ``ok`` images are normal (label 0, defect ``"good"``), ``ko`` images anomalous (label 1,
    defect ``"ko"``); masks are optional per image (``<stem>.<ext>`` or ``<stem>_mask.<ext>``).
    """
    return _read_tree(
        root, category, "btad", "ok", lambda stem: (stem, f"{stem}_mask"), require_masks=False, validate=validate
    )


def _loco_config(path: Path) -> dict[int, tuple[str, float, bool]]:
    """``pixel_value -> (defect_name, saturation_threshold, relative_saturation)``."""
    expected = (
        'Expected a JSON list like [{"defect_name": "missing_box", "pixel_value": 255, '
        '"saturation_threshold": 1.0, "relative_saturation": true}, ...] as shipped with MVTec LOCO AD.'
    )
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing. {expected}\nExpected tree (mvtec_loco):\n{TREES['mvtec_loco']}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as JSON ({exc}). {expected}") from exc
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: top level is a {type(entries).__name__}, not a list. {expected}")
    out: dict[int, tuple[str, float, bool]] = {}
    for i, e in enumerate(entries):
        try:
            value = int(e["pixel_value"])
            entry = (str(e["defect_name"]), float(e["saturation_threshold"]), bool(e["relative_saturation"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise DatasetError(f"{path}: entry {i} ({e!r}) is malformed ({exc!r}). {expected}") from exc
        if value in out and out[value][1:] != entry[1:]:
            raise DatasetError(
                f"{path}: pixel_value {value} is listed twice with different saturation settings "
                f"({out[value][0]!r} and {entry[0]!r}); expected one setting per pixel value."
            )
        out.setdefault(value, entry)
    return out


def _mask_value(path: Path) -> int | None:
    """Most frequent non-zero pixel value of a mask (``None`` when it is all zero)."""
    arr = np.asarray(open_image(path))
    if arr.ndim == 3:
        arr = arr[..., 0]
    values, counts = np.unique(arr[arr != 0], return_counts=True)
    return int(values[np.argmax(counts)]) if len(values) else None


def read_mvtec_loco(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read one category of MVTec LOCO AD (logical and structural anomalies, sPRO saturation).

    Expected tree::

        <root>/<category>/defects_config.json
        <root>/<category>/train/good/000.png ...
        <root>/<category>/validation/good/000.png ...          (-> Split.val)
        <root>/<category>/test/good/000.png ...
        <root>/<category>/test/logical_anomalies/000.png ...
        <root>/<category>/test/structural_anomalies/000.png ...
        <root>/<category>/ground_truth/<defect>/<stem>/000.png, 001.png, ...

    ``defects_config.json`` is a list of ``{"defect_name", "pixel_value", "saturation_threshold",
    "relative_saturation"}``. Each mask file is filled with the ``pixel_value`` of its defect and
    becomes one :class:`Region`; it is mapped to its config entry by its most frequent non-zero
    pixel value (this reads the mask pixels). ``Sample.defect`` is the test sub-folder name.

    Raises:
        DatasetError: besides the checks of :func:`read_mvtec_ad`, a missing or malformed config,
            a mask whose pixel value is not in the config, an all-zero mask, mask files placed
            directly in ``ground_truth/<defect>/`` instead of ``<stem>/`` sub-folders.
    """
    layout = "mvtec_loco"
    root = _as_root(root)
    cat = _category_dir(root, category, layout)
    check = _Check(validate)
    config_path = cat / _LOCO_CONFIG
    config = _loco_config(config_path)
    train = [Sample(p, 0, GOOD, category) for p in _train_images(cat / "train" / GOOD, layout, check)]
    val_dir = cat / "validation" / GOOD
    val_images = list_images(val_dir) if val_dir.is_dir() else []
    check.images(val_images)
    val = [Sample(p, 0, GOOD, category) for p in val_images]
    test_dir = _require_dir(cat / "test", layout, "the test images (good/, logical_anomalies/, structural_anomalies/)")
    gt_root = cat / "ground_truth"
    test: list[Sample] = []
    for ddir in _subdirs(test_dir):
        images = list_images(ddir)
        check.images(images)
        if ddir.name == GOOD:
            test += [Sample(p, 0, GOOD, category) for p in images]
            continue
        for img in images:
            mdir = gt_root / ddir.name / img.stem
            masks = list_images(mdir) if mdir.is_dir() else []
            if not masks and check.on:
                raise _missing_mask(img, f"{mdir}/000.png", layout)
            regions = []
            for mask in masks:
                check.mask_matches(mask, img)
                value = _mask_value(mask)
                if value is None:
                    raise DatasetError(
                        f"{mask}: mask is all zero. Expected it filled with the pixel_value of its "
                        f"defect from {config_path}; delete the empty mask."
                    )
                if value not in config:
                    known = ", ".join(f"{v} ({n})" for v, (n, _, _) in sorted(config.items())) or "none"
                    raise DatasetError(
                        f"{mask}: pixel value {value} is not listed in {config_path} (pixel values "
                        f"there: {known}). Expected every mask to be filled with the pixel_value of "
                        "one defect_name in defects_config.json; add the entry or fix the mask."
                    )
                _, threshold, relative = config[value]
                regions.append(Region(mask, saturation=threshold, relative=relative))
            test.append(Sample(img, 1, ddir.name, category, tuple(regions)))
    _nonempty_test(test, test_dir, layout, check)
    if check.on:
        for gdir in _subdirs(gt_root):
            loose = list_images(gdir)
            if loose:
                raise DatasetError(
                    f"{loose[0]}: MVTec LOCO masks must sit in one folder per image, i.e. "
                    f"{gdir}/{loose[0].stem}/000.png (not {gdir.name}/<stem>.png).\n{TREES[layout]}"
                )
            image_dir = test_dir / gdir.name
            stems = {p.stem for p in list_images(image_dir)} if image_dir.is_dir() and gdir.name != GOOD else set()
            for mdir in _subdirs(gdir):
                masks = list_images(mdir)
                if masks and mdir.name not in stems:
                    raise _orphan(masks[0], str(image_dir / f"{mdir.name}.png"), layout)
    check.note_mixed_sizes(cat)
    return Split(root=root, category=category, layout=layout, train=train, test=_sorted(test), val=val)
