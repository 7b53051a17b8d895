"""The runner records failures with their cell and goes on with the other notebooks."""
import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbhelpers.cli import main
from nbhelpers.runner import run_collection


def _notebook(path: Path, body: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('PRESET = "cpu"\nDATA_ROOT = ""\nCATEGORY = ""\nDEVICE = "auto"\nSEED = 0\nOUTPUT_DIR = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body)]
    nbformat.write(nb, str(path))


def test_failing_notebook_is_reported_and_others_run(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_ok.ipynb", "import json, pathlib\n"
              "pathlib.Path(OUTPUT_DIR, 'metrics.json').write_text(json.dumps({'answer': 42, 'preset': PRESET}))")
    _notebook(nbs / "01_fails.ipynb", "raise ValueError('broken on purpose')")
    _notebook(nbs / "02_ok.ipynb", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    runs = run_collection(nbs, tmp_path / "reports", preset="smoke", data_root=tmp_path, site=False)
    status = {r.name: r.status for r in runs}
    assert status == {"00_ok": "ok", "01_fails": "failed", "02_ok": "ok"}
    failed = runs[1]
    assert "ValueError: broken on purpose" in failed.error and failed.failed_cell is not None
    assert runs[0].metrics == {"answer": 42, "preset": "smoke"}
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "broken on purpose" in index and "00_ok.html" in index and "answer = 42" in index
    assert "data:image/png;base64" in (tmp_path / "reports" / "02_ok.html").read_text()
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["ok", "failed", "ok"]


def test_cli_run_exit_code(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_fails.ipynb", "1/0")
    assert main(["run", "--notebooks", str(nbs), "--out", str(tmp_path / "r"), "--data", str(tmp_path)]) == 1


def test_partial_runs_update_their_rows_and_keep_the_others(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb", "x = 1")
    _notebook(nbs / "01_second.ipynb", "raise ValueError('first attempt')")
    run_collection(nbs, out, preset="smoke", data_root=tmp_path, site=False)
    _notebook(nbs / "01_second.ipynb", "x = 2")
    runs = run_collection(nbs, out, preset="smoke", data_root=tmp_path, only=["01"], site=False)
    assert [r.name for r in runs] == ["01_second"]  # only the requested notebook ran
    summary = {s["name"]: s for s in json.loads((out / "summary.json").read_text())}
    assert list(summary) == ["00_first", "01_second"] and summary["01_second"]["status"] == "ok"
    assert summary["00_first"]["status"] == "ok" and summary["00_first"]["finished"]
    index = (out / "index.html").read_text()
    assert "00_first.html" in index and "first attempt" not in index and "2 of 2 notebooks" in index
    run_collection(nbs, out, preset="cpu", data_root=tmp_path, only=["00"], site=False)  # another preset: not mixed in
    assert [s["name"] for s in json.loads((out / "summary.json").read_text())] == ["00_first"]
