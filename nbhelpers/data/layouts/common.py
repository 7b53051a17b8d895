"""What every layout reader shares: the expected trees, cheap file checks, one clear DatasetError per problem, the MVTec-style tree walk."""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

from PIL import Image

from nbhelpers.data.io import IMAGE_SUFFIXES, check_image, exif_orientation, list_images
from nbhelpers.data.records import GOOD, Region, Sample, Split
from nbhelpers.errors import DatasetError, DatasetWarning

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
        "  <DATA_ROOT>/<category>/ground_truth/<defect>/<stem>.<ext> or <stem>_mask.<ext>   (optional)\n"
        "  or, a plain folder without a train/test split (no masks; a seeded 1/3 of good/ is held back for testing):\n"
        "  <DATA_ROOT>/<category>/good/*\n"
        "  <DATA_ROOT>/<category>/<defect>/*        (one folder per defect type, e.g. scratch/)"
    ),
}


_VISA_CSV = ("split_csv", "1cls.csv")


_VISA_COLUMNS = ("object", "split", "label", "image", "mask")


_LOCO_CONFIG = "defects_config.json"


_SUFFIXES = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)


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
                if isinstance(exc.__cause__, Image.DecompressionBombError):
                    raise
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
                f"at the image's resolution or remove it.{_exif_note(mask, image)}"
            )


def _exif_note(*paths: Path) -> str:
    """A sentence naming the files among ``paths`` that carry an EXIF orientation ("" when none)."""
    tagged = [(p, o) for p in paths if (o := exif_orientation(p)) != 1]
    if not tagged:
        return ""
    which = ", ".join(f"{p} has EXIF orientation {o}" for p, o in tagged)
    return (
        f" Note: {which}; both sizes are after applying EXIF orientation (as a photo viewer shows the "
        "files), so draw the mask on the image as displayed, or save both without the orientation tag."
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


def _is_category_dir(folder: Path) -> bool:
    """True when ``folder`` itself looks like a category: it holds ``train/``, ``test/`` or ``good/``."""
    return any((folder / name).is_dir() for name in ("train", "test", GOOD))


def _tree_categories(root: Path) -> list[str]:
    """Sub-folders of ``root`` that look like categories: they hold a ``train/`` folder, or (plain
    folder tree) a ``good/`` folder; none when ``root`` is itself a category folder."""
    if _is_category_dir(root):
        return [d.name for d in _subdirs(root) if (d / "train").is_dir()]
    return [d.name for d in _subdirs(root) if (d / "train").is_dir() or (d / GOOD).is_dir()]


def _category_folder_hint(root: Path) -> str:
    """" <root> itself holds train/ ...: set DATA_ROOT to its parent" when ``root`` is a category folder
    (or the train/, test/ or validation/ folder of one), else ""."""
    if root.name in ("train", "test", "validation") and (root.parent / "train").is_dir():
        return (
            f" {root} looks like the {root.name}/ folder of category {root.parent.name!r}, so set DATA_ROOT to "
            f"{root.parent.parent} (and CATEGORY to {root.parent.name!r})."
        )
    held = [f"{name}/" for name in ("train", GOOD) if (root / name).is_dir()]
    if not held:
        return ""
    return (
        f" {root} itself holds {' and '.join(held)}: it looks like a category folder, so set DATA_ROOT to "
        f"{root.parent} (and CATEGORY to {root.name!r})."
    )


def _missing_category(root: Path, category: str, layout: str, existing: list[str]) -> DatasetError:
    """The error for a missing category; ``layout="auto"`` leaves the expected tree out."""
    if existing:
        have = f"Categories found under {root}: {', '.join(existing)}."
    else:
        have = (
            f"No category was found under {root} (no sub-folder holds a train/ or good/ folder"
            + (" and split_csv/1cls.csv lists no object" if layout == "visa" else "")
            + ")."
        )
    hint = _category_folder_hint(root)
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
