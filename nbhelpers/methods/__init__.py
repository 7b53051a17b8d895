"""Anomaly-detection methods behind one contract (see :mod:`nbhelpers.methods.base`).

Every module of this package that defines a method registers it with ``@register``; ``available()``
imports them all, so adding a method is adding a module. ``get(name)`` / ``create(name, preset)``
look them up.
"""
from nbhelpers.methods.base import (AnomalyMethod, AnomalyResult, MethodConfig, available, create, get, get_config,
                                    load_method)

__all__ = ["AnomalyMethod", "AnomalyResult", "MethodConfig", "available", "create", "get", "get_config", "load_method"]
