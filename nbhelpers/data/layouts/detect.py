"""Layout detection and the one entry point load_split."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from nbhelpers.data.io import list_images
from nbhelpers.data.layouts.common import (
    _LOCO_CONFIG,
    _VISA_CSV,
    TREES,
    _as_root,
    _category_dir,
    _category_folder_hint,
    _subdirs,
    _tree_categories,
    _visa_csv,
)
from nbhelpers.data.layouts.folder import read_folder
from nbhelpers.data.layouts.mvtec import read_btad, read_mvtec_ad, read_mvtec_loco
from nbhelpers.data.layouts.visa import _visa_rows, read_visa
from nbhelpers.data.records import GOOD, Split
from nbhelpers.data.synth import check_version
from nbhelpers.errors import ConfigError, DatasetError

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
    ``mvtec_ad``; otherwise ``folder`` (masks optional; also a plain ``<category>/good/`` plus one
    folder per defect type). Without a category the first category folder decides. Only file names
    are looked at.
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
    sub-folders that hold a ``train/`` folder or (plain folder tree) a ``good/`` folder; ``[]`` when
    there is none (see :func:`require_categories`)."""
    _check_layout(layout)
    root = _as_root(root)
    if layout == "visa" or (layout == "auto" and _visa_csv(root).is_file()):
        _, rows = _visa_rows(root)
        return sorted({r["object"] for _, r in rows if r["object"]})
    return _tree_categories(root)


def require_categories(root: str | Path, layout: str = "auto") -> list[str]:
    """:func:`list_categories`, with one :class:`DatasetError` when ``root`` holds no category.

    The message names ``root``, says when it is itself a category folder, and quotes the expected
    tree of ``layout`` (for ``auto``: the folder tree, which includes the plain folder).
    """
    found = list_categories(root, layout)
    if found:
        return found
    root_path = _as_root(root)
    if layout == "visa" or (layout == "auto" and _visa_csv(root_path).is_file()):
        why = f"{_visa_csv(root_path)} lists no object"
    else:
        why = "no sub-folder holds a train/ or good/ folder"
    shown = layout if layout in TREES else "folder; the other layouts' trees are in data/README.md"
    raise DatasetError(
        f"{root_path}: no category found ({why}).{_category_folder_hint(root_path)} Expected tree "
        f"({shown}):\n{TREES.get(layout, TREES['folder'])}"
    )


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
        cat = root_path / category
        train_good = cat / "train" / GOOD
        if layout == "folder" and not train_good.is_dir() and not (cat / GOOD).is_dir():
            raise DatasetError(
                f"{cat}: cannot detect the dataset layout: found none of "
                f"{_LOCO_CONFIG} (mvtec_loco), {Path(*_VISA_CSV)} under DATA_ROOT (visa), train/ok (btad), "
                f"train/good (mvtec_ad or folder), good/ (plain folder); {train_good} is missing. Expected "
                f"e.g. the folder tree:\n{TREES['folder']}\nor pass LAYOUT explicitly ({', '.join(LAYOUTS)})."
            )
    split = LAYOUTS[layout](root_path, category, validate=validate)  # type: ignore[call-arg]
    for part in ("train", "val", "test"):  # every record knows its reader
        setattr(split, part, [dataclasses.replace(s, layout=split.layout) for s in getattr(split, part)])
    return split
