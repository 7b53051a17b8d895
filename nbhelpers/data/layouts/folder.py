"""Reader of the folder layout: a team's own images, in an MVTec AD-like train/test tree or as a plain
folder of ``good/`` plus one folder per defect type (split here, deterministically)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from nbhelpers.data.io import list_images
from nbhelpers.data.layouts.common import (
    _LOCO_CONFIG,
    _SUFFIXES,
    TREES,
    _as_root,
    _category_dir,
    _Check,
    _read_tree,
    _sorted,
    _subdirs,
)
from nbhelpers.data.records import GOOD, Sample, Split
from nbhelpers.errors import DatasetError, DatasetWarning

#: Fraction of a plain folder's ``good/`` images held back for testing (at least one image).
HOLD_OUT = 1 / 3

#: Seed of the held-back choice: fixed, so every method, seed and run sees the same split.
SPLIT_SEED = 0

_LAYOUT = "folder"


def read_folder(root: str | Path, category: str, validate: bool = True) -> Split:
    """Read a team's own data: an MVTec AD-like tree with any image suffix and optional masks, or a
    plain folder of normal and defect images.

    Expected tree, either::

        <root>/<category>/train/good/*                         (normal images: png/jpg/bmp/tif/webp)
        <root>/<category>/test/good/*
        <root>/<category>/test/<defect>/<stem>.<ext>
        <root>/<category>/ground_truth/<defect>/<stem>.<ext>   (optional; or <stem>_mask.<ext>)

    or, without ``train/`` (a plain folder, no masks)::

        <root>/<category>/good/*                               (normal images)
        <root>/<category>/<defect>/*                           (one folder per defect type)

    A plain folder is split by :func:`held_back`: a seeded ``HOLD_OUT`` fraction of ``good/`` (at
    least one image) is tested with every defect folder, the rest is trained on. ``Split.has_masks``
    tells whether every anomalous image has a mask. A train/test tree holding MVTec LOCO AD parts
    (``defects_config.json``, ``validation/``, ``ground_truth/<defect>/<stem>/`` masks) is read
    without them, with a :class:`~nbhelpers.errors.DatasetWarning` counting them.
    """
    root = _as_root(root)
    cat = _category_dir(root, category, _LAYOUT)
    if not (cat / "train").is_dir() and (cat / GOOD).is_dir():
        return _read_plain(root, cat, category, _Check(validate))
    _note_loco_parts(cat)
    return _read_tree(
        root, category, _LAYOUT, GOOD, lambda stem: (stem, f"{stem}_mask"), require_masks=False, validate=validate
    )


def held_back(images: list[Path]) -> list[Path]:
    """The normal images of a plain folder held back for testing, sorted.

    A ``HOLD_OUT`` fraction of ``images`` (rounded, at least one), drawn with ``SPLIT_SEED`` from the
    sorted list: the same files give the same choice on every run.
    """
    images = sorted(images)
    n = max(1, round(len(images) * HOLD_OUT))
    pick = np.random.default_rng(SPLIT_SEED).permutation(len(images))[:n]
    return sorted(images[i] for i in pick)


def _read_plain(root: Path, cat: Path, category: str, check: _Check) -> Split:
    """Split a plain ``<category>/good`` + ``<category>/<defect>`` folder (see :func:`read_folder`)."""
    good = list_images(cat / GOOD)
    if len(good) < 2:
        raise DatasetError(
            f"{cat / GOOD}: holds {len(good)} image file(s) (suffixes {_SUFFIXES}); a plain folder needs at "
            "least 2 normal images there, to train on some and hold one back for testing. Add normal "
            f"images, or lay the category out with train/ and test/:\n{TREES[_LAYOUT]}"
        )
    check.images(good)
    held = set(held_back(good))
    train = [Sample(p, 0, GOOD, category) for p in good if p not in held]
    test = [Sample(p, 0, GOOD, category) for p in good if p in held]
    ignored: list[str] = []
    for ddir in _subdirs(cat):
        if ddir.name == GOOD:
            continue
        images = [] if ddir.name == "ground_truth" else list_images(ddir)
        if not images:
            ignored.append(ddir.name)
            continue
        check.images(images)
        test += [Sample(p, 1, ddir.name, category) for p in images]
    if ignored:
        _note_ignored(cat, ignored)
    check.note_mixed_sizes(cat)
    return Split(root=root, category=category, layout=_LAYOUT, train=train, test=_sorted(test))


def _note_ignored(cat: Path, names: list[str]) -> None:
    """Warn (:class:`DatasetWarning`) about sub-folders of a plain folder that give no images."""
    warnings.warn(
        f"{cat}: sub-folder(s) {', '.join(f'{n}/' for n in names)} ignored: a plain folder (no train/) is "
        "read as good/ plus one folder of images per defect type, without masks or nested folders. "
        "To use masks, lay the category out as train/good, test/<defect>, ground_truth/<defect> "
        "(data/README.md).",
        DatasetWarning,
        stacklevel=3,
    )


def _note_loco_parts(cat: Path) -> None:
    """Warn (:class:`DatasetWarning`) when a tree read as ``folder`` holds MVTec LOCO AD parts that
    the folder layout does not read: per-image mask folders and validation images."""
    masks = sum(len(list_images(m)) for d in _subdirs(cat / "ground_truth") for m in _subdirs(d))
    val = sum(len(list_images(d)) for d in _subdirs(cat / "validation"))
    config = f"; {_LOCO_CONFIG} is present" if (cat / _LOCO_CONFIG).is_file() else ""
    if not (masks or val or config):
        return
    warnings.warn(
        f"{cat}: layout 'folder' ignores {masks} mask(s) in ground_truth/<defect>/<stem>/ folders and {val} "
        f"validation image(s) in validation/ (MVTec LOCO AD parts{config}). "
        "Read it with LAYOUT='mvtec_loco' (--layout mvtec_loco) or 'auto' to use them.",
        DatasetWarning,
        stacklevel=3,
    )
