"""Report helpers: error analysis of predictions and ``nbhelpers report`` (papermill + nbconvert of
``notebooks/08_report.ipynb`` on any dataset folder)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from nbhelpers.errors import ConfigError, DatasetError, NotebookError
from nbhelpers.metrics import image_auroc

REPORT_NOTEBOOK = "08_report.ipynb"


def f1_threshold(scores: Any, labels: Any) -> float:
    """The image-score threshold that maximises F1 (``nan`` with one class only)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if labels.min() == labels.max():
        return float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def worst_cases(scores: Any, labels: Any, k: int = 4) -> dict[str, list[int]]:
    """Indices of the ``k`` most confidently wrong images: highest-scored normal images
    (``"false_positives"``) and lowest-scored anomalous images (``"false_negatives"``)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    normal, anomalous = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return {"false_positives": normal[np.argsort(-scores[normal], kind="stable")][:k].tolist(),
            "false_negatives": anomalous[np.argsort(scores[anomalous], kind="stable")][:k].tolist()}


def per_defect_auroc(scores: Any, labels: Any, defects: Sequence[str]) -> dict[str, float]:
    """Image AUROC of each defect type against the normal images (``nan`` without normal images)."""
    scores, labels, defects = np.asarray(scores, float), np.asarray(labels, int), np.asarray(defects)
    normal = labels == 0
    out = {}
    for d in sorted(set(defects[labels == 1].tolist())):
        pick = normal | (defects == d)
        out[d] = image_auroc(scores[pick], labels[pick])
    return out


def render_report(data_root: str | Path, output: str | Path, layout: str = "auto", category: str = "",
                  methods: str = "baseline", preset: str = "cpu", device: str = "auto", seed: int = 0,
                  notebook: str | Path | None = None) -> Path:
    """Execute the report notebook on ``data_root`` and write a standalone HTML file to ``output``.

    Returns the HTML path. Raises :class:`~nbhelpers.errors.DatasetError` for a missing data folder
    (before anything runs) and :class:`~nbhelpers.errors.NotebookError` naming the failing cell when the
    notebook fails (the executed notebook is kept next to the HTML for inspection).
    """
    from nbhelpers.runner import export_html, run_notebook

    if not Path(data_root).is_dir():
        raise DatasetError(f"{data_root}: data folder does not exist; pass the dataset root with --data.")
    source = Path(notebook) if notebook else Path(__file__).resolve().parents[1] / "notebooks" / REPORT_NOTEBOOK
    if not source.is_file():
        raise ConfigError(f"{source}: report notebook not found; pass --notebook PATH/TO/{REPORT_NOTEBOOK}.")
    output = Path(output)
    work = output.with_suffix("")
    params = {"PRESET": preset, "DATA_ROOT": str(Path(data_root).resolve()), "CATEGORY": category,
              "DEVICE": device, "SEED": seed, "OUTPUT_DIR": str(work.resolve()), "LAYOUT": layout, "METHODS": methods}
    run = run_notebook(source, work, params)
    if run.status != "ok":
        raise NotebookError(f"report notebook failed in cell {run.failed_cell}: {run.error} (see {run.executed})")
    output.parent.mkdir(parents=True, exist_ok=True)
    return export_html(Path(run.executed), output)
