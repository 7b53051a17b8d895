"""Compare a student's result with the package's, and their gradients; explain the first difference.

Every function returns ``None`` when the two agree and otherwise one sentence that names what
differs (type, shape, dtype, value with the largest difference and where, or gradient).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def describe(value: Any) -> str:
    """Short type-and-shape description: ``float32[4, 8]``, ``ndarray float64[3, 16, 16]``, ``float``."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')}[{', '.join(map(str, value.shape))}]"
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype}[{', '.join(map(str, value.shape))}]"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}: (" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


def _kind(dtype: Any) -> str:
    """``"float"``, ``"integer"`` or ``"bool"`` of a torch or NumPy dtype."""
    if dtype == torch.bool or dtype == np.bool_:
        return "bool"
    if isinstance(dtype, torch.dtype):
        return "float" if dtype.is_floating_point else "integer"
    return "float" if np.issubdtype(dtype, np.floating) else "integer"


def _array_mismatch(expected: np.ndarray, actual: np.ndarray, where: str, atol: float, rtol: float) -> str | None:
    """Value comparison of two arrays of equal shape: the number of differing entries, the largest
    difference and its index."""
    exact = _kind(expected.dtype) != "float"
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    if exact:
        bad = e != a
    else:
        with np.errstate(invalid="ignore"):
            bad = ~np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=True)
    if not bad.any():
        return None
    diff = np.where(bad, np.abs(np.nan_to_num(a - e, nan=np.inf)), -1.0)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    at = f" at index {tuple(int(i) for i in idx)}" if idx else ""
    return (f"wrong values: {where} differs in {int(bad.sum())} of {bad.size} entries; the largest difference is "
            f"{float(diff[idx]):.4g}{at} (yours {a[idx]:.6g}, expected {e[idx]:.6g}).")


def compare_values(expected: Any, actual: Any, where: str = "the result", atol: float = 1e-5,
                   rtol: float = 1e-4) -> str | None:
    """First difference between ``actual`` (the student's) and ``expected`` (the package's), or ``None``.

    Tuples/lists are compared element by element, tensors and arrays by type, shape, dtype kind
    (float / integer / bool) and values (``|a - e| <= atol + rtol |e|``, exact for integers), plain
    numbers by value.
    """
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            return (f"wrong type: {where} should be a tuple of {len(expected)} ({describe(expected)}), "
                    f"got {describe(actual)}.")
        if len(actual) != len(expected):
            return f"wrong length: {where} should have {len(expected)} elements, got {len(actual)}."
        for i, (e, a) in enumerate(zip(expected, actual)):
            problem = compare_values(e, a, f"{where}[{i}]", atol, rtol)
            if problem:
                return problem
        return None
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return (f"wrong type: {where} should be a torch.Tensor ({describe(expected)}), got {describe(actual)}; "
                    "stay in torch so that gradients flow and the code runs on the GPU.")
        expected_np, actual_np = expected.detach().cpu().numpy(), actual.detach().cpu().numpy()
    elif isinstance(expected, np.ndarray):
        if not isinstance(actual, np.ndarray):
            return f"wrong type: {where} should be a numpy.ndarray ({describe(expected)}), got {describe(actual)}."
        expected_np, actual_np = expected, actual
    elif isinstance(expected, numbers.Real):
        if isinstance(actual, bool) or not isinstance(actual, (numbers.Real, np.ndarray, torch.Tensor)) or (
                isinstance(actual, (np.ndarray, torch.Tensor)) and actual.ndim != 0):
            return f"wrong type: {where} should be a number ({type(expected).__name__}), got {describe(actual)}."
        expected_np = np.asarray(float(expected))
        actual_np = np.asarray(float(actual.item() if isinstance(actual, (np.ndarray, torch.Tensor)) else actual))
    else:
        return None if actual == expected else f"wrong value: {where} is {actual!r}, expected {expected!r}."
    if tuple(actual_np.shape) != tuple(expected_np.shape):
        return f"wrong shape: {where} has shape {tuple(actual_np.shape)}, expected {tuple(expected_np.shape)}."
    if _kind(actual_np.dtype) != _kind(expected_np.dtype):
        return (f"wrong dtype: {where} is {_kind(actual_np.dtype)} ({actual_np.dtype}), expected "
                f"{_kind(expected_np.dtype)} ({expected_np.dtype}).")
    return _array_mismatch(expected_np, actual_np, where, atol, rtol)


def float_tensors(value: Any) -> list[torch.Tensor]:
    """The floating-point tensors in a (nested) result, in order."""
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in float_tensors(v)]
    return [value] if isinstance(value, torch.Tensor) and value.is_floating_point() else []


def projection(outputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i <outputs_i, weights_i>``: a scalar whose gradient is the vector-Jacobian product with
    random ``weights`` (checks every output entry at once)."""
    return sum((o.float() * w).sum() for o, w in zip(outputs, weights))


def compare_gradients(expected: Sequence[torch.Tensor | None], actual: Sequence[torch.Tensor | None],
                      names: Sequence[str], atol: float = 1e-4, rtol: float = 1e-3) -> str | None:
    """First difference between the student's and the package's input gradients (``None``: unused input)."""
    for name, e, a in zip(names, expected, actual):
        e = torch.zeros(()) if e is None else e
        if a is None:
            if torch.count_nonzero(e):
                return (f"wrong gradient: your result does not depend on `{name}` through differentiable torch "
                        "operations (an index, a comparison or a .detach() cuts it off).")
            continue
        problem = compare_values(e.expand_as(a) if e.ndim == 0 else e, a, f"the gradient w.r.t. `{name}`", atol, rtol)
        if problem:
            return problem.replace("wrong values:", "wrong gradient:", 1)
    return None


__all__ = ["compare_gradients", "compare_values", "describe", "float_tensors", "projection"]
