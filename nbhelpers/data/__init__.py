"""Data: records, layout readers, the SynthAD benchmark, synthetic anomalies, torch datasets."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("texture", "object", "structural", "logical")


def prepare_data(data_root: str | Path, category: str = "", preset: str = "cpu", seed: int = 0,
                 layout: str = "auto", generate: bool = True) -> list[str]:
    """Open a dataset root for a notebook and return the categories to use.

    A missing or empty folder, or a SynthAD root, is (re)generated with SynthAD (sized by ``preset``;
    presets without a SynthAD size use ``cpu``) and nothing is regenerated when it is complete. Any
    other folder is read as it is (MVTec AD, LOCO, VisA, BTAD or folder layout). ``category`` ("" =
    all categories) may be one name or a comma list. ``generate=False`` never writes anything (reports
    on a team's own folder: a wrong path is an error, not a new benchmark).

    Raises:
        DatasetError: the folder holds no category (naming it and quoting the expected tree), or a
            requested category is not there (listing those that are).
    """
    from nbhelpers.data import synth
    from nbhelpers.data.layouts import require_categories

    root = Path(data_root)
    if generate and (not root.exists() or not any(root.iterdir()) or (root / synth.MANIFEST).exists()):
        synth.ensure(root, preset=preset if preset in synth.SYNTH_PRESETS else "cpu", seed=seed)
    available = require_categories(root, layout)  # a folder without any category: one DatasetError
    if not category:
        return available
    wanted = [c.strip() for c in category.split(",") if c.strip()]
    from nbhelpers.errors import DatasetError

    missing = [c for c in wanted if c not in available]
    if missing:
        raise DatasetError(f"{root}: no category {missing}; available: {available}.")
    return wanted


def demo_categories(data_root: str | Path, splits: Mapping[str, Any],
                    prefer: Mapping[str, Sequence[str]] | None = None) -> dict[str, str | None]:
    """The categories a notebook demonstrates on, one per kind of :data:`KINDS`.

    ``structural``: a category outside the MVTec LOCO layout whose anomalies have masks; ``logical``:
    an MVTec LOCO-layout category; ``texture`` / ``object``: SynthAD's kinds from its manifest (a real
    dataset has no such labels: ``None``). For each kind the first name of ``prefer[kind]`` among
    them, else the first of them (sorted as ``splits``), else ``None``.

    Args:
        data_root: the dataset root (read for SynthAD's manifest only).
        splits: category -> :class:`~nbhelpers.data.records.Split` of the notebook.
        prefer: kind -> preferred category names, in order.
    """
    from nbhelpers.data import synth
    from nbhelpers.errors import DatasetError

    try:
        manifest = synth.load_manifest(data_root)
    except DatasetError:  # not SynthAD: no texture / object labels
        manifest = {}
    kind_of = {c: e.get("kind") for c, e in manifest.get("categories", {}).items() if isinstance(e, dict)}
    structural = [c for c, s in splits.items() if not s.is_logical and s.has_masks]
    members = {"structural": structural, "logical": [c for c, s in splits.items() if s.is_logical],
               "texture": [c for c in structural if kind_of.get(c) == "texture"],
               "object": [c for c in structural if kind_of.get(c) == "object"]}
    prefer = prefer or {}
    return {kind: next((c for c in prefer.get(kind, ()) if c in members[kind]), members[kind][0] if members[kind] else None)
            for kind in KINDS}
