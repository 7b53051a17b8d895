"""Type and range checks of method settings, run when a config is built (before anything is trained).

Every field of a :class:`~nbhelpers.methods.base.MethodConfig` is checked against its type hint
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[T, ...]``, ``tuple[T, T]``) and every
number, also inside tuples, against a :class:`Range`: the ``RANGES`` entry for the field (a class's
``RANGES`` extend those of its bases), or ``>= 0`` when it has none; NaN and infinity are never valid.
A text option is checked against its ``CHOICES`` entry (the valid values, extended the same way). A bad
value raises one :class:`~nbhelpers.errors.ConfigError` line naming the method, the key, the value and
what is allowed, e.g.::

    thfr: epochs=-1 is out of range: it must be >= 1 (e.g. --set epochs=1).
    fod: scoring='max' is not valid: it must be one of 'rec', 'div', 'rec_div' (e.g. --set scoring="rec_div").
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from nbhelpers.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed numbers ``low <= x <= high``; ``open_low`` makes it ``low < x`` (``None``: no bound)."""

    low: float | None = 0
    high: float | None = None
    open_low: bool = False

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.open_low else x < self.low):
            return False
        return self.high is None or x <= self.high

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = None if self.high is None else f"<= {self.high:g}"
        return " and ".join(p for p in (low, high) if p) or "a finite number"

    def example(self, kind: type) -> float:
        """A value inside the range (quoted in the error's fix)."""
        if self.low is None:
            x = 0.0 if self.high is None else min(0.0, self.high)
        else:
            x = self.low + (1 if self.open_low else 0)
        if self.open_low and kind is float and self.high is not None:
            x = (self.low + self.high) / 2
        return int(x) if kind is int else float(x)


_ANY_NUMBER = Range(low=0)


def method_label(config_class: type) -> str:
    """``"thfr"`` for ``nbhelpers.methods.thfr.config.Config``; the class name for others."""
    parts = config_class.__module__.split(".")
    return parts[2] if parts[:2] == ["nbhelpers", "methods"] and len(parts) > 2 else config_class.__qualname__


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or ``TypeError`` saying what is expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option)
            except TypeError as exc:
                errors.append(str(exc))
        raise TypeError(errors[0] if len(errors) == 1 else f"it must be {_name(hint)}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            raise TypeError("it must be a list such as [1,2]")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(value) != len(args):
            raise TypeError(f"it must be a list of {len(args)} values")
        try:
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        except TypeError as exc:
            raise TypeError(f"each value{str(exc)[2:]}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("it must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("it must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("it must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("it must be a text")
        return value
    return value


def _numbers(value: Any) -> list[int | float]:
    items = value if isinstance(value, tuple) else (value,)
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _hint_kind(hint: Any) -> type:
    args = [a for a in (typing.get_args(hint) or (hint,)) if a not in (type(None), Ellipsis)]
    return int if int in args and float not in args else float


def check_fields(config: Any) -> None:
    """Check and normalise every field of a config dataclass in place (see the module docstring).

    Raises:
        ConfigError: one line naming the method, the key, the value and the allowed type or range.
    """
    cls = type(config)
    hints = typing.get_type_hints(cls)
    label = method_label(cls)
    rules: dict[str, Range] = {}
    choices: dict[str, tuple[str, ...]] = {}
    for klass in reversed(cls.__mro__):  # a subclass's RANGES and CHOICES extend and override its bases'
        rules.update(vars(klass).get("RANGES", {}))
        choices.update(vars(klass).get("CHOICES", {}))
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        try:
            value = _coerce(value, hints[f.name])
        except TypeError as exc:
            raise ConfigError(f"{label}: {f.name}={value!r} is not valid: {exc} (e.g. --set {f.name}="
                              f"{_example_literal(f.default)}).") from None
        if f.name in choices and value not in choices[f.name]:
            raise ConfigError(f"{label}: {f.name}={value!r} is not valid: it must be one of "
                              f"{', '.join(map(repr, choices[f.name]))} (e.g. --set {f.name}={_example_literal(f.default)}).")
        rule = rules.get(f.name, _ANY_NUMBER)
        bad = [v for v in _numbers(value) if not rule.holds(v)]
        if bad:
            default_ok = all(rule.holds(v) for v in _numbers(f.default))
            fix = f.default if default_ok or isinstance(value, tuple) else rule.example(_hint_kind(hints[f.name]))
            raise ConfigError(f"{label}: {f.name}={_literal(value)} is out of range: "
                              f"{'each value ' if isinstance(value, tuple) else 'it '}must be {rule} "
                              f"(e.g. --set {f.name}={_example_literal(fix)}).")
        object.__setattr__(config, f.name, value)


def _literal(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _example_literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_example_literal(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return f'"{value}"' if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
