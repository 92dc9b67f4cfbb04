"""Argument checks shared by the samplers: a bad value fails at construction, named."""

from __future__ import annotations

import math


def finite_number(name: str, value: object, minimum: float | None = None, maximum: float | None = None) -> float:
    # bool is an int subclass, but True as a sampler value is a caller's mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"`{name}` must be between {minimum:g} and {maximum:g}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum:g}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum:g}, got {value}")
    return float(value)


def unit_interval(name: str, value: object) -> float:
    return finite_number(name, value, 0.0, 1.0)
