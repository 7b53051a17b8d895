"""Train + evaluate one method on one category and report metrics, times and memory.

Used by ``nbhelpers bench`` and by the notebooks, so every method is measured the same way.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nbhelpers import get_device
from nbhelpers.data.layouts import load_split
from nbhelpers.data.records import Sample, Split
from nbhelpers.data.synth import dataset_tag
from nbhelpers.data.torchdata import load_regions
from nbhelpers.errors import ConfigError, DatasetWarning
from nbhelpers.methods.base import AnomalyMethod, MethodConfig, create, get_config
from nbhelpers.metrics import LOCO_METRIC_NAMES, METRIC_NAMES, evaluate, evaluate_loco
from nbhelpers.outputs import write_text_atomic
from nbhelpers.provenance import data_fingerprint, run_digest

TABLE_COLUMNS = ("category", "method", "image_auroc", "pixel_auroc", "aupro", "auspro", "pixel_ap",
                 "image_auroc_logical", "image_auroc_structural", "image_auroc_mean",
                 "auspro_logical", "auspro_structural", "auspro_mean",
                 "fit_s", "ms_per_image", "peak_mem_mb", "params_trainable")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run in MiB: CUDA max allocated on GPU, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def run_key(method: str, category: str, preset: str, seed: int, data_root: str | Path) -> str:
    """``<method>_<category>_<preset>_seed<seed>[_synthad-v<N>]``: the readable start of a run's name
    (:func:`run_name`). A SynthAD category adds its generator version
    (:func:`nbhelpers.data.synth.dataset_tag`)."""
    tag = dataset_tag(data_root, category)
    return f"{method}_{category}_{preset}_seed{seed}{'_' + tag if tag else ''}"


def split_fingerprint(split: Split) -> str:
    """:func:`~nbhelpers.provenance.data_fingerprint` of every file of the split (train, val, test)."""
    return data_fingerprint([*split.train, *split.val, *split.test])


def run_name(method: str, config: MethodConfig, split: Split, preset: str, fingerprint: str | None = None) -> str:
    """``<run_key>_<digest>``: the name of one run's result row and checkpoint. The digest
    (:func:`~nbhelpers.provenance.run_digest`) covers the model's full resolved config, the device type,
    the layout and the data fingerprint, so a row or fit is reused only for the same settings on the
    same files: never for other ``--set`` overrides, another data folder, changed files or layout."""
    fingerprint = split_fingerprint(split) if fingerprint is None else fingerprint
    digest = run_digest(config.to_dict(), fingerprint, split.layout, get_device(config.device).type)
    return f"{run_key(method, split.category, preset, config.seed, split.root)}_{digest}"


def bench_paths(bench_dir: str | Path, method: str, config: MethodConfig, split: Split, preset: str,
                fingerprint: str | None = None) -> tuple[Path, Path]:
    """``(row JSON, checkpoint)`` of one run in a bench folder: ``<bench_dir>/<run_name>.json`` and
    ``<bench_dir>/checkpoints/<run_name>.pt``, shared by ``nbhelpers bench`` and notebooks 01 and 07."""
    name = run_name(method, config, split, preset, fingerprint)
    return Path(bench_dir) / f"{name}.json", Path(bench_dir) / "checkpoints" / f"{name}.pt"


def hold_out_anomalies(split: Split, n: int, seed: int = 0) -> tuple[list[Sample], Split]:
    """Take ``n`` anomalous test samples out of ``split`` as *seen* anomalies for training.

    Picks them round-robin over defect types (seeded), and returns ``(seen, split_without_them)``
    so that evaluation never scores an image the method trained on.

    Raises:
        ConfigError: ``n`` would leave no anomalous test image to evaluate (the message gives both counts).
    """
    if n <= 0:
        return [], split
    available = sum(s.label == 1 for s in split.test)
    if n >= available:
        raise ConfigError(f"seen_anomalies={n}, but the test split of {split.root / split.category} holds "
                          f"{available} anomalous images and at least one must stay for evaluation: set it to at "
                          f"most {max(available - 1, 0)} (--seen-anomalies {max(available - 1, 0)}).")
    rng = random.Random(seed)
    by_defect: dict[str, list[Sample]] = {}
    for s in split.test:
        if s.label == 1:
            by_defect.setdefault(s.defect, []).append(s)
    for group in by_defect.values():
        rng.shuffle(group)
    seen: list[Sample] = []
    while len(seen) < n and any(by_defect.values()):
        for group in by_defect.values():
            if group and len(seen) < n:
                seen.append(group.pop())
    taken = set(id(s) for s in seen)
    rest = dataclasses.replace(split, test=[s for s in split.test if id(s) not in taken])
    return seen, rest


def evaluate_method(method: AnomalyMethod, split: Split, keep_predictions: bool = False) -> dict[str, Any]:
    """Predict the test split with a fitted method and compute every metric the split supports.

    Returns a dict with the metrics, ``n_test``, ``ms_per_image`` and, when ``keep_predictions``, the
    ``predictions`` dict of :meth:`AnomalyMethod.predict_all` (scores, maps, labels, masks, paths).
    """
    device = method.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    pred = method.predict_all(split.test)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    maps = pred["maps"].numpy()
    has_masks = split.has_masks
    regions = None
    if split.is_logical and has_masks:
        regions = [load_regions(s, maps.shape[-1]) for s in split.test]
    if len(set(pred["labels"].tolist())) < 2:
        only, undefined = (("anomalous", "the image-level metrics are") if split.test and split.test[0].label
                           else ("normal", "every metric is"))
        warnings.warn(f"{split.category}: the evaluated test split holds only {only} images, so {undefined} "
                      "undefined: NaN (n/a in tables). Add test images of the other class to measure them.",
                      DatasetWarning, stacklevel=2)
    scores, labels = pred["scores"].numpy(), pred["labels"].numpy()
    metrics = evaluate(scores, labels, maps if has_masks else None, pred["masks"].numpy() if has_masks else None,
                       regions=regions)
    if split.is_logical:  # MVTec LOCO's protocol: logical and structural anomalies apart, and their mean
        metrics.update(evaluate_loco(scores, labels, [s.defect for s in split.test], maps, regions))
    out: dict[str, Any] = {**metrics, "n_test": len(split.test), "ms_per_image": 1000 * seconds / max(len(split.test), 1)}
    if keep_predictions:
        out["predictions"] = pred
    return out


def timed_fit(model: AnomalyMethod, train: Sequence[Sample], val: Sequence[Sample] | None = None,
              anomalies: Sequence[Sample] | None = None) -> float:
    """``model.fit(train, val, anomalies)``; returns its wall-clock seconds (CUDA synchronised)."""
    t0 = time.perf_counter()
    model.fit(train, val or None, anomalies=anomalies or None)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - t0


def _row(model: AnomalyMethod, split: Split, preset: str, fit_s: float, n_seen: int, keep_predictions: bool,
         fingerprint: str, run: str = "", cached: bool = False, n_train: int | None = None) -> dict[str, Any]:
    """One result row: who, on what (``data_fingerprint`` of the split's files before seen anomalies were
    held out, and the full resolved ``config``), how long, how big, and every metric of
    :func:`evaluate_method`."""
    result = evaluate_method(model, split, keep_predictions=keep_predictions)
    cfg = model.config
    return {"method": model.name, "category": split.category, "layout": split.layout,
            "dataset_tag": dataset_tag(split.root, split.category), "run": run, "data_fingerprint": fingerprint,
            "preset": preset, "seed": cfg.seed, "device": str(model.device),
            "n_train": len(split.train) if n_train is None else n_train, "n_seen_anomalies": n_seen,
            "params_trainable": model.parameter_count()["trainable"], "fit_s": fit_s, "cached": cached,
            "peak_mem_mb": peak_memory_mb(model.device), **result, "config": cfg.to_dict()}


def fit_evaluate(method: str | AnomalyMethod, split: Split, preset: str = "cpu", device: str = "auto", seed: int = 0,
                 train: Sequence[Sample] | None = None, keep_predictions: bool = True,
                 **overrides: Any) -> tuple[AnomalyMethod, dict[str, Any]]:
    """Fit a method on a split already in memory and evaluate it exactly as :func:`run_benchmark` does.

    Args:
        method: a registry name (created with ``preset``, ``device``, ``seed`` and ``overrides``) or a
            method instance (used as it is).
        split: the category's records; a method with ``seen_anomalies`` gets them from its test part
            (:func:`hold_out_anomalies`), and they are not evaluated.
        train: the normal images to fit on (default ``split.train``; e.g. a few-shot subset).
        keep_predictions: keep ``row["predictions"]`` (see :func:`evaluate_method`) for plots.

    Returns:
        ``(fitted model, result row)`` with the columns of :func:`run_benchmark`.
    """
    model = create(method, preset, device=device, seed=seed, **overrides) if isinstance(method, str) else method
    fingerprint = split_fingerprint(split)
    seen, split = hold_out_anomalies(split, model.seen_anomalies, model.config.seed)
    train = split.train if train is None else list(train)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    fit_s = timed_fit(model, train, split.val, seen)
    return model, _row(model, split, preset, fit_s, len(seen), keep_predictions, fingerprint, n_train=len(train))


def run_benchmark(method: str, data_root: str | Path, category: str, preset: str = "cpu", layout: str = "auto",
                  device: str = "auto", seed: int = 0, keep_predictions: bool = False,
                  bench_dir: str | Path | None = None, refit: bool = False, split: Split | None = None,
                  **overrides: Any) -> dict[str, Any]:
    """Fit ``method`` (registry name) with ``preset`` on ``category`` of ``data_root`` and evaluate it.

    Methods that train on a few real anomalies (``config.seen_anomalies > 0``) get them from the test
    split via :func:`hold_out_anomalies`, and they are not evaluated.

    Returns one result row: metrics (see :func:`nbhelpers.metrics.evaluate`), ``fit_s``,
    ``ms_per_image``, ``peak_mem_mb``, ``n_train``, ``n_test``, ``device``, ``seed``, ``preset``, the
    ``run`` name, the ``data_fingerprint`` and the resolved ``config``. With ``bench_dir`` the row is
    also written to ``<bench_dir>/<run_name>.json`` and the fitted model to
    ``<bench_dir>/checkpoints/<run_name>.pt`` (:func:`bench_paths`); a later call of the same run (same
    config, device type, layout and data files: :func:`run_name`) loads that model instead of training
    again (``cached=True``, ``fit_s`` of the original fit); ``refit`` trains anyway and replaces it.
    ``split``: the category's records when already loaded (``load_split`` is then skipped).
    """
    return fit_or_load(method, data_root, category, preset, layout, device, seed, keep_predictions,
                       bench_dir, refit, split, **overrides)[1]


def is_cached(method: str, split: Split, bench_dir: str | Path | None, preset: str = "cpu", device: str = "auto",
              seed: int = 0, **overrides: Any) -> bool:
    """Whether ``bench_dir`` holds the checkpoint of this run, so :func:`fit_or_load` would load it
    instead of training (a notebook uses this to read resumable rows and fit only a declared subset)."""
    if not bench_dir:
        return False
    config = get_config(method, preset, device=device, seed=seed, **overrides)
    ckpt = bench_paths(bench_dir, method, config, split, preset)[1]
    return ckpt.is_file() and ckpt.with_suffix(".json").is_file()


def bench_command(method: str, category: str, preset: str, seed: int, data_root: str | Path, out: str | Path,
                  overrides: dict[str, Any] | None = None) -> str:
    """The ``nbhelpers bench`` command line that writes this run's row and fit to ``out`` (what
    :func:`fit_or_load` with ``bench_dir=out`` and these ``overrides`` reads)."""
    sets = "".join(f" --set {k}={v!r}" if isinstance(v, str) else f" --set {k}={v}" for k, v in (overrides or {}).items())
    return (f"nbhelpers bench --method {method} --category {category} --preset {preset} --seed {seed} "
            f"--data {data_root} --out {out}{sets}")


def fit_or_load(method: str, data_root: str | Path, category: str, preset: str = "cpu", layout: str = "auto",
                device: str = "auto", seed: int = 0, keep_predictions: bool = False,
                bench_dir: str | Path | None = None, refit: bool = False, split: Split | None = None,
                **overrides: Any) -> tuple[AnomalyMethod, dict[str, Any]]:
    """:func:`run_benchmark` that also returns the fitted (or loaded) model: ``(model, row)``."""
    split = load_split(data_root, category, layout=layout) if split is None else split
    model = create(method, preset, device=device, seed=seed, **overrides)
    fingerprint = split_fingerprint(split)
    name = run_name(method, model.config, split, preset, fingerprint)
    seen, rest = hold_out_anomalies(split, model.seen_anomalies, seed)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    row_file, ckpt = bench_paths(bench_dir, method, model.config, split, preset, fingerprint) if bench_dir else (None, None)
    cached = not refit and ckpt is not None and ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    if cached:
        model.load(ckpt)
        fit_s = float(json.loads(ckpt.with_suffix(".json").read_text())["fit_s"])
    else:
        fit_s = timed_fit(model, rest.train, rest.val, seen)
        if ckpt is not None:
            model.save(ckpt)
            write_text_atomic(ckpt.with_suffix(".json"), json.dumps({"fit_s": fit_s}))
    row = _row(model, rest, preset, fit_s, len(seen), keep_predictions, fingerprint, run=name, cached=cached)
    if row_file is not None:
        write_text_atomic(row_file, json.dumps({k: v for k, v in row.items() if k != "predictions"}, indent=2))
    return model, row


@dataclasses.dataclass
class NotebookFits:
    """The fits a notebook shows: read from ``bench_dir`` when ``nbhelpers bench`` (or an earlier run)
    left them there, fitted here when the notebook declares them part of its subset, and otherwise
    recorded with the ``nbhelpers bench`` command that adds them (:attr:`missing`).

    Attributes:
        data_root, splits: the dataset root and its loaded splits (category -> :class:`Split`).
        preset, device, seed: as for :func:`fit_or_load`.
        bench_dir: folder of resumable bench rows and checkpoints (``None`` or ``""``: fit here,
            keep nothing).
        missing: commands of the fits asked for but neither cached nor fitted, in order.
    """

    data_root: str | Path
    splits: dict[str, Split]
    preset: str
    device: str = "auto"
    seed: int = 0
    bench_dir: str | Path | None = None
    missing: list[str] = dataclasses.field(default_factory=list)

    def get(self, method: str, category: str, fit_here: bool, progress: bool | None = None,
            **overrides: Any) -> tuple[AnomalyMethod, dict[str, Any], dict[str, Any]] | None:
        """``(model, row, predictions)`` of ``method`` on ``category`` with ``overrides``, evaluated like
        ``nbhelpers bench``: read from ``bench_dir`` when there, else fitted if ``fit_here``, else
        ``None`` (and its command appended to :attr:`missing`). ``progress``: show the fit's progress
        bar (``None``: as the preset says; it does not change which fit is read)."""
        split, bench_dir = self.splits[category], self.bench_dir or None
        shown = {} if progress is None else {"progress": progress}
        if not fit_here and not is_cached(method, split, bench_dir, self.preset, self.device, self.seed,
                                          **shown, **overrides):
            self.missing.append(bench_command(method, category, self.preset, self.seed, self.data_root,
                                              bench_dir or "reports/bench", overrides))
            return None
        model, row = fit_or_load(method, self.data_root, category, preset=self.preset, device=self.device,
                                 seed=self.seed, keep_predictions=True, bench_dir=bench_dir, split=split,
                                 **shown, **overrides)
        return model, row, row.pop("predictions")

    def row(self, method: str, category: str, fit_here: bool, **overrides: Any) -> dict[str, Any] | None:
        """The result row of ``method`` on ``category`` with ``overrides`` as ``nbhelpers bench`` wrote it to
        ``bench_dir`` (``<run_name>.json``, read as it is: no model is loaded or evaluated, for tables
        over many runs), else :meth:`get`'s row (fitted if ``fit_here``, else ``None`` and listed)."""
        if self.bench_dir:
            config = get_config(method, self.preset, device=self.device, seed=self.seed, **overrides)
            row_file = bench_paths(self.bench_dir, method, config, self.splits[category], self.preset)[0]
            if row_file.is_file():
                return json.loads(row_file.read_text())
        got = self.get(method, category, fit_here, **overrides)
        return None if got is None else got[1]

    def missing_note(self, what: str, fitted_here: str) -> str | None:
        """Markdown that names ``what`` lacks fits in this run (``fitted_here``: what this preset fits)
        with the commands that add them, or ``None`` when nothing is missing; clears :attr:`missing`."""
        if not self.missing:
            return None
        commands = "\n".join(dict.fromkeys(self.missing))
        self.missing.clear()
        return (f"**{what}: not all fits are in this run** (preset `{self.preset}` fits {fitted_here} only and "
                f"`BENCH_DIR` lacks the rest). To add them, run\n\n```\n{commands}\n```")


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value / 1e6:.2f}M"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown table of result rows (columns missing from every row are dropped)."""
    cols = [c for c in columns if any(c in r for r in rows)]
    names = {**METRIC_NAMES, **LOCO_METRIC_NAMES, "fit_s": "fit s", "ms_per_image": "ms/image", "peak_mem_mb": "peak MiB",
             "backbone_gflop": "backbone GFLOP/image", "backbone_ms": "backbone ms/image",
             "scoring_gflop": "scoring GFLOP/image", "scoring_ms": "scoring ms/image", "gflop_per_s": "GFLOP/s",
             "pct_peak": "% of matmul rate", "kernel_gflop_per_s": "kernel GFLOP/s", "kernel_pct_peak": "kernel % of matmul rate",
             "params_trainable": "trainable params"}
    lines = ["| " + " | ".join(names.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
