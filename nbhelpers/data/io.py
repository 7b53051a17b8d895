"""Reading images and masks from disk with one clear error per bad file.

Grayscale, RGBA, palette and 16-bit images are accepted and converted to 8-bit RGB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nbhelpers.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file does not exist.")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    return img


def check_image(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file whose data is complete, without decoding it at full size.

    PNG: every chunk is read and its checksum verified (no decompression); JPEG: decoded at 1/8
    scale; other formats: decoded. A truncated or corrupt file raises here, not mid-training.

    Raises:
        DatasetError: the file is missing, not an image, truncated or corrupt (the message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            size = img.size
            if img.format == "PNG":
                img.verify()
            else:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file does not exist.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    return size


def _to_uint8(img: Image.Image) -> Image.Image:
    """Convert 16-bit / 32-bit / float images to 8-bit by scaling their value range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB."""
    img = _to_uint8(_open(path))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as ``bool[H, W]`` (non-zero pixels are foreground)."""
    img = _to_uint8(_open(path))
    arr = np.asarray(img.convert("L"))
    return arr > 0
