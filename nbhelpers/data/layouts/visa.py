"""Reader of the VisA layout (split_csv/1cls.csv)."""
from __future__ import annotations

import csv
from pathlib import Path

from nbhelpers.data.layouts.common import (
    _VISA_COLUMNS,
    TREES,
    _as_root,
    _Check,
    _missing_category,
    _nonempty_test,
    _sorted,
    _visa_csv,
)
from nbhelpers.data.records import GOOD, Region, Sample, Split
from nbhelpers.errors import DatasetError


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
