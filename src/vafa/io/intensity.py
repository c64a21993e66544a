"""Intensity mappings between a scanner's units (e.g. CT Hounsfield units) and a model's [0, 1].

A model card names the mapping its model was trained with; this module turns that description
into :meth:`IntensityMapping.forward` (file units → model input in [0, 1]) and
:meth:`IntensityMapping.inverse` (attacked model input → file units, for export).

Three mappings exist:

- ``"ct_window"`` (:class:`CTWindow`): linear map ``a_min → 0``, ``a_max → 1``, clipped to
  [0, 1]. The Synapse/BTCV setting of the paper is ``CTWindow(-175, 250)``.
- ``"percentile"`` (:class:`PercentileScaling`): the same, with ``a_min``/``a_max`` taken as two
  percentiles of each volume (for MRI, whose units are arbitrary).
- ``"zscore"`` (:class:`ZScoreWindow`): the same, with ``a_min``/``a_max`` at ``k`` standard
  deviations below/above each volume's mean. For a model that was trained on z-scores, the
  [0, 1] value ``x`` is the z-score ``(2x - 1)·k`` — a fixed affine map that the model's first
  layer applies (:mod:`vafa.io.wrapped`), so attacks keep working on [0, 1] images.

Serialised form (model card JSON)::

    {"type": "ct_window", "a_min": -175, "a_max": 250}
    {"type": "percentile", "p_low": 0.5, "p_high": 99.5}
    {"type": "zscore", "k": 5.0, "nonzero": false}

Example:
    >>> import numpy as np

from vafa.ops.messages import did_you_mean
    >>> window = CTWindow(-175, 250)
    >>> hu = np.array([-1000.0, -175.0, 37.5, 250.0, 900.0])
    >>> window.forward(hu).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> window.inverse(window.forward(hu), hu).tolist()  # saturated voxels keep their HU
    [-1000.0, -175.0, 37.5, 250.0, 900.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np

from vafa.ops.messages import did_you_mean

__all__ = [
    "ZSCORE_K",
    "CTWindow",
    "ChannelWindows",
    "IntensityMapping",
    "PercentileScaling",
    "ZScoreWindow",
    "fit_windows",
    "mapping_from_dict",
]


class IntensityMapping:
    """Base of the intensity mappings: file units ↔ model input in [0, 1].

    Subclasses are small frozen dataclasses with a ``type`` name used in JSON.
    """

    type: ClassVar[str] = ""

    def fit(self, array: np.ndarray) -> CTWindow:
        """The concrete linear window this mapping uses for ``array``.

        Args:
            array: volume in file units, any shape.

        Returns:
            A :class:`CTWindow`.
        """
        raise NotImplementedError

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Map file units to the model's input range.

        Args:
            array: volume in file units (e.g. HU), any shape, finite values.

        Returns:
            float32 array of the same shape with values in [0, 1].

        Raises:
            TypeError: ``array`` is not a numeric numpy array.
        """
        _check_array("array", array)
        return self.fit(array).forward(array)

    def inverse(self, mapped: np.ndarray, original: np.ndarray) -> np.ndarray:
        """Map model-range values (e.g. an adversarial volume) back to file units.

        See :meth:`CTWindow.inverse` for the exact rule.

        Args:
            mapped: values in model range (normally [0, 1]), same shape as ``original``.
            original: the volume in file units that ``mapped`` was derived from.

        Returns:
            float32 array in file units, the shape of ``original``.
        """
        _check_array("original", original)
        return self.fit(original).inverse(mapped, original)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"type": ..., <fields>}``; the inverse of :func:`mapping_from_dict`."""
        raise NotImplementedError


@dataclass(frozen=True)
class CTWindow(IntensityMapping):
    """Linear window: ``a_min → 0`` and ``a_max → 1``, clipped to [0, 1].

    Args:
        a_min: value (file units, e.g. HU) mapped to 0; finite.
        a_max: value mapped to 1; finite and greater than ``a_min``.
        zero_to: if set, voxels whose file value is exactly 0 map to this value in [0, 1]
            instead (the "outside the mask" voxels of a z-score over nonzero voxels, which
            MONAI's ``NormalizeIntensity(nonzero=True)`` and nnU-Net leave at z = 0).

    Raises:
        TypeError: a bound is not a real number.
        ValueError: a bound is not finite, ``a_min >= a_max``, or ``zero_to`` not in [0, 1].
    """

    a_min: float
    a_max: float
    zero_to: float | None = None
    type: ClassVar[str] = "ct_window"

    def __post_init__(self) -> None:
        if self.zero_to is not None:
            if isinstance(self.zero_to, bool) or not isinstance(self.zero_to, Real):
                raise TypeError(f"zero_to must be a number in [0, 1] or None, got {self.zero_to!r}")
            if not 0.0 <= self.zero_to <= 1.0:
                raise ValueError(f"zero_to must be in [0, 1], got {self.zero_to!r}")
            object.__setattr__(self, "zero_to", float(self.zero_to))
        for name in ("a_min", "a_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"{name} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.a_min < self.a_max:
            raise ValueError(
                f"a_min must be < a_max, got a_min={self.a_min!r}, a_max={self.a_max!r}"
            )

    def fit(self, array: np.ndarray) -> CTWindow:
        """A window is already concrete: returns ``self``."""
        return self

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``clip((array - a_min) / (a_max - a_min), 0, 1)`` as float32, same shape (and
        ``zero_to`` where ``array == 0``, when set)."""
        _check_array("array", array)
        out = np.asarray(array, dtype=np.float32) - np.float32(self.a_min)
        out /= np.float32(self.a_max - self.a_min)
        np.clip(out, 0.0, 1.0, out=out)
        if self.zero_to is not None:
            out[array == 0] = self.zero_to
        return out

    def inverse(self, mapped: np.ndarray, original: np.ndarray) -> np.ndarray:
        """Map model-range values back to file units, keeping untouched saturated voxels.

        Every voxel becomes ``a_min + mapped * (a_max - a_min)``, except voxels whose
        ``original`` value lies below the window and whose ``mapped`` value is still exactly 0,
        or lies above it and whose ``mapped`` value is still exactly 1: those were clipped by
        :meth:`forward` and not moved since, so they keep their ``original`` value. Hence
        ``forward(inverse(m, x)) == m`` (to float32 precision) for any ``m`` in [0, 1], and
        ``inverse(forward(x), x) == x`` for the voxels the window saturates.

        Args:
            mapped: model-range values, normally in [0, 1] (values outside are mapped linearly,
                not clipped), same shape as ``original``.
            original: the file-unit volume ``mapped`` was derived from.

        Returns:
            float32 array in file units, same shape.

        Raises:
            TypeError: an argument is not a numeric numpy array.
            ValueError: the shapes differ.
        """
        _check_array("mapped", mapped)
        _check_array("original", original)
        if mapped.shape != original.shape:
            raise ValueError(
                f"mapped and original must have the same shape, got {mapped.shape} and "
                f"{original.shape}"
            )
        mapped32 = np.asarray(mapped, dtype=np.float32)
        out = mapped32 * np.float32(self.a_max - self.a_min)
        out += np.float32(self.a_min)
        keep = (original < self.a_min) & (mapped32 == 0.0)
        keep |= (original > self.a_max) & (mapped32 == 1.0)
        if self.zero_to is not None:
            keep |= (original == 0) & (mapped32 == np.float32(self.zero_to))
        out[keep] = original[keep]
        return out

    @property
    def widths(self) -> np.ndarray:
        """float64 ``[1]``: ``a_max − a_min`` (file units per [0, 1] unit), as
        :attr:`ChannelWindows.widths` gives one per channel."""
        return np.array([self.a_max - self.a_min])

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "ct_window", "a_min": ..., "a_max": ...}`` (and ``zero_to`` when set)."""
        out: dict[str, Any] = {"type": self.type, "a_min": self.a_min, "a_max": self.a_max}
        if self.zero_to is not None:
            out["zero_to"] = self.zero_to
        return out


@dataclass(frozen=True)
class PercentileScaling(IntensityMapping):
    """Window between two percentiles of each volume, then linear and clipped like a window.

    Args:
        p_low: lower percentile in [0, 100), mapped to 0. Default 0.5.
        p_high: upper percentile in (p_low, 100], mapped to 1. Default 99.5.

    Raises:
        TypeError: a percentile is not a real number.
        ValueError: not ``0 <= p_low < p_high <= 100``.
    """

    p_low: float = 0.5
    p_high: float = 99.5
    type: ClassVar[str] = "percentile"

    def __post_init__(self) -> None:
        for name in ("p_low", "p_high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"{name} must be a real number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= p_low < p_high <= 100, got "
                f"p_low={self.p_low!r}, p_high={self.p_high!r}"
            )

    def fit(self, array: np.ndarray) -> CTWindow:
        """The window ``CTWindow(percentile(array, p_low), percentile(array, p_high))``.

        Args:
            array: volume in file units, any shape, finite values.

        Raises:
            ValueError: ``array`` is empty, or both percentiles are equal (a constant volume).
        """
        _check_array("array", array)
        if array.size == 0:
            raise ValueError(f"array must not be empty, got shape {array.shape}")
        low, high = np.percentile(array, [self.p_low, self.p_high])
        if not low < high:
            raise ValueError(
                f"percentile scaling needs the {self.p_low}th and {self.p_high}th percentiles "
                f"to differ, got both {float(low)!r} (constant volume?)"
            )
        return CTWindow(float(low), float(high))

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "percentile", "p_low": ..., "p_high": ...}``."""
        return {"type": self.type, "p_low": self.p_low, "p_high": self.p_high}


#: Default half-width (standard deviations) of a z-score window: the [0, 1] window of the
#: z-score models read from MONAI bundles and nnU-Net folders.
ZSCORE_K = 5.0


@dataclass(frozen=True)
class ZScoreWindow(IntensityMapping):
    """Window of ``k`` standard deviations either side of each volume's mean, linear, clipped.

    For models trained on z-scores (MONAI ``NormalizeIntensity``, nnU-Net's z-score): the
    [0, 1] value ``x`` of a voxel is the z-score ``z = (2x - 1)·k`` (``x = 0.5`` is the mean),
    for every volume, so the model's first layer maps ``x`` to ``z`` with fixed constants.
    Voxels beyond ``±k`` standard deviations are clipped (the z-score itself never clips).

    Args:
        k: half-width of the window in standard deviations, > 0. Default 5: a Gaussian volume
            loses one voxel in 1.7 million to clipping, and ``eps = 4/255`` (in [0, 1] units) is
            0.16 standard deviations.
        nonzero: mean and standard deviation over the nonzero voxels only, and voxels equal to
            0 stay at z = 0 (``x = 0.5``), as MONAI's ``NormalizeIntensity(nonzero=True)``
            and nnU-Net's ``use_mask_for_norm`` do.

    Raises:
        TypeError: ``k`` is not a real number or ``nonzero`` not a bool.
        ValueError: ``k`` is not finite and positive.
    """

    k: float = ZSCORE_K
    nonzero: bool = False
    type: ClassVar[str] = "zscore"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, Real):
            raise TypeError(f"k must be a real number, got {self.k!r}")
        if not (math.isfinite(self.k) and self.k > 0):
            raise ValueError(f"k must be finite and > 0, got {self.k!r}")
        if not isinstance(self.nonzero, bool):
            raise TypeError(f"nonzero must be true or false, got {self.nonzero!r}")
        object.__setattr__(self, "k", float(self.k))

    def fit(self, array: np.ndarray) -> CTWindow:
        """``CTWindow(mean - k·std, mean + k·std)`` of ``array`` (its nonzero voxels if asked).

        Raises:
            ValueError: no voxel to measure, or a constant volume (standard deviation 0).
        """
        _check_array("array", array)
        values = array[array != 0] if self.nonzero else array
        if values.size == 0:
            raise ValueError(f"z-score needs nonzero voxels, got none in shape {array.shape}")
        mean = float(np.mean(values, dtype=np.float64))
        std = float(np.std(values, dtype=np.float64))
        if not std > 0:
            raise ValueError(f"z-score needs a non-constant volume, got every voxel {mean!r}")
        zero_to = 0.5 if self.nonzero else None
        return CTWindow(mean - self.k * std, mean + self.k * std, zero_to=zero_to)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "zscore", "k": ..., "nonzero": ...}``."""
        return {"type": self.type, "k": self.k, "nonzero": self.nonzero}


def mapping_from_dict(d: Mapping[str, Any]) -> IntensityMapping:
    """Build a mapping from its JSON description (see the module docstring).

    Args:
        d: mapping with a ``"type"`` key (``"ct_window"``, ``"percentile"`` or ``"zscore"``)
            and the fields of that type. ``ct_window`` needs ``a_min`` and ``a_max`` (``zero_to``
            is optional); the fields of ``percentile`` (defaults 0.5 and 99.5) and ``zscore``
            (defaults ``k=5``, ``nonzero=False``) are optional.

    Returns:
        A :class:`CTWindow`, :class:`PercentileScaling` or :class:`ZScoreWindow`.

    Raises:
        TypeError: ``d`` is not a mapping, or a field has the wrong type.
        ValueError: unknown type, unknown or missing field (with a "did you mean" hint when a
            known name is close), or an invalid value.
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"intensity mapping must be a dict, got {type(d).__name__}")
    if "type" not in d:
        raise ValueError(f"intensity mapping must have a 'type' field, got fields {sorted(d)}")
    kind = d["type"]
    if kind not in _MAPPINGS:
        raise ValueError(
            f"type must be one of {sorted(_MAPPINGS)}, got {kind!r}{did_you_mean(kind, _MAPPINGS, 0.6)}"
        )
    cls = _MAPPINGS[kind]
    fields = _FIELDS[kind]
    kwargs = {}
    for key, value in d.items():
        if key == "type":
            continue
        if key not in fields:
            raise ValueError(
                f"field {key!r} is not allowed for type {kind!r} (allowed: {list(fields)})"
                f"{did_you_mean(key, fields, 0.6)}"
            )
        kwargs[key] = value
    for key, required in fields.items():
        if required and key not in kwargs:
            raise ValueError(f"field {key!r} is required for type {kind!r}, got fields {sorted(d)}")
    return cls(**kwargs)


@dataclass(frozen=True)
class ChannelWindows:
    """One fitted :class:`CTWindow` per channel of a ``[C, …]`` array (channel-first).

    ``forward``/``inverse`` apply each channel's window to its own slice, so every channel
    keeps the exact-inverse guarantees of :meth:`CTWindow.inverse`.
    """

    windows: tuple[CTWindow, ...]

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``[C, …]`` file units → float32 ``[C, …]`` in [0, 1]."""
        self._check(array, "array")
        return np.stack([w.forward(a) for w, a in zip(self.windows, array, strict=True)])

    def inverse(self, mapped: np.ndarray, original: np.ndarray) -> np.ndarray:
        """``[C, …]`` model range → file units, per channel as :meth:`CTWindow.inverse`."""
        self._check(original, "original")
        return np.stack(
            [w.inverse(m, o) for w, m, o in zip(self.windows, mapped, original, strict=True)]
        )

    @property
    def widths(self) -> np.ndarray:
        """float64 ``[C]``: each window's ``a_max − a_min`` (file units per [0, 1] unit)."""
        return np.array([w.a_max - w.a_min for w in self.windows])

    def to_dict(self) -> list[dict[str, Any]]:
        """One window dict per channel."""
        return [w.to_dict() for w in self.windows]

    def _check(self, array: np.ndarray, name: str) -> None:
        _check_array(name, array)
        if array.shape[0] != len(self.windows):
            raise ValueError(
                f"{name} must have {len(self.windows)} channels first, got shape {array.shape}"
            )


def fit_windows(
    intensity: Mapping[str, Any] | list[Mapping[str, Any]],
    array: np.ndarray | Sequence[np.ndarray],
    channels: bool,
) -> CTWindow | ChannelWindows:
    """The concrete window(s) of a card's ``intensity`` for ``array``.

    Args:
        intensity: one mapping dict (fitted on each channel separately) or one per channel.
        array: ``[I, J, K]`` (``channels`` False), or ``[C, I, J, K]`` or a sequence of ``C``
            ``[I, J, K]`` arrays (no stacked copy needed) in file units.
        channels: whether ``array`` has a leading channel axis (or is a sequence).

    Returns:
        A :class:`CTWindow` for a one-channel array, else :class:`ChannelWindows`.
    """
    if not channels:
        if not isinstance(intensity, Mapping):
            intensity = intensity[0]
        return mapping_from_dict(intensity).fit(array)
    dicts = [intensity] * len(array) if isinstance(intensity, Mapping) else list(intensity)
    if len(dicts) != len(array):
        raise ValueError(f"{len(dicts)} intensity mappings for {len(array)} channels")
    return ChannelWindows(
        tuple(mapping_from_dict(d).fit(a) for d, a in zip(dicts, array, strict=True))
    )


# name → class, and per type: field name → required
_MAPPINGS: dict[str, type[IntensityMapping]] = {
    "ct_window": CTWindow,
    "percentile": PercentileScaling,
    "zscore": ZScoreWindow,
}
_FIELDS: dict[str, dict[str, bool]] = {
    "ct_window": {"a_min": True, "a_max": True, "zero_to": False},
    "percentile": {"p_low": False, "p_high": False},
    "zscore": {"k": False, "nonzero": False},
}


def _check_array(name: str, value: object) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(value).__name__}")
    if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
        raise TypeError(f"{name} must have an integer or float dtype, got {value.dtype}")
