"""Checked exercises: re-implement a piece of a paper in a notebook and compare it with the package.

In a notebook::

    from nbhelpers import exercises

    def my_image_nns(query, keys, n):
        raise NotImplementedError("your code here")

    if SOLUTIONS:
        my_image_nns = exercises.load_solution("thfr_image_nns")
    exercises.check("thfr_image_nns", my_image_nns, strict=SOLUTIONS)

:func:`check` runs the student's function and the package's on fresh random inputs and explains the
first difference (type, shape, dtype, values, gradients); :func:`list_exercises` lists every exercise
with its notebook and paper reference; reference solutions live in ``notebooks/solutions/``.
"""
import importlib
import importlib.util

from nbhelpers.exercises import catalog as _catalog  # noqa: F401  (registers the data and metrics exercises)
from nbhelpers.exercises.core import (
    SOLUTIONS_DIR,
    CheckResult,
    Exercise,
    ExerciseError,
    check,
    get,
    list_exercises,
    load_solution,
)



def _register_method_exercises() -> None:
    """Import ``<method package>.exercises`` of every registered method that has one (they register
    themselves): a method's exercises live next to it, and nothing lists them here."""
    from nbhelpers.methods.base import _REGISTRY, available

    available()
    for cls in _REGISTRY.values():
        package = cls.__module__.rsplit(".", 1)[0]
        if package.startswith("nbhelpers.methods.") and importlib.util.find_spec(f"{package}.exercises") is not None:
            importlib.import_module(f"{package}.exercises")


_register_method_exercises()

__all__ = ["SOLUTIONS_DIR", "CheckResult", "Exercise", "ExerciseError", "check", "get", "list_exercises",
           "load_solution"]
