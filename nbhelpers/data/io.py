"""Reading images and masks from disk with one clear error per bad file.

Grayscale, RGBA, palette and 16-bit images are accepted and converted to 8-bit RGB. An EXIF
orientation tag (photos of phones and cameras) is applied on every read, to images and masks alike,
so pixels are used as a photo viewer shows them; sizes reported by :func:`check_image` are after it.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from nbhelpers.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: EXIF orientations that rotate by 90 or 270 degrees (width and height swap).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix (case-insensitive) and is not hidden."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` (non-image files are ignored)."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _unreadable(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(
        f"{path}: cannot be read as an image ({exc.__class__.__name__}: {exc}). "
        "Expected a complete, readable PNG/JPEG/BMP/TIFF/WebP file; replace or delete it."
    )


def _too_large(path: Path, exc: Image.DecompressionBombError) -> DatasetError:
    """The error for an image above PIL's decompression-bomb limit (2 x ``MAX_IMAGE_PIXELS``)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return DatasetError(
        f"{path}: image has {pixels}, above PIL's decompression-bomb limit of "
        f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} (2 x PIL.Image.MAX_IMAGE_PIXELS). Downscale it, or, if the "
        "file is trusted, raise the limit before reading (PIL.Image.MAX_IMAGE_PIXELS = <pixels>, or None)."
    )


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what PIL raises while reading ``path`` into one :class:`DatasetError` naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file does not exist.") from exc
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from exc


def _orientation(img: Image.Image) -> int:
    """EXIF orientation of an opened image (1 when it has none), without decoding its pixels.

    A PNG's EXIF is only looked at when its ``eXIf`` chunk precedes the pixel data (as written by
    PIL and cameras); reading one placed after the pixels would mean decompressing them.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(ExifTags.Base.Orientation, 1) or 1)


def exif_orientation(path: Path) -> int:
    """EXIF orientation tag of an image file: 1 (none or upright) to 8; 5-8 swap width and height.

    Raises:
        DatasetError: the file is missing, not an image or too large to open.
    """
    path = Path(path)
    with _reading(path), Image.open(path) as img:
        return _orientation(img)


def open_image(path: Path) -> Image.Image:
    """The decoded image of a file, EXIF orientation applied (any mode, as stored).

    Raises:
        DatasetError: the file is missing, unreadable, or above PIL's decompression-bomb limit.
    """
    path = Path(path)
    with _reading(path):
        img = Image.open(path)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    return img


def check_image(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file whose data is complete, without decoding it at full size.

    PNG: every chunk is read and its checksum verified (no decompression); JPEG: decoded at 1/8
    scale; other formats: decoded. A truncated or corrupt file raises here, not mid-training. The
    size is the displayed one: EXIF orientations 5-8 (90/270 degree rotations) swap width and height,
    as :func:`read_image` and :func:`read_mask` do.

    Raises:
        DatasetError: the file is missing, not an image, truncated, corrupt, or above PIL's
            decompression-bomb limit (the message names it and the fix).
    """
    path = Path(path)
    with _reading(path), Image.open(path) as img:
        width, height = img.size
        if _orientation(img) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        if img.format == "PNG":
            img.verify()
        else:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    return width, height


def _to_uint8(img: Image.Image) -> Image.Image:
    """Convert 16-bit / 32-bit / float images to 8-bit by scaling their value range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB (EXIF orientation applied)."""
    img = _to_uint8(open_image(path))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as ``bool[H, W]`` (non-zero pixels are foreground; EXIF orientation applied)."""
    img = _to_uint8(open_image(path))
    arr = np.asarray(img.convert("L"))
    return arr > 0
