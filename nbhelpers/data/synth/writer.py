"""Writing SynthAD trees (atomic per category, versioned manifest), reading and checking them."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nbhelpers.data.synth.categories import CATEGORIES, _counts, _params, _resolve, category_plan, render_sample
from nbhelpers.data.synth.spec import MANIFEST, VERSION, CategorySpec
from nbhelpers.errors import DatasetError
from nbhelpers.outputs import write_text_atomic
from nbhelpers.progress import progress as _progress


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Write a PNG without metadata (no time stamp: the same pixels give the same bytes)."""
    Image.fromarray(arr).save(path, format="PNG", compress_level=3)


def _entry(spec: CategorySpec, params: dict[str, int], seed: int, preset: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": spec.kind, "layout": spec.layout, "defects": spec.defects, "description": spec.description,
        "defect_types": {f: [d.name for d in spec.defect_types if d.folder == f] for f in spec.defects},
        "version": VERSION, "seed": int(seed), "preset": preset, "params": dict(params),
        "counts": _counts(spec, params),
    }
    if spec.layout == "mvtec_loco":
        entry["defects_config"] = [d.config(params["size"]) for d in spec.defect_types]
    return entry


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_leftovers(out: Path, name: str) -> None:
    """Remove temporary folders of ``name`` left behind by interrupted runs (not by running ones)."""
    for d in list(out.glob(f".tmp-{name}-*")) + list(out.glob(f".old-{name}-*")):
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and (not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)


def _write_category(out: Path, spec: CategorySpec, params: dict[str, int], seed: int, show: bool) -> None:
    _clean_leftovers(out, spec.name)
    tmp = out / f".tmp-{spec.name}-{os.getpid()}"
    size = params["size"]
    jobs = category_plan(spec.name, params)
    folders = {Path(j.relpath).parent for j in jobs} | {Path(j.mask_relpath).parent for j in jobs if j.mask_relpath}
    for d in sorted(folders):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    try:
        for job in _progress(jobs, desc=f"SynthAD {spec.name}", enabled=None if show else False):
            img, regions = render_sample(spec.name, job.index, job.split, job.defect.name if job.defect else None,
                                         seed=seed, size=size)
            _save_png(img, tmp / job.relpath)
            if job.defect is None:
                continue
            if spec.layout == "mvtec_loco":
                mdir = tmp / job.mask_relpath
                mdir.mkdir(parents=True, exist_ok=True)
                for k, region in enumerate(regions):
                    _save_png(region.astype(np.uint8) * np.uint8(job.defect.pixel_value), mdir / f"{k:03d}.png")
            else:
                union = np.logical_or.reduce(regions)
                _save_png(union.astype(np.uint8) * np.uint8(255), tmp / job.mask_relpath)
        if spec.layout == "mvtec_loco":
            config = [d.config(size) for d in spec.defect_types]
            (tmp / "defects_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        final = out / spec.name
        if final.exists():
            old = out / f".old-{spec.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        return None
    return data


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``synthad.json`` atomically, and only when its content changes."""
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    path = out / MANIFEST
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        write_text_atomic(path, text)


def plan(out: str | Path, categories: list[str] | str | None = None, preset: str = "cpu", seed: int = 0,
         overwrite: bool = False, **overrides: int) -> tuple[list[str], list[str]]:
    """``(to write, to keep)``: which categories :func:`generate` with the same arguments writes and
    which it leaves as they are (folders that exist, written by this :data:`VERSION` with the same seed
    and settings, or of unknown origin).

    Raises:
        DatasetError: without ``overwrite``, a category folder exists that SynthAD wrote with another
            seed or preset settings (keeping it would leave files that do not match the request; the
            message names each one with its seed and preset). Nothing is written.
    """
    params = _params(preset, overrides)
    out = Path(out).expanduser()
    entries = (_read_manifest(out / MANIFEST) or {}).get("categories", {})
    write, keep, other = [], [], []
    for name in _resolve(categories):
        entry = entries.get(name)
        exists, outdated = (out / name).is_dir(), _outdated(entry)
        if not exists or overwrite or outdated:
            write.append(name)
            continue
        keep.append(name)
        if isinstance(entry, dict) and not entry.get("unverified") and (entry.get("seed") != seed
                                                                          or entry.get("params") != params):
            other.append(f"{name} (seed {entry.get('seed')}, preset {entry.get('preset')})")
    if other:
        raise DatasetError(f"{out}: {', '.join(other)} already written with other settings than --seed {seed} "
                           f"--preset {preset}; nothing was changed. Pass --overwrite to regenerate them, or "
                           "choose another --out.")
    return write, keep


def generate(out: str | Path, categories: list[str] | str | None = None, preset: str = "cpu", seed: int = 0,
             overwrite: bool = False, progress: bool = True, **overrides: int) -> Path:
    """Write SynthAD to ``out`` (one folder per category plus ``synthad.json``) and return ``out``.

    Args:
        out: dataset root (``DATA_ROOT`` of the notebooks).
        categories: names from :data:`CATEGORIES` and/or kinds (``texture``, ``object``,
            ``logical``); ``None`` = all nine. A comma-separated string works too.
        preset: a key of :data:`SYNTH_PRESETS` (``smoke``, ``cpu``, ``paper``).
        seed: the same seed gives byte-identical files.
        overwrite: regenerate categories whose folder exists; with ``False`` they are skipped
            (their manifest entry is kept) when SynthAD wrote them with the same seed and settings or
            they are of unknown origin, refused when it wrote them with other ones (see :func:`plan`),
            and always regenerated when another :data:`VERSION` wrote them (never mixed with current ones).
        progress: show a progress bar per category.
        **overrides: replace preset values (``size``, ``n_train``, ``n_val``, ``n_test_good``,
            ``n_test_per_defect``).

    Each category is written to a hidden temporary folder and renamed into place when complete,
    so an interrupted run leaves no half category. The manifest is rewritten after every category.

    Raises:
        ConfigError: unknown category, preset or setting (the message lists the valid ones).
        DatasetError: ``out`` is a file, or a category exists with other settings (see :func:`plan`).
    """
    params = _params(preset, overrides)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; expected the SynthAD output folder.")
    write, keep = plan(out, categories, preset, seed, overwrite, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = dict((_read_manifest(out / MANIFEST) or {}).get("categories", {}))
    for name in keep:  # an unknown origin is marked for ensure()
        spec = CATEGORIES[name]
        entries.setdefault(name, {"kind": spec.kind, "layout": spec.layout, "defects": spec.defects,
                                  "description": spec.description, "unverified": True})
    for name in [*write, None]:
        if name is not None:
            _write_category(out, CATEGORIES[name], params, seed, progress)
            entries[name] = _entry(CATEGORIES[name], params, seed, preset)
        _write_manifest(out, _manifest({n: entries[n] for n in CATEGORIES if n in entries}))
    return out


def _manifest(entries: dict[str, Any]) -> dict[str, Any]:
    """The manifest of ``entries``; its top-level ``seed``, ``preset``, ``size`` and ``params`` are those
    every SynthAD-written category shares, left out where they differ (each entry holds its own)."""
    written = [e for e in entries.values() if not e.get("unverified")]
    shared = {}
    for key, pick in (("seed", lambda e: e.get("seed")), ("preset", lambda e: e.get("preset")),
                      ("size", lambda e: (e.get("params") or {}).get("size")), ("params", lambda e: e.get("params"))):
        values = [pick(e) for e in written]
        if values and all(v == values[0] for v in values):
            shared[key] = values[0]
    return {"name": "SynthAD", "version": VERSION, **shared, "categories": entries}


def _outdated(entry: Any) -> bool:
    """Whether a manifest entry describes a category written by another SynthAD :data:`VERSION`
    (entries of version 1 carry no version; folders of unknown origin are not SynthAD's)."""
    return isinstance(entry, dict) and not entry.get("unverified") and entry.get("version", 1) != VERSION


def check_version(root: str | Path, category: str) -> None:
    """Refuse a SynthAD category that an older (or newer) generator wrote.

    Does nothing for folders that hold no ``synthad.json`` (any other dataset) or for categories
    the manifest does not know.

    Raises:
        DatasetError: one line naming the folder, both versions and the command that regenerates it.
    """
    root = Path(root).expanduser()
    manifest = _read_manifest(root / MANIFEST)
    entry = (manifest or {}).get("categories", {}).get(category)
    if _outdated(entry):
        raise DatasetError(
            f"{root / category}: written by SynthAD version {entry.get('version', 1)}, but this nbhelpers reads "
            f"version {VERSION} (its categories changed). Regenerate it with `nbhelpers synth --out {root}` "
            f"(outdated categories are rewritten; `make run` does this too).")


def dataset_tag(root: str | Path, category: str) -> str:
    """``synthad-v<VERSION>`` for a SynthAD category, else ``""``: part of the key of bench rows and
    checkpoints, so results computed on another generator version are never reused."""
    manifest = _read_manifest(Path(root).expanduser() / MANIFEST)
    entry = (manifest or {}).get("categories", {}).get(category)
    return f"synthad-v{entry.get('version', 1)}" if isinstance(entry, dict) and not entry.get("unverified") else ""


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read ``<root>/synthad.json``.

    Raises:
        DatasetError: the manifest is missing or malformed (the message says how to generate it).
    """
    path = Path(root).expanduser() / MANIFEST
    fix = (f"Generate SynthAD with `nbhelpers synth --out {Path(root)}` or "
           f"`nbhelpers.data.synth.generate({str(root)!r})`.")
    if not path.is_file():
        raise DatasetError(f"{path}: SynthAD manifest is missing, so {root} holds no generated SynthAD. {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read as JSON ({exc}). Delete it and regenerate. {fix}") from exc
    if not isinstance(data, dict) or data.get("name") != "SynthAD" or not isinstance(data.get("categories"), dict):
        raise DatasetError(f"{path}: not a SynthAD manifest (expected name 'SynthAD' and a categories "
                           f"mapping). Delete it and regenerate. {fix}")
    return data


def ensure(out: str | Path, preset: str = "cpu", seed: int = 0, categories: list[str] | str | None = None,
           progress: bool = True) -> Path:
    """Generate SynthAD into ``out`` only where it is missing or stale; return ``out``.

    A category is (re)generated when the manifest is missing, has no entry for it, its folder is
    missing, or the entry was made with another :data:`VERSION`, seed or preset settings (a category
    folder of unknown origin is regenerated, i.e. overwritten).
    """
    params = _params(preset, {})
    names = _resolve(categories)
    out = Path(out).expanduser()
    manifest = _read_manifest(out / MANIFEST) or {}
    entries = manifest.get("categories", {})
    stale = [
        n for n in names
        if not (out / n).is_dir()
        or not isinstance(entries.get(n), dict)
        or entries[n].get("version", 1) != VERSION
        or entries[n].get("seed") != seed
        or entries[n].get("params") != params
    ]
    if stale:
        generate(out, stale, preset=preset, seed=seed, overwrite=True, progress=progress)
    return out
