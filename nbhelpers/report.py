"""Report helpers: error analysis of predictions and ``nbhelpers report`` (papermill + nbconvert of
``notebooks/08_report.ipynb`` on any dataset folder)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from nbhelpers.data.records import Sample, Split
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


def _folder_of(sample: Sample, base: Path) -> str:
    """The folder of ``sample``'s image relative to ``base`` (the category folder), e.g. ``test/good/``."""
    try:
        return f"{sample.image.parent.relative_to(base).as_posix()}/"
    except ValueError:
        return f"{sample.image.parent}/"


def _use(counts: Counter[str], held: str) -> str:
    """How the images of one folder were used, e.g. ``4 trained on, 2 held back for testing``; ``held``
    says how test images of a folder that also gives training images were chosen."""
    tested = f"held back for testing{held}" if counts["train"] else "tested"
    parts = [(counts["train"], "trained on"), (counts["test"], tested), (counts["val"], "for validation")]
    return ", ".join(f"{n} {what}" for n, what in parts if n)


def data_usage(split: Split) -> str:
    """One Markdown line saying which images of ``split`` were used how, per folder of the category.

    E.g. ``**parts** (folder): `good/` 4 trained on, 2 held back for testing (seeded, the same on every
    run); `scratch/` 3 tested.`` A folder giving both training and test images (a plain folder's
    ``good/``, VisA's ``Data/Images/Normal/``) is said to be held back from.
    """
    base = split.root / split.category
    counts: dict[str, Counter[str]] = {}
    for part, samples in (("train", split.train), ("test", split.test), ("val", split.val)):
        for sample in samples:
            counts.setdefault(_folder_of(sample, base), Counter())[part] += 1
    held = " (seeded, the same on every run)" if split.layout == "folder" else ""
    uses = "; ".join(f"`{folder}` {_use(c, held)}" for folder, c in counts.items())
    return f"**{split.category}** ({split.layout}): {uses}."


def _require_report_categories(data_root: Path, layout: str, category: str) -> None:
    """One :class:`DatasetError` when ``data_root`` yields no category, or lacks a requested one."""
    from nbhelpers.data.layouts import require_categories

    found = require_categories(data_root, layout)
    missing = [c for c in (c.strip() for c in category.split(",")) if c and c not in found]
    if missing:
        raise DatasetError(f"{data_root}: no category {', '.join(missing)}; categories found: {', '.join(found)}. "
                           "Pass one of them with --category, or none for all.")


def render_report(data_root: str | Path, output: str | Path, layout: str = "auto", category: str = "",
                  methods: str = "baseline", preset: str = "cpu", device: str = "auto", seed: int = 0,
                  notebook: str | Path | None = None) -> Path:
    """Execute the report notebook on ``data_root`` and write a standalone HTML file to ``output``.

    Returns the HTML path. Raises :class:`~nbhelpers.errors.DatasetError` for a missing data folder,
    one that yields no category (naming the folder and quoting the expected tree) or lacks ``category``
    (all before anything runs), and :class:`~nbhelpers.errors.NotebookError` naming the failing cell when
    the notebook fails (the executed notebook is kept next to the HTML for inspection).
    """
    from nbhelpers.runner import export_html, run_notebook

    if not Path(data_root).is_dir():
        raise DatasetError(f"{data_root}: data folder does not exist; pass the dataset root with --data.")
    if Path(data_root).name != "synthad":  # the notebook generates SynthAD into a missing or empty synthad/
        _require_report_categories(Path(data_root), layout, category)
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
