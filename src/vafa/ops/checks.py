"""Checks of user-given values, with errors that name the value (one rule, one message).

Wrong types raise TypeError, wrong values ValueError; both name the argument and show what it
got, e.g. ``"tile_batch must be an integer >= 1, got 0"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

__all__ = ["is_finite", "number", "numbers_per_channel", "positive_int", "positive_triple"]


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


def numbers_per_channel(
    name: str, value: Any, channels: int | None = None
) -> float | tuple[float, ...]:
    """One finite number as a float, or a non-empty list of them (one per channel) as a
    tuple; with ``channels``, a list must hold that many (a number stands for every channel)."""
    values = list(value) if isinstance(value, (list, tuple)) else None
    if values == [] or not all(is_finite(v) for v in ([value] if values is None else values)):
        raise ValueError(f"{name} must be a finite number or one per channel, got {value!r}")
    if values is None:
        return float(value)
    if channels is not None and len(values) != channels:
        raise ValueError(
            f"{name} must be one number or one per input channel (in_channels={channels}), got "
            f"{len(values)} values: {values}"
        )
    return tuple(float(v) for v in values)


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
