"""Every notebook runs under papermill with the smoke preset and writes its metrics JSON."""
import re
from pathlib import Path

import nbformat
import pytest

from nbhelpers.runner import PARAMETER_KEYS, discover, notebook_parameters, parameters_cell_names

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover(ROOT / "notebooks")


def test_there_are_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_parameterised(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks stripped"
    assert "widgets" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # the runner's parameters (for every preset) must exist in the notebook: papermill only warns otherwise
    assert set(notebook_parameters("smoke", ".", ".")) == set(PARAMETER_KEYS) <= parameters_cell_names(path)
    if path.stem.startswith(("01", "07")):  # share fits with `nbhelpers bench`; the runner sets it
        assert "BENCH_DIR" in parameters_cell_names(path)
    for cell in code:
        assert "nn.Module" not in cell.source, "model code belongs in nbhelpers"
        assert "matplotlib.use" not in cell.source and "TODO" not in cell.source


@pytest.mark.notebooks
@pytest.mark.timeout(3600)  # all nine notebooks in one test; the suite-wide default is 1200 s per test
def test_all_notebooks_execute_with_smoke_preset(smoke_reports):
    reports, runs = smoke_reports
    failed = {r.name: f"cell {r.failed_cell}: {r.error}" for r in runs if r.status != "ok"}
    assert not failed, failed
    assert len(runs) == len(NOTEBOOKS)
    for run in runs:
        assert run.metrics, f"{run.name} wrote no metrics.json"
        html = Path(run.html).read_text()
        assert "data:image/png;base64" in html, f"{run.name}: no figure in the HTML export"
        assert "mathjax/MathJax.js?config=" in html, f"{run.name}: math not typeset by the MathJax copy beside it"
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html), f"{run.name}: loads from outside"
    index = (reports / "index.html").read_text()
    assert all(p.stem in index for p in NOTEBOOKS)
    assert (reports / "mathjax" / "MathJax.js").is_file()
