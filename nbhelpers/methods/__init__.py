"""Anomaly-detection methods behind one contract (see :mod:`nbhelpers.methods.base`).

Importing this package registers every method module; ``get(name)`` / ``create(name, preset)``
look them up.
"""
from nbhelpers.methods import baseline  # noqa: F401  (registers "baseline")
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, MethodConfig, available, create, get, get_config

__all__ = ["AnomalyMethod", "AnomalyResult", "MethodConfig", "available", "create", "get", "get_config"]
