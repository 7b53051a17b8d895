"""One progress-bar helper for the whole package, with an on/off switch.

Text tqdm (never ``tqdm.auto``): under papermill widget bars would only leave widget state in the
executed notebook. Switch off globally with ``set_progress(False)`` or ``NBHELPERS_PROGRESS=0``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.std import tqdm

T = TypeVar("T")
_ENABLED = os.environ.get("NBHELPERS_PROGRESS", "1") not in ("0", "false", "False", "")


def set_progress(enabled: bool) -> None:
    """Turn every nbhelpers progress bar on or off."""
    global _ENABLED
    _ENABLED = bool(enabled)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, enabled: bool | None = None,
             leave: bool = False, **kwargs) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a text progress bar (on stderr) unless progress is switched off.

    Args:
        enabled: ``False`` hides this bar; ``None``/``True`` show it unless the global switch
            (:func:`set_progress`, ``NBHELPERS_PROGRESS=0``) is off, which silences every bar.
    """
    on = _ENABLED and enabled is not False
    return tqdm(iterable, desc=desc, total=total, disable=not on, leave=leave, file=sys.stderr,
                dynamic_ncols=False, ncols=100, mininterval=1.0, **kwargs)
