"""The executed collection as a course site a student can read offline.

``nbhelpers run`` ends with :func:`build_site`: Sphinx with MyST-NB (the notebooks as ``nbhelpers run``
executed them; nothing is run again) and sphinx-book-theme (lesson sidebar, previous / next, full-text
search). All three are PyPI packages whose themes and scripts are inside their wheels, so the site builds
and reads with no network (Jupyter Book 2, by contrast, is Node-based and fetches its theme at build
time). Equations are typeset by MathJax 2 from the PyPI package ``jupyter-server-mathjax``, copied
into the site; the standalone HTML pages of ``nbhelpers run`` / ``nbhelpers report`` load the same
copy from a ``mathjax/`` folder beside them (:func:`copy_mathjax`), so a report folder can be zipped
and mailed as it is.

Pages: ``index`` (the lessons with their run status), every executed lesson with its run time, preset
and metrics at its top, the course guide and glossary from ``docs/``, and ``benchmark`` (notebook 07's
table of every method on every category).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the MathJax 2 configuration the pages load: the combined TeX configuration ``jupyter-server-mathjax``
#: ships, then :data:`MATHJAX_LOCAL`, written into the copy
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,local/local"
#: the renderer is the browser's own MathML (Chromium and Firefox render MathML Core): no web font is
#: fetched (looking fonts up is what fails offline; the package has no TeX web fonts)
MATHJAX_LOCAL = """MathJax.Hub.Config({menuSettings: {renderer: "NativeMML"}, messageStyle: "none", showMathMenu: false,
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
MathJax.Ajax.loadComplete("[MathJax]/config/local/local.js");
"""
#: the TeX fonts MathJax's MathML output declares for script, calligraphic, fraktur and double-struck letters
#: (``\\mathcal`` ...), which the package lacks, served from its STIX web fonts of the same letters
#: (browsers read a font by its content, not its file name)
VARIANT_FONTS = {"MathJax_Script-Regular.otf": "Script-Regular", "MathJax_Caligraphic-Regular.otf": "Script-Regular",
                 "MathJax_Caligraphic-Bold.otf": "Script-BoldItalic", "MathJax_Fraktur-Regular.otf": "Fraktur-Regular",
                 "MathJax_Fraktur-Bold.otf": "Fraktur-Bold", "MathJax_AMS-Regular.otf": "DoubleStruck-Regular"}
#: what of MathJax 2 a page with that configuration loads (other outputs, web fonts and translations
#: are left out)
MATHJAX_PARTS = ("MathJax.js", "config", "extensions", "jax/input", "jax/element", "jax/output/HTML-CSS",
                 "fonts/HTML-CSS/STIX-Web/woff")


def mathjax_source() -> Path:
    """The MathJax 2 distribution inside the installed ``jupyter-server-mathjax`` package."""
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_mathjax(folder: str | Path) -> Path:
    """Copy the parts of MathJax 2 that :data:`MATHJAX_CONFIG` needs, and :data:`MATHJAX_LOCAL`, to
    ``folder/mathjax`` (kept when already there; about 6 MB) and return that folder."""
    target = Path(folder) / "mathjax"
    if (target / "MathJax.js").is_file():
        return target
    source = mathjax_source()
    for part in MATHJAX_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / part)
    variants = target / "fonts" / "HTML-CSS" / "TeX" / "otf"
    variants.mkdir(parents=True, exist_ok=True)
    for name, stix in VARIANT_FONTS.items():
        shutil.copy2(source / "fonts" / "HTML-CSS" / "STIX-Web" / "woff" / f"STIXMathJax_{stix}.woff", variants / name)
    (target / "config" / "local").mkdir(parents=True)
    (target / "config" / "local" / "local.js").write_text(MATHJAX_LOCAL)
    return target


def mathjax_url(relative_folder: str = "mathjax") -> str:
    """The script URL of a MathJax copy at ``relative_folder`` (relative to the page)."""
    return f"{relative_folder}/MathJax.js?config={MATHJAX_CONFIG}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _scalars(metrics: dict[str, Any], most: int = 8) -> str:
    from nbhelpers.benchmark import _fmt

    items = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    shown = ", ".join(f"`{k}` {_fmt(v)}" for k, v in items[:most])
    return shown + (f" and {len(items) - most} more in `metrics.json`" if len(items) > most else "")


def run_header(record: dict[str, Any]) -> str:
    """The Markdown shown at the top of a lesson page: how this run went (status, time, preset, when)
    and its headline metrics."""
    status = "ran" if record.get("status") == "ok" else f"**failed** (cell {record.get('failed_cell')})"
    line = (f"**This run:** {status} in {_duration(float(record.get('seconds') or 0))} with the "
            f"`{record.get('preset')}` preset, finished {record.get('finished') or 'n/a'} (UTC).")
    metrics = _scalars(record.get("metrics") or {})
    rows = (record.get("metrics") or {}).get("rows")
    if isinstance(rows, list) and rows:
        metrics = f"{len(rows)} result rows (tables below)" + (f"; {metrics}" if metrics else "")
    return f"> {line}" + (f" Metrics: {metrics}." if metrics else "")


def _lesson(executed: Path, record: dict[str, Any], target: Path) -> str:
    """Copy an executed notebook with :func:`run_header` as a cell after its title; returns the title
    (the first line of its first cell, without the ``#``; the notebook's name when empty)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(run_header(record)))
    nbformat.write(nb, str(target))
    first = nb.cells[0].source.splitlines()
    return first[0].lstrip("# ").strip() if first else executed.stem


def _index(records: Sequence[dict[str, Any]], titles: dict[str, str], preset: str, guides: Sequence[str]) -> str:
    intro = "".join(f" The [{name}]({page}.md) is a page too." for name, page in
                    (("course guide", "docs/COURSE"), ("glossary", "docs/GLOSSARY")) if page in guides)
    lines = ["# Visual anomaly detection: the course", "",
             f"Numbered lessons, executed with the `{preset}` preset by `nbhelpers run` (each page is the executed "
             "notebook; its run time, preset and metrics are at its top). Every method on every category is on "
             f"the [benchmark](benchmark.md) page.{intro}", "", "| lesson | status | run time |", "|---|---|---|"]
    for r in records:
        status = "ok" if r.get("status") == "ok" else f"failed (cell {r.get('failed_cell')})"
        lines.append(f"| [{titles[r['name']]}](notebooks/{r['name']}.ipynb) | {status} | "
                     f"{_duration(float(r.get('seconds') or 0))} |")
    lines += ["", "```{toctree}", ":caption: Lessons", ":maxdepth: 1", ""]
    lines += [f"notebooks/{r['name']}" for r in records]
    lines += ["```", "", "```{toctree}", ":caption: Course", ":maxdepth: 1", "", *guides, "benchmark", "```", ""]
    return "\n".join(lines)


def _benchmark_page(reports: Path) -> str:
    table = reports / "07_benchmark" / "results.md"
    body = table.read_text() if table.is_file() else (
        "Notebook 07 has not written its table in this run (`reports/07_benchmark/results.md`).")
    return ("# Benchmark: every method on every category\n\n"
            "The table notebook 07 wrote in this run (`reports/07_benchmark/results.md`): image AUROC, pixel "
            "AUROC, AUPRO / AUsPRO, pixel AP, fit time, milliseconds per image, peak memory. Rows missing here "
            "are listed in [lesson 07](notebooks/07_benchmark.ipynb) with the `nbhelpers bench` command that adds "
            "them.\n\n" + body + "\n")


#: the course's guides in ``docs/`` that become pages (their links from the notebooks keep working)
GUIDES = ("COURSE.md", "GLOSSARY.md")

CONF = '''# generated by nbhelpers.site: the course site's Sphinx configuration (offline)
project = "Visual anomaly detection"
html_title = "Visual anomaly detection: the course"
extensions = ["myst_nb"]
nb_execution_mode = "off"               # the notebooks as `nbhelpers run` executed them
nb_render_markdown_format = "myst"      # Markdown outputs with their math
nb_output_stderr = "remove"             # progress bars
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False             # MathJax 2 here: no MathJax 3 configuration object in the pages
html_context = {{"default_mode": "light"}}
html_theme = "sphinx_book_theme"
html_theme_options = {{"use_download_button": False, "use_fullscreen_button": False,
                      "use_repository_button": False, "home_page_in_toc": True, "show_navbar_depth": 1}}
html_static_path = ["_static"]
html_favicon = "_static/favicon.png"     # a browser asks for one: no 404 in the console
mathjax_path = "{mathjax}"
html_copy_source = False
html_show_sourcelink = False
exclude_patterns = ["_build"]
suppress_warnings = ["myst.xref_missing", "myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
'''


def _favicon(path: Path) -> None:
    """A 32 x 32 icon: a heat-map square with one hot spot (an anomaly map)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[:32, :32]
    heat = np.exp(-((x - 20) ** 2 + (y - 12) ** 2) / 40.0)
    rgb = np.stack([255 * heat, 60 + 80 * (1 - heat), 140 * (1 - heat)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def build_site(reports: str | Path = "reports", docs: str | Path = "docs", out: str | Path | None = None,
               quiet: bool = True) -> Path:
    """Build the course site from the executed notebooks of ``reports`` (``summary.json`` of
    ``nbhelpers run``) into ``out`` (default ``reports/site``); returns its ``index.html``.

    The Sphinx sources are written to ``reports/site_src`` (rebuilt each time): ``notebooks/`` (the
    executed lessons with :func:`run_header`), ``docs/COURSE.md`` and ``docs/GLOSSARY.md`` (the same
    relative paths as in the repository, so the notebooks' links to them resolve), ``benchmark.md`` and
    ``index.md``. Sphinx's warnings (e.g. links to repository files that are not pages) go to
    ``site_src/warnings.txt``.

    Raises:
        FileNotFoundError: ``reports`` holds no ``summary.json`` (run ``nbhelpers run`` first).
    """
    from sphinx.cmd.build import build_main

    reports = Path(reports)
    summary = reports / "summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"{summary}: no executed notebooks to build the site from; run `nbhelpers run` first.")
    records = [r for r in json.loads(summary.read_text()) if (reports / f"{r['name']}.ipynb").is_file()]
    src = reports / "site_src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    (src / "docs").mkdir()
    titles = {r["name"]: _lesson(reports / f"{r['name']}.ipynb", r, src / "notebooks" / f"{r['name']}.ipynb")
              for r in records}
    guides = [page for page in GUIDES if (Path(docs) / page).is_file()]  # a collection of one's own may lack them
    for page in guides:
        shutil.copy2(Path(docs) / page, src / "docs" / page)
    (src / "benchmark.md").write_text(_benchmark_page(reports))
    preset = records[0].get("preset", "") if records else ""
    (src / "index.md").write_text(_index(records, titles, preset, [f"docs/{Path(g).stem}" for g in guides]))
    copy_mathjax(src / "_static")
    _favicon(src / "_static" / "favicon.png")
    (src / "conf.py").write_text(CONF.format(mathjax=mathjax_url()))
    out = Path(out) if out is not None else reports / "site"
    shutil.rmtree(out, ignore_errors=True)
    args = ["-b", "html", "-w", str(src / "warnings.txt"), *(["-q"] if quiet else []), str(src), str(out)]
    if build_main(args) != 0:
        raise RuntimeError(f"Sphinx could not build the course site from {src}; see {src / 'warnings.txt'}.")
    return out / "index.html"
