"""Plain records that every dataset reader returns.

A reader never loads pixels: it returns :class:`Split` objects holding :class:`Sample` records with
paths, labels and the per-region saturation thresholds of MVTec LOCO-style data. ``torchdata``
turns records into batches; ``metrics`` turns per-region masks into sPRO.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GOOD = "good"


@dataclass(frozen=True)
class Region:
    """One ground-truth defect region (one mask file of MVTec LOCO, or the whole mask elsewhere).

    Attributes:
        mask: path of a mask image; non-zero pixels belong to the region.
        saturation: sPRO saturation threshold. With ``relative=True`` a fraction of the region's
            area, else an absolute pixel count (at the mask's native resolution). ``None`` means
            "no saturation" (plain PRO: threshold = area).
        relative: how to read ``saturation``.
    """

    mask: Path
    saturation: float | None = None
    relative: bool = True


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    Attributes:
        image: path of the image file.
        label: 0 normal, 1 anomalous.
        defect: defect type name (``"good"`` for normal images).
        category: dataset category (e.g. ``"bottle"`` or ``"grass"``).
        regions: ground-truth regions; their union is the pixel mask. Empty for normal images and
            for anomalous images whose dataset ships no mask.
        layout: the reader that produced it (``mvtec_loco``, ``mvtec_ad``, ...; set by ``load_split``),
            so that a method can follow the dataset kind (e.g. THFR's ``n`` and ``sigma``).
    """

    image: Path
    label: int
    defect: str = GOOD
    category: str = ""
    regions: tuple[Region, ...] = ()
    layout: str = ""

    @property
    def has_mask(self) -> bool:
        return bool(self.regions)


@dataclass
class Split:
    """The samples of one category of one dataset.

    Attributes:
        root: dataset root folder.
        category: category name.
        layout: reader name that produced it (``mvtec_ad``, ``mvtec_loco``, ``visa``, ``btad``, ``folder``).
        train: normal training images.
        test: test images (normal and anomalous).
        val: optional validation images (MVTec LOCO ``validation/good``).
    """

    root: Path
    category: str
    layout: str
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)

    @property
    def defects(self) -> list[str]:
        """Defect types present in the test split, normal first."""
        seen = dict.fromkeys(s.defect for s in self.test)
        return sorted(seen, key=lambda d: (d != GOOD, d))

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test image has at least one ground-truth region."""
        anomalous = [s for s in self.test if s.label == 1]
        return bool(anomalous) and all(s.has_mask for s in anomalous)

    @property
    def is_logical(self) -> bool:
        """True for MVTec LOCO-style splits (per-region saturation: report AUsPRO)."""
        return self.layout == "mvtec_loco"

    def summary(self) -> dict[str, int]:
        """Counts per part: ``{"train": n, "val": n, "test/good": n, "test/<defect>": n, ...}``."""
        out = {"train": len(self.train), "val": len(self.val)}
        for d in self.defects:
            out[f"test/{d}"] = sum(s.defect == d for s in self.test)
        return out
