"""The exercise registry, the checker and the loader of reference solutions.

An :class:`Exercise` names the package function a student re-implements (``reference``), how to
draw fresh random arguments for a trial (``inputs``, seeded by the trial number) and which
arguments the result must be differentiable with respect to (``grad``). :func:`check` calls the
student's function and the package's on the same arguments, several trials, and reports the first
difference in type, shape, dtype, values or input gradients.
"""
from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nbhelpers.exercises.compare import compare_gradients, compare_values, describe, float_tensors, projection

#: Where the reference solutions live: ``notebooks/solutions/<exercise>.py`` of the repository.
SOLUTIONS_DIR = Path(__file__).resolve().parents[2] / "notebooks" / "solutions"

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
_ICONS = {PASSED: "✅", FAILED: "❌", NOT_ATTEMPTED: "⏳"}


class ExerciseError(AssertionError):
    """Raised by ``check(..., strict=True)`` when an answer does not pass."""


@dataclass(frozen=True)
class Exercise:
    """One checked exercise.

    Attributes:
        name: identifier, ``<topic>_<what>`` (e.g. ``"thfr_image_nns"``); also the solution's file name.
        notebook: the two-digit prefix of the notebook that poses it (``"02"``).
        paper: what it implements, e.g. ``"THFR Eq. 1"``.
        function: the name of the function the student defines and the solution file exports,
            ``my_<name>`` so that it never shadows the package's function in the notebook.
        task: one-sentence statement.
        reference: the package's implementation, called with the same positional arguments.
        inputs: ``seed -> {argument name: value}``, fresh random arguments for one trial.
        grad: names of the arguments (tensors or lists of tensors) whose gradients must match.
        trials: number of random trials. atol, rtol: value tolerances (gradients: 10x).
    """

    name: str
    notebook: str
    paper: str
    function: str
    task: str
    reference: Callable[..., Any]
    inputs: Callable[[int], dict[str, Any]]
    grad: tuple[str, ...] = ()
    trials: int = 3
    atol: float = 1e-5
    rtol: float = 1e-4

    def __str__(self) -> str:
        return f"notebook {self.notebook} · {self.name} ({self.paper}): {self.task}"


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check`: ``status`` is ``"passed"``, ``"failed"`` or ``"not attempted"``."""

    exercise: str
    paper: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{_ICONS[self.status]} {self.exercise} ({self.paper}) — {self.status}: {self.message}"

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"{_ICONS[self.status]} **{self.exercise}** ({self.paper}) — *{self.status}*: {self.message}"


_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add ``exercise`` to the registry (names are unique)."""
    if exercise.name in _REGISTRY:
        raise ValueError(f"exercise {exercise.name!r} is registered twice.")
    _REGISTRY[exercise.name] = exercise
    return exercise


def get(name: str) -> Exercise:
    """The exercise called ``name``; a ``KeyError`` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown exercise {name!r}; known: {', '.join(sorted(_REGISTRY))}.") from None


def list_exercises(notebook: str | None = None) -> list[Exercise]:
    """All exercises (or those of one notebook prefix such as ``"04"``), by notebook, then as registered."""
    found = [e for e in _REGISTRY.values() if notebook is None or e.notebook == notebook]
    return sorted(found, key=lambda e: e.notebook)


def load_solution(name: str, directory: str | Path | None = None) -> Callable[..., Any]:
    """The reference solution of exercise ``name``: function ``exercise.function`` of
    ``<directory>/<name>.py`` (default :data:`SOLUTIONS_DIR`, the repository's ``notebooks/solutions``).

    Raises:
        FileNotFoundError: no solution file (e.g. the package was installed without the repository).
        AttributeError: the file does not define the function.
    """
    exercise = get(name)
    path = Path(directory or SOLUTIONS_DIR) / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"No reference solution for {name!r} at {path}. Solutions live in notebooks/solutions/ of the "
            "repository, not in the installed package: work in a clone (pip install -e .) or pass directory=...")
    spec = importlib.util.spec_from_file_location(f"nbhelpers_solution_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, exercise.function):
        raise AttributeError(f"{path} does not define the function {exercise.function!r}.")
    return getattr(module, exercise.function)


def _copy(args: dict[str, Any]) -> dict[str, Any]:
    """Independent copies of the arguments (modules are shared: they are parameters, not data)."""
    return {k: v if isinstance(v, torch.nn.Module) else copy.deepcopy(v) for k, v in args.items()}


def _with_grad(args: dict[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], list[str], list[torch.Tensor]]:
    """Copies of ``args`` whose ``names`` tensors (or lists of tensors) require grad, with the leaves."""
    args = _copy(args)
    labels, leaves = [], []
    for name in names:
        value = args[name]
        items = value if isinstance(value, (list, tuple)) else [value]
        fresh = [t.detach().clone().requires_grad_(True) for t in items]
        args[name] = type(value)(fresh) if isinstance(value, (list, tuple)) else fresh[0]
        labels += [f"{name}[{i}]" for i in range(len(fresh))] if isinstance(value, (list, tuple)) else [name]
        leaves += fresh
    return args, labels, leaves


def _gradients(fn: Callable[..., Any], args: dict[str, Any], names: tuple[str, ...],
               seed: int) -> tuple[list[str], list[torch.Tensor | None] | str]:
    """Input gradients of ``<fn(args), w>`` for random weights ``w`` drawn from ``seed``; a message
    instead when ``fn``'s result is not connected to the inputs."""
    args, labels, leaves = _with_grad(args, names)
    outputs = float_tensors(fn(*args.values()))
    if not any(o.requires_grad for o in outputs):
        return labels, ("wrong gradient: your result is not connected to its inputs — it was computed with "
                        ".detach(), .item(), NumPy or new tensors built from Python numbers, so no gradient "
                        "can flow back.")
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=gen) for o in outputs]
    return labels, list(torch.autograd.grad(projection(outputs, weights), leaves, allow_unused=True))


def _gradient_problem(exercise: Exercise, fn: Callable[..., Any], args: dict[str, Any], seed: int) -> str | None:
    labels, expected = _gradients(exercise.reference, args, exercise.grad, seed)
    try:
        _, actual = _gradients(fn, args, exercise.grad, seed)
    except Exception as exc:  # e.g. .numpy() on a tensor that requires grad
        return (f"wrong gradient: with inputs that require grad your function raised {type(exc).__name__}: {exc} "
                "— use torch operations only (no NumPy, no .item()).")
    if isinstance(actual, str):
        return actual
    return compare_gradients(expected, actual, labels, 10 * exercise.atol, 10 * exercise.rtol)


def _result(exercise: Exercise, status: str, message: str) -> CheckResult:
    return CheckResult(exercise.name, exercise.paper, status, message)


def check(name: str, fn: Callable[..., Any], strict: bool = False, trials: int | None = None) -> CheckResult:
    """Compare ``fn`` with the package's implementation of exercise ``name`` on fresh random inputs.

    Each trial draws new arguments (seeded by the trial number, so a failure repeats), calls the
    package's function and ``fn`` on independent copies, and compares type, shape, dtype and values
    and, for differentiable exercises, the gradients with respect to ``exercise.grad``. The first
    difference is reported. A ``fn`` that raises ``NotImplementedError`` is "not attempted" (no error).

    Args:
        name: the exercise (see :func:`list_exercises`). fn: the student's function.
        strict: raise :class:`ExerciseError` unless the check passes (used with the reference solutions).
        trials: number of random trials (default: the exercise's).

    Returns:
        A :class:`CheckResult`; it renders as one line in a notebook.
    """
    exercise = get(name)
    n = exercise.trials if trials is None else trials
    result = _result(exercise, PASSED, f"matches the package on {n} random trials"
                     + (" (values and gradients)." if exercise.grad else "."))
    for trial in range(n):
        args = exercise.inputs(trial)
        inputs = ", ".join(f"{k} {describe(v)}" for k, v in args.items())
        expected = exercise.reference(*_copy(args).values())
        try:
            actual = fn(*_copy(args).values())
        except NotImplementedError:
            result = _result(exercise, NOT_ATTEMPTED, f"replace `raise NotImplementedError` in `{exercise.function}` "
                             "with your code and run the cell again.")
            break
        except Exception as exc:
            result = _result(exercise, FAILED, f"trial {trial + 1} (inputs: {inputs}): your function raised "
                             f"{type(exc).__name__}: {exc}")
            break
        problem = compare_values(expected, actual, "your result", exercise.atol, exercise.rtol)
        if problem is None and exercise.grad:
            problem = _gradient_problem(exercise, fn, args, trial)
        if problem:
            result = _result(exercise, FAILED, f"trial {trial + 1} (inputs: {inputs}): {problem}")
            break
    if strict and not result.passed:
        raise ExerciseError(str(result))
    return result


__all__ = ["SOLUTIONS_DIR", "CheckResult", "Exercise", "ExerciseError", "check", "get", "list_exercises",
           "load_solution", "register"]
