"""Dataset readers: one function per on-disk layout, all returning :class:`~nbhelpers.data.records.Split`.

Readers do not decode pixels for use, except the MVTec LOCO reader, which reads each mask once to
find the defect it belongs to (its pixel value). With ``validate=True`` (the default) every image
and mask is checked with :func:`~nbhelpers.data.io.check_image` (complete data, cheaply: PNG
checksums, JPEG at 1/8 scale), masks are matched to images and compared in size, and a malformed
dataset raises one :class:`~nbhelpers.errors.DatasetError` naming the offending file or folder,
what was expected and the fix, before any model sees the data. Images of mixed sizes are accepted
(every method resizes to its square ``image_size``) with a
:class:`~nbhelpers.errors.DatasetWarning` listing the sizes.

Layouts (``LAYOUTS``): ``mvtec_ad``, ``mvtec_loco``, ``visa``, ``btad``, ``folder`` (which also reads a
plain ``<category>/good/`` + ``<category>/<defect>/`` folder, holding back part of ``good/`` for
testing); the trees are in each reader's docstring, in ``TREES`` and in ``data/README.md``. Images and
masks are read with their EXIF orientation applied. Use :func:`load_split` with ``layout="auto"``
to detect the layout.

Example:
    >>> split = load_split("data/synthad", "grass")            # doctest: +SKIP
    >>> split.summary()                                         # doctest: +SKIP
    {'train': 40, 'val': 0, 'test/good': 10, 'test/crack': 5}
"""
from __future__ import annotations

from nbhelpers.data.layouts.common import TREES, _LOCO_CONFIG, _SUFFIXES, _VISA_COLUMNS, _VISA_CSV
from nbhelpers.data.layouts.detect import LAYOUTS, detect_layout, list_categories, load_split, require_categories
from nbhelpers.data.layouts.folder import read_folder
from nbhelpers.data.layouts.mvtec import read_btad, read_mvtec_ad, read_mvtec_loco
from nbhelpers.data.layouts.visa import read_visa

__all__ = [
    "LAYOUTS",
    "TREES",
    "detect_layout",
    "list_categories",
    "load_split",
    "require_categories",
    "read_btad",
    "read_folder",
    "read_mvtec_ad",
    "read_mvtec_loco",
    "read_visa",
    "_VISA_CSV",
    "_VISA_COLUMNS",
    "_LOCO_CONFIG",
    "_SUFFIXES",
]
