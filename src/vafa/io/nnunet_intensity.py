"""The input channels of an nnU-Net v2 result folder and how nnU-Net normalises each.

nnU-Net reads a case as one file per channel (``case_0000.nii.gz``, ``case_0001.nii.gz`` …, in
the order of ``dataset.json``'s ``channel_names`` keys ``"0"``, ``"1"``, …; ``modality`` in
datasets converted from nnU-Net v1) and normalises channel ``c`` by the configuration's
``normalization_schemes[c]`` with the dataset's ``foreground_intensity_properties_per_channel
[str(c)]``. :func:`channel_names` reads the channels; :func:`first_layer` gives, per channel, the
card's [0, 1] window and the affine first layer ``x·scale + shift`` that maps it back to
nnU-Net's normalised units (:class:`vafa.io.wrapped.NormalizedInput`):

=============================  ======================================  ===================================
nnU-Net scheme                 [0, 1] window (card)                    first layer
=============================  ======================================  ===================================
``CTNormalization``            ``ct_window(percentile_00_5, _99_5)``   ``(lo + x·(hi − lo) − mean) / std``
``ZScoreNormalization``        ``zscore(k=5, nonzero=use_mask)``       ``(2x − 1)·5``
``RescaleTo01Normalization``   ``percentile(0, 100)``                  ``x``
``RGBTo01Normalization``       ``ct_window(0, 255)``                   ``x``
``NoNormalization``            ``ct_window(min, max)`` (foreground)    ``min + x·(max − min)``
=============================  ======================================  ===================================

``CTNormalization`` (clip to the dataset's foreground percentiles, then z-score with the
dataset's foreground mean and std) is reproduced exactly. A one-channel model gets one window
and two numbers (as always); a multi-channel model a list of windows and one scale and shift per
channel. Another scheme is refused in one line naming the channel and the scheme.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vafa.io.intensity import ZSCORE_K

__all__ = ["SCHEMES", "FirstLayer", "channel_names", "first_layer"]

#: The normalisation schemes vafa reproduces.
SCHEMES = (
    "CTNormalization",
    "ZScoreNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
    "NoNormalization",
)
_EPS = 1e-8  # nnU-Net's guard against a zero standard deviation


@dataclass
class FirstLayer:
    """The card's intensity and the first layer of an nnU-Net model (see the module docs).

    Attributes:
        intensity: one window dict (one channel) or one per channel (the card's ``intensity``).
        scale, shift: ``x·scale + shift`` maps [0, 1] to nnU-Net's units: numbers for one
            channel, lists of one number per channel otherwise.
        layer: what the layer computes, in words (``card.provenance["input_layer"]``).
        notes: where vafa's normalisation may differ from nnU-Net's (for the provenance).
    """

    intensity: dict[str, Any] | list[dict[str, Any]]
    scale: float | list[float]
    shift: float | list[float]
    layer: str
    notes: list[str] = field(default_factory=list)

    @property
    def padding(self) -> list[float]:
        """Per channel, the [0, 1] value the network sees as nnU-Net's 0 (its padding)."""
        scales = self.scale if isinstance(self.scale, list) else [self.scale]
        shifts = self.shift if isinstance(self.shift, list) else [self.shift]
        return [-b / a for a, b in zip(scales, shifts, strict=True)]


def channel_names(dataset: Any, dataset_path: Path) -> list[str]:
    """The input channels of ``dataset.json`` in nnU-Net's order (keys ``"0"``, ``"1"``, …).

    Raises:
        ValueError: no ``channel_names`` (nor ``modality``), keys other than ``0 … n−1``,
            names that are not text or one name twice (one line naming the file).
    """
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, Mapping) or not channels:
        raise ValueError(f"{dataset_path}: 'channel_names' must map channel numbers to names, "
                         f"got {channels!r}")  # fmt: skip
    if {str(k) for k in channels} != {str(i) for i in range(len(channels))}:
        raise ValueError(f"{dataset_path}: 'channel_names' must be numbered 0, 1, … without "
                         f"gaps, got {', '.join(map(str, channels))}")  # fmt: skip
    by_key = {str(k): v for k, v in channels.items()}
    names = [by_key[str(i)] for i in range(len(by_key))]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"{dataset_path}: channel names must be text, got {names!r}")
    names = [n.strip() for n in names]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"{dataset_path}: 'channel_names' names channels "
                             f"{names.index(name)} and {i} alike: {name!r}")  # fmt: skip
    return names


def first_layer(
    plans: Mapping[str, Any], config: Mapping[str, Any], names: list[str], plans_path: Path
) -> FirstLayer:
    """Card intensity and first layer of a configuration whose channels are ``names``.

    Args:
        plans: ``plans.json`` (its ``foreground_intensity_properties_per_channel``).
        config: the configuration (``normalization_schemes``, ``use_mask_for_norm``).
        names: the channels of ``dataset.json`` (:func:`channel_names`).
        plans_path: named in errors.

    Raises:
        ValueError: schemes missing or not one per channel, a scheme vafa does not reproduce,
            or foreground properties a scheme needs missing (naming channel and scheme).
    """
    schemes, masks = config.get("normalization_schemes"), config.get("use_mask_for_norm")
    if not isinstance(schemes, list) or not schemes:
        raise ValueError(f"{plans_path}: the configuration has no normalization_schemes")
    if len(schemes) != len(names):
        raise ValueError(f"{plans_path}: the configuration normalises {len(schemes)} channel(s) "
                         f"({', '.join(map(str, schemes))}) but dataset.json lists {len(names)} "
                         f"({', '.join(names)})")  # fmt: skip
    masks = list(masks) if isinstance(masks, list) else []
    props = plans.get("foreground_intensity_properties_per_channel",
                      plans.get("foreground_intensity_properties_by_modality", {}))  # fmt: skip
    props = props if isinstance(props, Mapping) else {}
    parts = []
    for c, (scheme, name) in enumerate(zip(schemes, names, strict=True)):
        channel = f"channel {c}" if len(names) == 1 else f"channel {c} ({name})"
        use_mask = bool(masks[c]) if c < len(masks) else False
        found = props.get(str(c), {})
        parts.append(_channel(scheme, use_mask, found if isinstance(found, Mapping) else {},
                              channel, plans_path))  # fmt: skip
    if len(parts) == 1:
        window, scale, shift, layer = parts[0]
        return FirstLayer(window, scale, shift, layer)
    layer = "; ".join(f"{name}: {p[3]}" for name, p in zip(names, parts, strict=True))
    notes = []
    if any(p[0]["type"] == "zscore" and p[0]["nonzero"] for p in parts):
        notes.append("use_mask_for_norm: nnU-Net measures a z-score where any channel is "
                     "nonzero (holes filled), vafa where that channel is nonzero")  # fmt: skip
    return FirstLayer([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts],
                      layer, notes)  # fmt: skip


def _channel(
    scheme: Any, use_mask: bool, props: Mapping[str, Any], channel: str, plans_path: Path
) -> tuple[dict[str, Any], float, float, str]:
    """``(window, scale, shift, layer)`` of one channel normalised by ``scheme``."""

    def prop(key: str) -> float:
        value = props.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{plans_path}: {scheme} needs foreground_intensity_properties "
                             f"'{key}' of {channel}, got {value!r}")  # fmt: skip
        return float(value)

    if scheme == "CTNormalization":
        lo, hi, mean = prop("percentile_00_5"), prop("percentile_99_5"), prop("mean")
        std = max(prop("std"), _EPS)
        if not lo < hi:
            raise ValueError(f"{plans_path}: CT percentiles of {channel} must differ, got {lo} "
                             f"and {hi}")  # fmt: skip
        layer = f"(({lo:g} + x·{hi - lo:g}) − {mean:g}) / {std:g}: clip, then z-score"
        window = {"type": "ct_window", "a_min": lo, "a_max": hi}
        return window, (hi - lo) / std, (lo - mean) / std, layer
    if scheme == "ZScoreNormalization":
        window = {"type": "zscore", "k": ZSCORE_K, "nonzero": use_mask}
        return window, 2 * ZSCORE_K, -ZSCORE_K, f"(2x − 1)·{ZSCORE_K:g}: the z-score"
    if scheme == "RescaleTo01Normalization":
        return {"type": "percentile", "p_low": 0.0, "p_high": 100.0}, 1.0, 0.0, "x"
    if scheme == "RGBTo01Normalization":
        return {"type": "ct_window", "a_min": 0.0, "a_max": 255.0}, 1.0, 0.0, "x"
    if scheme == "NoNormalization":
        lo, hi = prop("min"), prop("max")
        if not lo < hi:
            raise ValueError(f"{plans_path}: foreground min and max of {channel} must differ, "
                             f"got {lo}, {hi}")  # fmt: skip
        layer = f"{lo:g} + x·{hi - lo:g}: the raw intensities"
        return {"type": "ct_window", "a_min": lo, "a_max": hi}, hi - lo, lo, layer
    raise ValueError(f"{plans_path}: {channel} is normalised by {scheme!r}, which vafa does not "
                     f"reproduce (it does: {', '.join(SCHEMES)})")  # fmt: skip
