"""Checks of user-given values, with errors that name the value (one rule, one message).

Wrong types raise TypeError, wrong values ValueError; both name the argument and show what it
got, e.g. ``"tile_batch must be an integer >= 1, got 0"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

__all__ = ["is_finite", "number", "positive_int", "positive_triple"]


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (not a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def number(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float ``>= 0`` (``> 0`` when ``positive``)."""
    rule = "> 0" if positive else ">= 0"
    if not is_finite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
    return float(value)


def positive_triple(name: str, value: Any, kind: type = int, *, cube: bool = False) -> tuple:
    """Three positive values of ``kind`` (``int``, or ``float`` for millimetres); with ``cube``
    one value stands for three equal ones."""
    rule = "3 positive integers" if kind is int else "3 positive finite numbers"
    if cube:
        rule = f"a positive {'integer' if kind is int else 'number'} or {rule}"
        if isinstance(value, Real) and not isinstance(value, bool):
            value = (value,) * 3
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    for v in value:
        ok = isinstance(v, Integral if kind is int else Real) and not isinstance(v, bool)
        if not (ok and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be {rule}, got {value!r}")
    return tuple(kind(v) for v in value)
