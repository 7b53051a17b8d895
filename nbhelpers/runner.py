"""Execute the notebook collection with papermill, export HTML and write an index.

Each notebook runs in kernel ``python3`` with the parameters of :func:`notebook_parameters`; its
executed copy and HTML land in ``reports/``, its ``metrics.json`` in ``reports/<name>/``. A failing
notebook is recorded with its failing cell and the others still run. ``--only`` runs update their
rows of the index and keep the other notebooks' rows from earlier runs with the same preset, so a
long collection can be executed a few notebooks at a time.
"""
from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PARAMETER_KEYS = ("PRESET", "DATA_ROOT", "CATEGORY", "DEVICE", "SEED", "OUTPUT_DIR")


@dataclass
class NotebookRun:
    """Outcome of one notebook: status ``ok``/``failed``, seconds, failing cell, metrics, output files,
    the preset and when it finished (UTC, ISO 8601)."""

    name: str
    status: str
    seconds: float
    executed: str
    html: str | None = None
    error: str | None = None
    failed_cell: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    preset: str = ""
    finished: str = ""


def discover(notebook_dir: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Numbered notebooks ``NN_*.ipynb`` of a folder, sorted; ``only`` filters by name prefix."""
    paths = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
    return paths


def notebook_parameters(preset: str, data_root: str | Path, output_dir: str | Path, category: str | None = None,
                        device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """The papermill parameters every notebook's ``parameters`` cell defines (``PARAMETER_KEYS``)."""
    return {"PRESET": preset, "DATA_ROOT": str(Path(data_root).resolve()), "CATEGORY": category or "",
            "DEVICE": device, "SEED": seed, "OUTPUT_DIR": str(Path(output_dir).resolve())}


def parameters_cell_names(path: str | Path) -> set[str]:
    """Names papermill itself finds in the cell tagged ``parameters`` (a line papermill cannot parse,
    e.g. a comment holding quotes, is missing here exactly as papermill would then warn)."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def export_html(executed: Path, target: Path) -> Path:
    """Convert an executed notebook to an HTML file (figures embedded) that loads nothing from outside:
    its equations are typeset by the MathJax copy in ``mathjax/`` beside it
    (:func:`nbhelpers.site.copy_mathjax`), so the folder can be zipped and mailed as it is."""
    import nbformat
    from nbconvert import HTMLExporter

    from nbhelpers.site import copy_mathjax, mathjax_url

    # no require.js (nbconvert loads it from a CDN for widget state, which the executed notebooks do not keep)
    exporter = HTMLExporter(mathjax_url=mathjax_url(), require_js_url="")
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
    copy_mathjax(target.parent)
    target.write_text(body, encoding="utf-8")
    return target


def run_notebook(path: Path, out_dir: Path, parameters: dict[str, Any], timeout: int | None = None) -> NotebookRun:
    """Execute one notebook with papermill and export it; never raises for a failing notebook."""
    import papermill as pm

    from nbhelpers.explorer import HEADLESS_ENV

    os.environ[HEADLESS_ENV] = "1"  # kernels inherit it: widgets render static figures instead
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    output_dir = Path(parameters["OUTPUT_DIR"])
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = NotebookRun(name=path.stem, status="ok", seconds=0.0, executed=str(executed), preset=str(parameters["PRESET"]))
    try:
        pm.execute_notebook(str(path), str(executed), parameters=parameters, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
    except pm.PapermillExecutionError as exc:
        run.status, run.failed_cell = "failed", exc.exec_count
        run.error = f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel death, missing kernel, unreadable notebook ...
        run.status, run.error = "failed", f"{exc.__class__.__name__}: {exc}"
    run.seconds = time.perf_counter() - t0
    run.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if executed.exists():
        try:
            run.html = str(export_html(executed, executed.with_suffix(".html")))
        except Exception as exc:
            run.error = (run.error or "") + f" (HTML export failed: {exc})"
    metrics_file = output_dir / "metrics.json"
    if metrics_file.exists():
        run.metrics = json.loads(metrics_file.read_text())
    return run


def _metrics_html(metrics: dict[str, Any]) -> str:
    from nbhelpers.benchmark import TABLE_COLUMNS, _fmt

    parts = []
    rows = metrics.get("rows")
    if isinstance(rows, list) and rows:
        cols = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
        parts.append(f"<table class='inner'><tr>{head}</tr>{body}</table>")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "rows"}
    if scalars:
        parts.append("<br>".join(f"{html.escape(k)} = {html.escape(_fmt(v))}" for k, v in scalars.items()))
    return "".join(parts)


def write_index(runs: Sequence[NotebookRun], out_dir: Path, preset: str) -> Path:
    """``reports/index.html`` (status, duration, failing cell, metrics per notebook) + ``summary.json``."""
    rows = []
    for r in runs:
        link = f"<a href='{html.escape(Path(r.html).name)}'>{html.escape(r.name)}</a>" if r.html else html.escape(r.name)
        status = ("<span class='ok'>ok</span>" if r.status == "ok"
                  else f"<span class='failed'>failed</span> (cell {r.failed_cell}): {html.escape(r.error or '')}")
        rows.append(f"<tr><td>{link}</td><td>{status}</td><td>{r.seconds:.1f}</td><td>{html.escape(r.finished)}</td>"
                    f"<td><div class='metrics'>{_metrics_html(r.metrics)}</div></td></tr>")
    failed = sum(r.status != "ok" for r in runs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>nbhelpers report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
table.inner td,table.inner th{{font-size:85%}} div.metrics{{max-width:60vw;max-height:24em;overflow:auto}}
.ok{{color:#1a7f37;font-weight:bold}} .failed{{color:#cf222e;font-weight:bold}}</style></head><body>
<h1>Visual anomaly detection notebooks</h1>
<p>Preset <b>{html.escape(preset)}</b>; {len(runs) - failed} of {len(runs)} notebooks succeeded.
The course site (lessons, search, glossary, benchmark; readable offline): <a href='site/index.html'>site/index.html</a>.</p>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>finished (UTC)</th><th>metrics</th></tr>{''.join(rows)}</table></body></html>"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps([asdict(r) for r in runs], indent=2,
                                                     default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    return index


def earlier_runs(out_dir: Path, preset: str) -> dict[str, NotebookRun]:
    """The records of ``out_dir/summary.json`` that ran with ``preset``, by notebook name (empty if none)."""
    summary = out_dir / "summary.json"
    try:
        records = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    names = {f.name for f in fields(NotebookRun)}
    return {r["name"]: NotebookRun(**{k: v for k, v in r.items() if k in names})
            for r in records if isinstance(r, dict) and r.get("preset") == preset and "name" in r}


def run_collection(notebook_dir: str | Path = "notebooks", out_dir: str | Path = "reports", preset: str = "cpu",
                   data_root: str | Path = "data/synthad", device: str = "auto", seed: int = 0,
                   only: Sequence[str] | None = None, timeout: int | None = None, site: bool = True) -> list[NotebookRun]:
    """Execute every numbered notebook (or those ``only`` names), export HTML, write the index and
    (with ``site``) build the offline course site ``out_dir/site`` (:func:`nbhelpers.site.build_site`).

    Returns one record per notebook run now; the index also lists the other notebooks' latest runs
    with the same preset (see :func:`earlier_runs`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = earlier_runs(out, preset)
    runs = []
    for path in discover(notebook_dir, only):
        params = notebook_parameters(preset, data_root, out / path.stem, device=device, seed=seed)
        declared = parameters_cell_names(path)
        if "BENCH_DIR" in declared:  # the benchmark shares fits with `nbhelpers bench --out <out>/bench`
            params["BENCH_DIR"] = str((out / "bench").resolve())
        if "SOLUTIONS" in declared:  # exercises run with their reference solutions: every checker is exercised
            params["SOLUTIONS"] = True
        print(f"[nbhelpers run] {path.name} (preset {preset}) ...", flush=True)
        run = run_notebook(path, out, params, timeout=timeout)
        print(f"[nbhelpers run] {path.name}: {run.status} in {run.seconds:.1f}s"
              + (f" — cell {run.failed_cell}: {run.error}" if run.error else ""), flush=True)
        runs.append(run)
    latest = {**kept, **{r.name: r for r in runs}}
    write_index([latest[p.stem] for p in discover(notebook_dir) if p.stem in latest], out, preset)
    if site:
        from nbhelpers.site import build_site

        t0 = time.perf_counter()
        try:
            index = build_site(out, Path(notebook_dir).parent / "docs")
            print(f"[nbhelpers run] course site: {index} ({time.perf_counter() - t0:.1f}s)", flush=True)
        except Exception as exc:  # the notebooks' results stand; the site is reported as not built
            print(f"[nbhelpers run] course site NOT built: {exc.__class__.__name__}: {exc}", flush=True)
    return runs
