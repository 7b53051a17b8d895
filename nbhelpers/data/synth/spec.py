"""SynthAD's records: defect types, category specs, presets, manifest name and generator version."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nbhelpers.errors import ConfigError

MANIFEST = "synthad.json"


VERSION = 2


KINDS = ("texture", "object", "logical")


LOGICAL = "logical_anomalies"


STRUCTURAL = "structural_anomalies"


#: Sizes and counts per preset. ``n_val`` only applies to the MVTec LOCO layout (``validation/good``;
#: MVTec AD has no validation folder). ``n_test_per_defect`` counts per defect *type*: a LOCO
#: ``logical_anomalies`` folder holds ``n_test_per_defect`` images of each logical defect type.
SYNTH_PRESETS: dict[str, dict[str, int]] = {
    "smoke": dict(size=64, n_train=8, n_val=4, n_test_good=4, n_test_per_defect=2),
    "cpu": dict(size=256, n_train=60, n_val=10, n_test_good=40, n_test_per_defect=20),
    "paper": dict(size=256, n_train=240, n_val=40, n_test_good=60, n_test_per_defect=20),
}


_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class DefectType:
    """One defect type of a category.

    Attributes:
        name: defect name (``defect_name`` in ``defects_config.json``).
        folder: test sub-folder that holds its images (the defect name in MVTec AD layout,
            ``logical_anomalies``/``structural_anomalies`` in MVTec LOCO layout).
        pixel_value: value its LOCO mask files are filled with.
        saturation: sPRO saturation threshold: a fraction of the region's area when ``relative``,
            else an absolute pixel count given as a fraction of the image area (so it scales with
            the generated size; :meth:`config` turns it into pixels).
        relative: how to read ``saturation``.
    """

    name: str
    folder: str
    pixel_value: int = 255
    saturation: float = 1.0
    relative: bool = True

    def config(self, size: int) -> dict[str, Any]:
        """The ``defects_config.json`` entry of this defect for images of ``size`` x ``size``."""
        sat: float | int = float(self.saturation) if self.relative else int(round(self.saturation * size * size))
        return {"defect_name": self.name, "pixel_value": int(self.pixel_value),
                "saturation_threshold": sat, "relative_saturation": bool(self.relative)}


#: ``render(rng, drng, size, defect) -> (float32 image [H, W, 3] in [0, 1], list of bool regions)``;
#: ``rng`` draws the normal content (always the same draws), ``drng`` the defect (``None`` = normal).
RenderFn = Callable[[np.random.Generator, "np.random.Generator | None", int, "DefectType | None"],
                    "tuple[np.ndarray, list[np.ndarray]]"]


@dataclass(frozen=True)
class CategorySpec:
    """One SynthAD category.

    Attributes:
        name: category folder name.
        kind: ``texture``, ``object`` or ``logical``.
        layout: ``mvtec_ad`` or ``mvtec_loco``.
        defect_types: its defect types, in the order they are written.
        description: one line for the manifest and the notebooks.
        render: the render function (see ``RenderFn``).
    """

    name: str
    kind: str
    layout: str
    defect_types: tuple[DefectType, ...]
    description: str
    render: RenderFn = field(repr=False, compare=False)

    @property
    def defects(self) -> list[str]:
        """Test sub-folder names of the anomalies (what readers report as ``Sample.defect``)."""
        return list(dict.fromkeys(d.folder for d in self.defect_types))

    @property
    def defect_names(self) -> list[str]:
        return [d.name for d in self.defect_types]

    def defect_type(self, name: str) -> DefectType:
        for d in self.defect_types:
            if d.name == name:
                return d
        raise ConfigError(f"SynthAD category {self.name!r} has no defect {name!r}; "
                          f"valid: {', '.join(self.defect_names)}.")
