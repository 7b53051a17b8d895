"""Checked exercises: reference solutions pass, wrong answers fail with a message naming what differs,
unattempted ones are reported, notebooks only use registered exercises, the runner plugs in solutions."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from nbhelpers import exercises
from nbhelpers.exercises import ExerciseError, check, list_exercises, load_solution
from nbhelpers.runner import NotebookRun, discover, run_collection

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = list_exercises()
NAMES = [e.name for e in EXERCISES]
DIFFERENTIABLE = [e.name for e in EXERCISES if e.grad]


def _first_tensor_or_number(result):
    """The first element of a tuple result, or the result itself."""
    return result[0] if isinstance(result, tuple) else result


def _replace_first(result, new):
    return (new, *result[1:]) if isinstance(result, tuple) else new


def _offset(x):
    """An off-by-constant answer: +1 for integers (indices), +0.5 for floats."""
    if isinstance(x, torch.Tensor):
        return x + (0.5 if x.is_floating_point() else 1)
    return x + (0.5 if isinstance(x, (float, np.floating)) else 1)


def _rolled(x):
    """Entries moved by one position (a transposed / misindexed result of the same shape)."""
    if isinstance(x, torch.Tensor):
        return x.flatten().roll(1).reshape(x.shape)
    return np.roll(np.asarray(x), 1)


def _wrong_shape(x):
    return x.unsqueeze(0) if isinstance(x, torch.Tensor) else [x]


def _detached(result):
    return tuple(r.detach() for r in result) if isinstance(result, tuple) else result.detach()


def _through_numpy(result):
    if isinstance(result, tuple):
        return tuple(_through_numpy(r) for r in result)
    return torch.from_numpy(result.detach().numpy().copy())


def _mutated(name, mutate):
    solution = load_solution(name)
    return lambda *args: mutate(solution(*args))


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes(name):
    result = check(name, load_solution(name), strict=True)
    assert result.passed and result.status == "passed" and name in str(result)


@pytest.mark.parametrize("name", NAMES)
def test_not_implemented_is_reported_as_not_attempted(name):
    def stub(*args):
        raise NotImplementedError("your code here")

    result = check(name, stub)
    assert result.status == "not attempted" and not result
    assert "NotImplementedError" in result.message
    with pytest.raises(ExerciseError, match="not attempted"):
        check(name, stub, strict=True)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shape_or_type_is_named(name):
    def wrong(result):
        return _replace_first(result, _wrong_shape(_first_tensor_or_number(result)))

    result = check(name, _mutated(name, wrong))
    assert result.status == "failed"
    assert re.search(r"wrong (shape|type)", result.message), result.message
    with pytest.raises(ExerciseError):
        check(name, _mutated(name, wrong), strict=True)


@pytest.mark.parametrize("mutation", [_offset, _rolled], ids=["off_by_constant", "rolled"])
@pytest.mark.parametrize("name", NAMES)
def test_wrong_values_are_named_with_the_largest_difference(name, mutation):
    ex = exercises.get(name)
    if mutation is _rolled and np.ndim(_first_tensor_or_number(ex.reference(*ex.inputs(0).values()))) == 0:
        pytest.skip("a scalar result cannot be rolled")
    result = check(name, _mutated(name, lambda r: _replace_first(r, mutation(_first_tensor_or_number(r)))))
    assert result.status == "failed"
    assert "wrong values" in result.message and "largest difference" in result.message, result.message


@pytest.mark.parametrize("breaker", [_detached, _through_numpy], ids=["detach", "numpy"])
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradient_breaking_answers_are_named(name, breaker):
    result = check(name, _mutated(name, breaker))
    assert result.status == "failed"
    assert "wrong gradient" in result.message, result.message


def test_a_numpy_implementation_fails_on_the_gradient_not_the_values():
    def numpy_discrepancy(x, x_hat):
        a, b = x.numpy(), x_hat.numpy()
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        return torch.from_numpy(((a - b) ** 2).mean(-1) + 1 - cos)

    result = check("fod_reconstruction_discrepancy", numpy_discrepancy)
    assert "wrong gradient" in result.message and "NumPy" in result.message


@pytest.mark.parametrize("name, wrong", [
    ("thfr_image_nns", lambda q, keys, n: (lambda s: (s.topk(n).indices, s.topk(n).values))(q.flatten(1) @ keys.T)),
    ("thfr_relation_feature", lambda q, k: (lambda r: torch.cat([r, r], 2).transpose(1, 2).reshape(
        q.shape[0], -1, *q.shape[2:]))(torch.bmm(q.flatten(2).transpose(1, 2), k.flatten(2)))),
    ("fod_symmetric_kl", lambda p, q: (p * (torch.log(p + 1e-4) - torch.log(q + 1e-4))).sum(-1)),
    ("prn_nearest_residual", lambda f, p: (lambda i: ((f - p[i]) ** 2, i))(
        torch.cdist(f.flatten(1), p.flatten(1)).argmin(1))),
    ("pouta_image_score", lambda maps, window: maps.flatten(1).amax(1)),
], ids=["unnormalised_query", "one_direction_only", "one_sided_kl", "squared_residual", "no_pooling"])
def test_typical_mistakes_fail_on_values(name, wrong):
    result = check(name, wrong)
    assert result.status == "failed" and "wrong values" in result.message, result.message


def test_an_exception_is_reported_with_the_inputs():
    def broken(*args):
        raise ValueError("shapes do not broadcast")

    result = check("thfr_relation_feature", broken)
    assert result.status == "failed"
    assert "raised ValueError: shapes do not broadcast" in result.message and "query float32[" in result.message


def test_trials_use_fresh_seeded_inputs():
    ex = exercises.get("thfr_image_nns")
    first, again, second = ex.inputs(0), ex.inputs(0), ex.inputs(1)
    assert torch.equal(first["query"], again["query"])
    assert first["query"].shape != second["query"].shape or not torch.equal(first["query"], second["query"])


def test_list_exercises_covers_every_notebook():
    per_notebook = {nb: len(list_exercises(nb)) for nb in ("00", "01", "02", "03", "04", "05", "06")}
    assert per_notebook["00"] >= 1 and per_notebook["01"] >= 1
    assert per_notebook["02"] >= 1 and per_notebook["03"] >= 1 and per_notebook["02"] + per_notebook["03"] >= 2
    assert all(per_notebook[nb] >= 2 for nb in ("04", "05", "06")), per_notebook
    assert all(e.paper and e.task and e.function.isidentifier() for e in EXERCISES)
    with pytest.raises(KeyError, match="known"):
        exercises.get("no_such_exercise")


def test_load_solution_explains_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/solutions"):
        load_solution("thfr_image_nns", directory=tmp_path)
    (tmp_path / "thfr_image_nns.py").write_text("def something_else():\n    pass\n")
    with pytest.raises(AttributeError, match="image_nns"):
        load_solution("thfr_image_nns", directory=tmp_path)


def test_solutions_do_not_call_the_package():
    for name in NAMES:
        source = (exercises.SOLUTIONS_DIR / f"{name}.py").read_text()
        assert "nbhelpers" not in source, f"{name}: a reference solution must be written independently"


# --------------------------------------------------------------------------------- notebooks


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]


NOTEBOOKS = discover(ROOT / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_exercises_exist_and_follow_the_pattern(path):
    code = _code(path)
    source = "\n".join(code)
    used = set(re.findall(r"exercises\.check\(\s*[\"'](\w+)[\"']", source))
    loaded = set(re.findall(r"exercises\.load_solution\(\s*[\"'](\w+)[\"']", source))
    assert used <= set(NAMES) and loaded <= set(NAMES), (used | loaded) - set(NAMES)
    expected = {e.name for e in list_exercises(path.stem[:2])}
    assert used == loaded == expected, f"{path.name}: checks {used}, solutions {loaded}, registered {expected}"
    for name in expected:
        cell = next(c for c in code if f'exercises.check("{name}"' in c)
        function = exercises.get(name).function
        assert re.search(rf"def {function}\(", cell) and 'raise NotImplementedError("your code here")' in cell
        assert "strict=SOLUTIONS" in cell and "if SOLUTIONS:" in cell
    if expected:
        assert re.search(r"^SOLUTIONS = False\b", code[0], re.M), "the parameters cell must declare SOLUTIONS = False"


# ------------------------------------------------------------------------------------ runner


def _tiny_notebook(path: Path, extra: str = "") -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('PRESET = "cpu"\nDATA_ROOT = ""\nCATEGORY = ""\nDEVICE = "auto"\nSEED = 0\nOUTPUT_DIR = "."'
                           + extra)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nbformat.write(nb, str(path))


def test_runner_sets_solutions_where_a_notebook_declares_them(tmp_path, monkeypatch):
    _tiny_notebook(tmp_path / "00_with.ipynb", "\nSOLUTIONS = False")
    _tiny_notebook(tmp_path / "01_without.ipynb")
    seen = {}

    def fake_run(path, out_dir, parameters, timeout=None):
        seen[path.stem] = dict(parameters)
        return NotebookRun(name=path.stem, status="ok", seconds=0.0, executed=str(out_dir / path.name))

    monkeypatch.setattr("nbhelpers.runner.run_notebook", fake_run)
    run_collection(tmp_path, tmp_path / "reports", preset="smoke", data_root=tmp_path, site=False)
    assert seen["00_with"]["SOLUTIONS"] is True
    assert "SOLUTIONS" not in seen["01_without"]


def test_course_guide_lists_every_exercise():
    course = (ROOT / "docs" / "COURSE.md").read_text()
    assert [n for n in NAMES if f"`{n}`" not in course] == []
