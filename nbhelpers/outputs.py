"""Output paths checked before any work starts, and files written atomically.

A command that would fail to write its result (a read-only folder, a folder where a file is
expected) or would replace a file that is not its own (a dataset image given as ``--out``) stops
with one :class:`~nbhelpers.errors.OutputError` line before it computes anything.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from nbhelpers.errors import OutputError


def _writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) and prove a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nbhelpers-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError as exc:
        raise OutputError(f"{what} {folder}: a file of that name is in the way of the folder; "
                          "choose another path.") from exc
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write there ({exc.strerror or exc}); choose a writable "
                          "folder.") from exc


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` as an output folder: created if missing, refused when it is a file or not writable.

    Raises:
        OutputError: one line naming ``what`` (e.g. the command-line option) and the path.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: is an existing file, but a folder is needed; choose a folder.")
    _writable_folder(path, what)
    return path


def check_output_file(path: str | Path, what: str = "--out", ours: Callable[[Path], bool] | None = None,
                      overwrite: bool = False, kind: str = "file", example: str = "model.pt") -> Path:
    """``path`` as an output file: its folder must be writable; an existing file is replaced only
    when ``ours(path)`` says this tool wrote it *and* ``overwrite`` is set.

    Args:
        what: how the user named the path (``"--out"``), quoted in the message.
        ours: recognises files of the kind this command writes (e.g. an nbhelpers checkpoint).
        kind: what is written (``"checkpoint"``), for the message; example: a file name for it.

    Raises:
        OutputError: a folder is in the way, the folder is not writable, the file exists and is not
            ours, or it is ours and ``overwrite`` is not set.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give the {kind} file to write, e.g. {path / example}.")
    if path.exists():
        if ours is None or not ours(path):
            raise OutputError(f"{what} {path}: exists and is not a {kind} written by nbhelpers; it is left "
                              "untouched. Choose another path.")
        if not overwrite:
            raise OutputError(f"{what} {path}: a {kind} is already there; pass --overwrite to replace it, "
                              "or choose another path.")
    _writable_folder(path.parent, what)
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A file handle whose content replaces ``path`` only when the block completes: it is written to a
    temporary file in the same folder, then ``os.replace``d, so an interruption never leaves a
    half-written file (the temporary file is removed). ``mode``: ``"w"`` (UTF-8 text) or ``"wb"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)
