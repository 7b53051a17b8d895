"""Dataset readers: one function per on-disk layout, all returning :class:`~nbhelpers.data.records.Split`.

Readers do not decode pixels for use, except the MVTec LOCO reader, which reads each mask once to
find the defect it belongs to (its pixel value). With ``validate=True`` (the default) every image
and mask is checked with :func:`~nbhelpers.data.io.check_image` (complete data, cheaply: PNG
checksums, JPEG at 1/8 scale), masks are matched to images and compared in size, and a malformed
dataset raises one :class:`~nbhelpers.errors.DatasetError` naming the offending file or folder,
what was expected and the fix, before any model sees the data. Images of mixed sizes are accepted
(every method resizes to its square ``image_size``) with a
:class:`~nbhelpers.errors.DatasetWarning` listing the sizes.

Layouts (``LAYOUTS``): ``mvtec_ad``, ``mvtec_loco``, ``visa``, ``btad``, ``folder``; the trees are in
each reader's docstring and in ``data/README.md``. Use :func:`load_split` with ``layout="auto"``
to detect the layout.

Example:
    >>> split = load_split("data/synthad", "grass")            # doctest: +SKIP
    >>> split.summary()                                         # doctest: +SKIP
    {'train': 40, 'val': 0, 'test/good': 10, 'test/crack': 5}
"""
from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from nbhelpers.data.io import IMAGE_SUFFIXES, check_image, list_images
from nbhelpers.data.records import GOOD, Region, Sample, Split
from nbhelpers.data.synth import check_version
from nbhelpers.errors import ConfigError, DatasetError, DatasetWarning

__all__ = [
    "LAYOUTS",
    "TREES",
    "detect_layout",
    "list_categories",
    "load_split",
    "read_btad",
    "read_folder",
    "read_mvtec_ad",
    "read_mvtec_loco",
    "read_visa",
]

#: The expected tree of each layout, quoted in error messages.
TREES: dict[str, str] = {
    "mvtec_ad": (
        "  <DATA_ROOT>/<category>/train/good/*.png\n"
        "  <DATA_ROOT>/<category>/test/good/*.png\n"
        "  <DATA_ROOT>/<category>/test/<defect>/<stem>.png\n"
        "  <DATA_ROOT>/<category>/ground_truth/<defect>/<stem>_mask.png"
    ),
    "mvtec_loco": (
        "  <DATA_ROOT>/<category>/defects_config.json\n"
        "  <DATA_ROOT>/<category>/train/good/*.png\n"
        "  <DATA_ROOT>/<category>/validation/good/*.png\n"
        "  <DATA_ROOT>/<category>/test/{good,logical_anomalies,structural_anomalies}/<stem>.png\n"
        "  <DATA_ROOT>/<category>/ground_truth/<defect>/<stem>/000.png, 001.png, ..."
    ),
    "visa": (
        "  <DATA_ROOT>/split_csv/1cls.csv   (header: object,split,label,image,mask)\n"
        "  <DATA_ROOT>/<category>/Data/Images/{Normal,Anomaly}/*.JPG\n"
        "  <DATA_ROOT>/<category>/Data/Masks/Anomaly/*.png"
    ),
    "btad": (
        "  <DATA_ROOT>/<category>/train/ok/*.bmp|png\n"
        "  <DATA_ROOT>/<category>/test/{ok,ko}/<stem>.bmp|png\n"
        "  <DATA_ROOT>/<category>/ground_truth/ko/<stem>.png|bmp"
    ),
    "folder": (
        "  <DATA_ROOT>/<category>/train/good/*        (normal images, any image suffix)\n"
        "  <DATA_ROOT>/<category>/test/good/*\n"
        "  <DATA_ROOT>/<category>/test/<defect>/<stem>.<ext>\n"
        "  <DATA_ROOT>/<category>/ground_truth/<defect>/<stem>.<ext> or <stem>_mask.<ext>   (optional)"
    ),
}

_VISA_CSV = ("split_csv", "1cls.csv")
_VISA_COLUMNS = ("object", "split", "label", "image", "mask")
_LOCO_CONFIG = "defects_config.json"
_SUFFIXES = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------- helpers
class _Check:
    """Validation switch plus a per-read cache of image sizes (integrity checks, no full decoding)."""

    def __init__(self, validate: bool) -> None:
        self.on = bool(validate)
        self._sizes: dict[Path, tuple[int, int]] = {}
        self._images: list[Path] = []

    def size(self, path: Path) -> tuple[int, int]:
        if path not in self._sizes:
            try:
                self._sizes[path] = check_image(path)
            except DatasetError as exc:
                raise DatasetError(
                    f"{exc} (Files without an image suffix, such as .DS_Store or readme.txt, are ignored.)"
                ) from exc
        return self._sizes[path]

    def images(self, paths: list[Path]) -> None:
        if self.on:
            self._images += paths
            for p in paths:
                self.size(p)

    def note_mixed_sizes(self, where: Path) -> None:
        """Warn (:class:`DatasetWarning`) when the checked images do not all have one size."""
        counts = Counter(self._sizes[p] for p in self._images)
        if len(counts) < 2:
            return
        example = {}
        for p in self._images:
            example.setdefault(self._sizes[p], p)
        sizes = "; ".join(f"{w}x{h}: {n} image(s), e.g. {example[(w, h)]}" for (w, h), n in counts.most_common())
        warnings.warn(
            f"{where}: images come in {len(counts)} sizes ({sizes}). They are used as they are: every "
            "method resizes each image (and mask) to its square image_size, so objects of images with "
            "another size or aspect ratio appear scaled or stretched. Crop or resize them to one size "
            "if that matters.",
            DatasetWarning,
            stacklevel=2,
        )

    def mask_matches(self, mask: Path, image: Path) -> None:
        if not self.on:
            return
        mw, mh = self.size(mask)
        iw, ih = self.size(image)
        if (mw, mh) != (iw, ih):
            raise DatasetError(
                f"{mask}: mask is {mw}x{mh} pixels but its image {image} is {iw}x{ih}. "
                "Expected a mask of exactly the image's size (width x height); re-export the mask "
                "at the image's resolution or remove it."
            )


def _sorted(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: s.image.parts)


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _as_root(root: str | Path) -> Path:
    p = Path(root).expanduser()
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "does not exist"
        raise DatasetError(
            f"DATA_ROOT {p} {what}. Expected the dataset root folder that holds one folder per "
            "category (e.g. mvtec_anomaly_detection/ with bottle/, cable/, ...). Download the "
            "dataset (see data/README.md), generate the offline one with "
            "`nbhelpers synth --out data/synthad`, or fix DATA_ROOT."
        )
    return p


def _visa_csv(root: Path) -> Path:
    return root.joinpath(*_VISA_CSV)


def _tree_categories(root: Path) -> list[str]:
    """Sub-folders of ``root`` that look like categories (they hold a ``train/`` folder)."""
    return [d.name for d in _subdirs(root) if (d / "train").is_dir()]


def _missing_category(root: Path, category: str, layout: str, existing: list[str]) -> DatasetError:
    """The error for a missing category; ``layout="auto"`` leaves the expected tree out."""
    if existing:
        have = f"Categories found under {root}: {', '.join(existing)}."
    else:
        have = (
            f"No category was found under {root} (no sub-folder holds a train/ folder"
            + (" and split_csv/1cls.csv lists no object" if layout == "visa" else "")
            + ")."
        )
    hint = ""
    if (root / "train").is_dir():
        hint = f" {root} itself holds train/: it looks like a category folder, so set DATA_ROOT to {root.parent}."
    if layout == "visa":
        where = f"{_visa_csv(root)} lists no object {category!r}"
    else:
        where = f"{root / category} is not a folder"
    tree = f"\nExpected tree ({layout}):\n{TREES[layout]}" if layout in TREES else ""
    return DatasetError(f"Category {category!r} not found: {where}. {have} Set CATEGORY to one of them.{hint}{tree}")


def _category_dir(root: Path, category: str, layout: str) -> Path:
    if not category or "/" in category or "\\" in category:
        raise DatasetError(f"CATEGORY {category!r} is not a folder name; expected one of {_tree_categories(root)}.")
    d = root / category
    if not d.is_dir():
        raise _missing_category(root, category, layout, _tree_categories(root))
    return d


def _require_dir(folder: Path, layout: str, what: str) -> Path:
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: folder is missing. The {layout} layout expects {what} there:\n{TREES[layout]}"
        )
    return folder


def _train_images(folder: Path, layout: str, check: _Check) -> list[Path]:
    _require_dir(folder, layout, "the normal training images")
    images = list_images(folder)
    if check.on and not images:
        raise DatasetError(
            f"{folder}: holds no image files (suffixes {_SUFFIXES}). The {layout} layout expects "
            f"the normal training images there:\n{TREES[layout]}"
        )
    check.images(images)
    return images


def _nonempty_test(test: list[Sample], folder: Path, layout: str, check: _Check) -> None:
    if check.on and not test:
        raise DatasetError(
            f"{folder}: the test split is empty (no image files with suffixes {_SUFFIXES}). "
            f"The {layout} layout expects test images there:\n{TREES[layout]}"
        )


def _orphan(mask: Path, expected: str, layout: str) -> DatasetError:
    return DatasetError(
        f"{mask}: mask has no image. Expected its image at {expected}. Add the image or delete the "
        f"mask. Expected tree ({layout}):\n{TREES[layout]}"
    )


def _missing_mask(image: Path, expected: str, layout: str) -> DatasetError:
    return DatasetError(
        f"{image}: anomalous test image has no ground-truth mask. The {layout} layout requires one "
        f"at {expected}. Add the mask, or read the data with layout='folder' (masks optional):\n"
        f"{TREES[layout]}"
    )


# ---------------------------------------------------------------------- MVTec AD / BTAD / folder trees
def _read_tree(
    root: Path,
    category: str,
    layout: str,
    normal: str,
    mask_keys: Callable[[str], tuple[str, ...]],
    require_masks: bool,
    validate: bool,
) -> Split:
    """Shared reader of the ``train/<normal>``, ``test/<defect>``, ``ground_truth/<defect>`` trees."""
    root = _as_root(root)
    cat = _category_dir(root, category, layout)
    check = _Check(validate)
    train = [Sample(p, 0, GOOD, category) for p in _train_images(cat / "train" / normal, layout, check)]
    test_dir = _require_dir(cat / "test", layout, f"the test images ({normal}/ and one folder per defect)")
    gt_root = cat / "ground_truth"
    test: list[Sample] = []
    used: set[Path] = set()
    for ddir in _subdirs(test_dir):
        images = list_images(ddir)
        check.images(images)
        if ddir.name == normal:
            test += [Sample(p, 0, GOOD, category) for p in images]
            continue
        masks = {m.stem: m for m in list_images(gt_root / ddir.name)} if (gt_root / ddir.name).is_dir() else {}
        for img in images:
            mask = next((masks[k] for k in mask_keys(img.stem) if k in masks), None)
            regions: tuple[Region, ...] = ()
            if mask is not None:
                used.add(mask)
                check.mask_matches(mask, img)
                regions = (Region(mask),)
            elif require_masks and check.on:
                key = mask_keys(img.stem)[0]
                raise _missing_mask(img, str(gt_root / ddir.name / f"{key}.png"), layout)
            test.append(Sample(img, 1, ddir.name, category, regions))
    _nonempty_test(test, test_dir, layout, check)
    if check.on:
        for gdir in _subdirs(gt_root):
            if gdir.name in (normal, GOOD):
                continue
            for mask in list_images(gdir):
                if mask not in used:
                    stem = mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem
                    suffix = ".png" if layout == "mvtec_ad" else ".<ext>"
                    raise _orphan(mask, str(test_dir / gdir.name / f"{stem}{suffix}"), layout)
    check.note_mixed_sizes(cat)
    return Split(root=root, category=category, layout=layout, train=train, test=_sorted(test))


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


def read_folder(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read a team's own data laid out like MVTec AD, with any image suffix and optional masks.

    Expected tree::

        <root>/<category>/train/good/*                         (normal images: png/jpg/bmp/tif/webp)
        <root>/<category>/test/good/*
        <root>/<category>/test/<defect>/<stem>.<ext>
        <root>/<category>/ground_truth/<defect>/<stem>.<ext>   (optional; or <stem>_mask.<ext>)

    A plain folder of images is not enough: ``train/good`` is required. ``Split.has_masks`` tells
    whether every anomalous image has a mask.
    """
    return _read_tree(
        root, category, "folder", GOOD, lambda stem: (stem, f"{stem}_mask"), require_masks=False, validate=validate
    )


# ----------------------------------------------------------------------------------------- MVTec LOCO
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
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"{path}: cannot be read as an image ({exc}). Expected a readable PNG mask filled with "
            "its defect's pixel_value; replace or delete it."
        ) from exc
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


# ------------------------------------------------------------------------------------------------ VisA
def _visa_rows(root: Path) -> tuple[Path, list[tuple[int, dict[str, str]]]]:
    path = _visa_csv(root)
    if not path.is_file():
        raise DatasetError(
            f"{path}: file is missing. The visa layout expects the split file of VisA there (it ships "
            "in the VisA archive and in github.com/amazon-science/spot-diff under split_csv/):\n"
            f"{TREES['visa']}"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in _VISA_COLUMNS if c not in header]
            if missing:
                raise DatasetError(
                    f"{path}: header {','.join(header) or '(empty)'} lacks column(s) {', '.join(missing)}. "
                    f"Expected the header {','.join(_VISA_COLUMNS)}."
                )
            rows = [
                (i + 2, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for i, row in enumerate(reader)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(
            f"{path}: cannot be read as CSV ({exc}). Expected the header {','.join(_VISA_COLUMNS)}."
        ) from exc
    return path, rows


def read_visa(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read one object (category) of VisA from its ``split_csv/1cls.csv``.

    Expected tree::

        <root>/split_csv/1cls.csv                              header: object,split,label,image,mask
        <root>/<category>/Data/Images/Normal/0000.JPG ...
        <root>/<category>/Data/Images/Anomaly/000.JPG ...
        <root>/<category>/Data/Masks/Anomaly/000.png ...

    Rows are filtered by ``object == category``; ``split`` is ``train`` or ``test`` (``val`` goes to
    ``Split.val``), ``label`` is ``normal`` or ``anomaly``; ``image``/``mask`` are relative to
    ``root`` and ``mask`` is empty for normal rows. Anomalies get defect ``"anomaly"`` and one
    :class:`Region` (the mask's non-zero area: VisA masks hold 0/255 or small integers).
    """
    layout = "visa"
    root = _as_root(root)
    path, rows = _visa_rows(root)
    check = _Check(validate)
    objects = sorted({r["object"] for _, r in rows if r["object"]})
    if category not in objects:
        raise _missing_category(root, category, layout, objects)
    parts: dict[str, list[Sample]] = {"train": [], "test": [], "val": []}
    for line, r in ((n, r) for n, r in rows if r["object"] == category):
        where = f"{path} line {line}"
        split = r["split"].lower()
        split = "val" if split == "validation" else split
        label = r["label"].lower()
        if split not in parts:
            raise DatasetError(f"{where}: split {r['split']!r} is not one of train, test (or val).")
        if label not in ("normal", "anomaly"):
            raise DatasetError(f"{where}: label {r['label']!r} is not one of normal, anomaly.")
        if not r["image"]:
            raise DatasetError(f"{where}: image column is empty; expected a path relative to {root}.")
        image = root / r["image"]
        if check.on and not image.is_file():
            raise DatasetError(
                f"{image}: listed in {where} but does not exist. Expected image paths relative to "
                f"DATA_ROOT={root} (e.g. {category}/Data/Images/Normal/0000.JPG); point DATA_ROOT at "
                "the VisA folder that holds split_csv/."
            )
        check.images([image])
        if label == "normal":
            parts[split].append(Sample(image, 0, GOOD, category))
            continue
        if check.on and split == "train":
            raise DatasetError(
                f"{where}: anomalous image {image} is in the train split; expected only normal "
                "training images (use split_csv/1cls.csv, not the 2cls files)."
            )
        regions: tuple[Region, ...] = ()
        if r["mask"]:
            mask = root / r["mask"]
            if check.on and not mask.is_file():
                raise DatasetError(
                    f"{mask}: listed in {where} but does not exist. Expected mask paths relative to "
                    f"DATA_ROOT={root} (e.g. {category}/Data/Masks/Anomaly/000.png)."
                )
            check.mask_matches(mask, image)
            regions = (Region(mask),)
        parts[split].append(Sample(image, 1, "anomaly", category, regions))
    if check.on and not parts["train"]:
        raise DatasetError(f"{path}: no train row for object {category!r}; expected normal rows with split=train.")
    _nonempty_test(parts["test"], path, layout, check)
    check.note_mixed_sizes(root / category)
    return Split(
        root=root,
        category=category,
        layout=layout,
        train=_sorted(parts["train"]),
        test=_sorted(parts["test"]),
        val=_sorted(parts["val"]),
    )


# ------------------------------------------------------------------------------------------ public API
LAYOUTS: dict[str, Callable[[Path, str], Split]] = {
    "mvtec_ad": read_mvtec_ad,
    "mvtec_loco": read_mvtec_loco,
    "visa": read_visa,
    "btad": read_btad,
    "folder": read_folder,
}


def _check_layout(layout: str) -> str:
    if layout != "auto" and layout not in LAYOUTS:
        raise ConfigError(f"LAYOUT {layout!r} is not known; valid names: auto, {', '.join(LAYOUTS)}.")
    return layout


def detect_layout(root: str | Path, category: str | None = None) -> str:
    """Name of the layout of ``root`` (and ``category``), by its marker files.

    In order: ``<root>/<category>/defects_config.json`` -> ``mvtec_loco``; ``<root>/split_csv/1cls.csv``
    -> ``visa``; ``<root>/<category>/train/ok`` -> ``btad``; ``<root>/<category>/train/good`` plus
    ``ground_truth`` with MVTec AD's names (only ``.png`` files, masks ``<stem>_mask.png``) ->
    ``mvtec_ad``; otherwise ``folder`` (masks optional). Without a category the first category
    folder decides. Only file names are looked at.
    """
    root = _as_root(root)
    if category is None:
        cats = _tree_categories(root)
        category = cats[0] if cats else ""
    cat = root / category if category else None
    if cat is not None and (cat / _LOCO_CONFIG).is_file():
        return "mvtec_loco"
    if _visa_csv(root).is_file():
        return "visa"
    if cat is not None and (cat / "train" / "ok").is_dir():
        return "btad"
    if cat is not None and (cat / "train" / GOOD).is_dir() and (cat / "ground_truth").is_dir() and _mvtec_names(cat):
        return "mvtec_ad"
    return "folder"


def _mvtec_names(cat: Path) -> bool:
    """True when every image is a ``.png`` and every mask is named ``<stem>_mask.png`` (names only)."""
    folders = [cat / "train" / GOOD, *_subdirs(cat / "test")]
    masks = [p for d in _subdirs(cat / "ground_truth") for p in list_images(d)]
    images = [p for d in folders for p in list_images(d)]
    return all(p.suffix == ".png" for p in images + masks) and all(p.stem.endswith("_mask") for p in masks)


def list_categories(root: str | Path, layout: str = "auto") -> list[str]:
    """Sorted category names under ``root``: the ``object`` values of VisA's csv, else the
    sub-folders that hold a ``train/`` folder."""
    _check_layout(layout)
    root = _as_root(root)
    if layout == "visa" or (layout == "auto" and _visa_csv(root).is_file()):
        _, rows = _visa_rows(root)
        return sorted({r["object"] for _, r in rows if r["object"]})
    return _tree_categories(root)


def load_split(root: str | Path, category: str, layout: str = "auto", validate: bool = True) -> Split:
    """Read one category of a dataset into a :class:`Split`.

    Args:
        root: dataset root (``DATA_ROOT`` of the notebooks).
        category: category folder / VisA object (``CATEGORY``).
        layout: ``"auto"`` (detect, see :func:`detect_layout`) or one of ``LAYOUTS``.
        validate: check every image/mask header, mask sizes and the mask/image pairing.

    Raises:
        ConfigError: unknown layout name.
        DatasetError: missing root or category (the message lists existing categories) or a
            malformed dataset (the message names the file and the fix).
    """
    _check_layout(layout)
    root_path = _as_root(root)
    check_version(root_path, category)
    if layout == "auto":
        is_visa = _visa_csv(root_path).is_file() and not (root_path / str(category) / _LOCO_CONFIG).is_file()
        if not is_visa:
            _category_dir(root_path, category, "auto")
        layout = detect_layout(root_path, category)
        train_good = root_path / category / "train" / GOOD
        if layout == "folder" and not train_good.is_dir():
            raise DatasetError(
                f"{root_path / category}: cannot detect the dataset layout: found none of "
                f"{_LOCO_CONFIG} (mvtec_loco), {Path(*_VISA_CSV)} under DATA_ROOT (visa), train/ok (btad), "
                f"train/good (mvtec_ad or folder); {train_good} is missing. Expected e.g. the folder "
                f"tree:\n{TREES['folder']}\nor pass LAYOUT explicitly ({', '.join(LAYOUTS)})."
            )
    return LAYOUTS[layout](root_path, category, validate=validate)  # type: ignore[call-arg]
