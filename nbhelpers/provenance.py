"""Where a result or a model came from: the resolved settings and a cheap fingerprint of the data.

A bench result row and a checkpoint are reused only when both match the run at hand, so a row
computed with other ``--set`` overrides, another data folder, other files or another layout is
never returned for this one (docs/RELIABILITY.md, 7.1-7.3).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nbhelpers.data.records import Sample

#: config fields that change how a fitted model is *run*, not what it computes: a checkpoint may be
#: loaded with other values of these (``nbhelpers predict --set batch_size=64``), never of any other
PREDICT_TIME_FIELDS = ("device", "batch_size", "num_workers", "progress")

#: config fields that do not change a fit or its scores (left out of :func:`run_digest`)
RUN_ONLY_FIELDS = ("device", "num_workers", "progress")


def _stat(path: Path) -> list[Any]:
    try:
        st = Path(path).stat()
    except OSError:
        return [str(path), None, None]
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def data_fingerprint(samples: Iterable[Sample]) -> str:
    """16 hex digits of a SHA-1 over every sample's label, defect type, and path, size and modification
    time of its image and of each region mask (with the region's sPRO saturation).

    Cheap (one ``stat`` per file, no pixel is read) and changes whenever a file is added, removed,
    rewritten or moved, or a label changes.
    """
    rows = []
    for s in samples:
        regions = [[*_stat(r.mask), r.saturation, r.relative] for r in s.regions]
        rows.append([*_stat(s.image), int(s.label), s.defect, regions])
    rows.sort(key=lambda r: r[0])
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:16]


def run_digest(config: dict[str, Any], fingerprint: str, layout: str, device_type: str) -> str:
    """10 hex digits naming one run: the resolved config (less :data:`RUN_ONLY_FIELDS`), the data
    fingerprint, the layout read and the device type (timings and bf16 differ between devices)."""
    kept = {k: v for k, v in sorted(config.items()) if k not in RUN_ONLY_FIELDS}
    text = json.dumps([kept, fingerprint, layout, device_type], default=list)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       allowed: Sequence[str] = PREDICT_TIME_FIELDS) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, current value)}`` for every field outside ``allowed`` that differs
    (tuples and lists compare alike, as a checkpoint may hold either)."""
    def norm(v: Any) -> Any:
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

    keys = sorted((set(saved) | set(current)) - set(allowed))
    return {k: (saved.get(k), current.get(k)) for k in keys if norm(saved.get(k)) != norm(current.get(k))}
