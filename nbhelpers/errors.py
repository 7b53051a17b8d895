"""Errors that the package raises on bad input: one clear message naming the file and the fix."""
from __future__ import annotations


class NbhelpersError(Exception):
    """Base class of every error raised on purpose by nbhelpers."""


class DatasetError(NbhelpersError, ValueError):
    """A dataset folder, image or mask is missing or malformed.

    The message names the offending path and says what was expected.
    """


class ConfigError(NbhelpersError, ValueError):
    """A method, backbone, preset or parameter name/value is not valid; the message lists valid ones."""


class WeightsError(NbhelpersError, RuntimeError):
    """Pre-trained weights cannot be had (offline, missing file, shape mismatch)."""


class NotebookError(NbhelpersError, RuntimeError):
    """A notebook executed by nbhelpers failed; the message names the cell and the executed copy."""


class OutputError(NbhelpersError, ValueError):
    """An output path cannot be written, or holds a file that must not be replaced; checked before any work."""


class DeviceMemoryError(NbhelpersError, RuntimeError):
    """The device ran out of memory; the message gives the batch size and what to lower."""


class DatasetWarning(UserWarning):
    """Data that is used, but not as given (e.g. images of mixed sizes, resized to one size)."""
