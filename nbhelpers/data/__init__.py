"""Data: records, layout readers, the SynthAD benchmark, synthetic anomalies, torch datasets."""
from __future__ import annotations

from pathlib import Path


def prepare_data(data_root: str | Path, category: str = "", preset: str = "cpu", seed: int = 0,
                 layout: str = "auto", generate: bool = True) -> list[str]:
    """Open a dataset root for a notebook and return the categories to use.

    A missing or empty folder, or a SynthAD root, is (re)generated with SynthAD (sized by ``preset``;
    presets without a SynthAD size use ``cpu``) and nothing is regenerated when it is complete. Any
    other folder is read as it is (MVTec AD, LOCO, VisA, BTAD or folder layout). ``category`` ("" =
    all categories) may be one name or a comma list. ``generate=False`` never writes anything (reports
    on a team's own folder: a wrong path is an error, not a new benchmark).
    """
    from nbhelpers.data import synth
    from nbhelpers.data.layouts import list_categories

    root = Path(data_root)
    if generate and (not root.exists() or not any(root.iterdir()) or (root / synth.MANIFEST).exists()):
        synth.ensure(root, preset=preset if preset in synth.SYNTH_PRESETS else "cpu", seed=seed)
    available = list_categories(root, layout)
    if not category:
        return available
    wanted = [c.strip() for c in category.split(",") if c.strip()]
    from nbhelpers.errors import DatasetError

    missing = [c for c in wanted if c not in available]
    if missing:
        raise DatasetError(f"{root}: no category {missing}; available: {available}.")
    return wanted
