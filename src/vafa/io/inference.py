"""How a model predicts a whole volume: the inference settings of its model card.

A segmentation network sees windows of its patch size (``card.roi_size``); a whole volume is
predicted by a sliding window whose details change the prediction. :class:`Inference` states
them, and every clean and adversarial prediction of vafa (:func:`vafa.run.tiling.sliding_window_predict`
and what is built on it) follows the card's. The model's own inference, per framework:

- **nnU-Net v2 result folders** (:mod:`vafa.io.nnunet`): what ``nnUNetPredictor`` does by
  default — windows at nnU-Net's positions for a tile step of 0.5 (``windows="nnunet"``),
  Gaussian importance weights (σ = patch/8, nnU-Net's truncated kernel rounded to float16, with
  zeros raised to the smallest weight), padding with the network's 0 (the dataset's mean), one
  window at a time, test-time mirroring over every axis combination the trainer allows (none
  for the ``NoMirroring`` trainers), and several folds averaged (their logits, as nnU-Net).
- **MONAI bundles** (:mod:`vafa.io.bundles`): the bundle's ``SlidingWindowInferer`` entry —
  ``overlap``, ``mode``, ``sigma_scale``, ``padding_mode``, ``cval`` and ``sw_batch_size``,
  with MONAI's defaults for the keys it leaves out (``windows="monai"``).
- **Weights files and presets**: MONAI's sliding window with overlap 0.5 and constant weights,
  no mirroring (the published VAFA evaluation).

Settings a user switches off for speed (:meth:`Inference.changed_by_user`) are listed in
``changed``, which every result file and table shows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from vafa.ops.checks import numbers_per_channel
from vafa.ops.messages import did_you_mean

__all__ = ["MODES", "PADDING_MODES", "WINDOWS", "Inference"]

#: Blending of overlapping windows.
MODES = ("constant", "gaussian")
#: How a volume smaller than the window is padded (``torch.nn.functional.pad`` modes).
PADDING_MODES = ("constant", "reflect", "replicate", "circular")
#: Whose sliding window: window positions and Gaussian formula of MONAI or of nnU-Net.
WINDOWS = ("monai", "nnunet")


@dataclass(frozen=True)
class Inference:
    """The sliding-window inference of a model (see the module docs). All values JSON.

    Attributes:
        overlap: overlap of neighbouring windows, in [0, 1): one number, or one per axis
            ``(H, W, D)``. nnU-Net's tile step ``s`` is ``overlap = 1 − s``.
        mode: ``"constant"`` (plain average) or ``"gaussian"`` (importance weights that favour
            window centres).
        sigma_scale: Gaussian σ as a fraction of the window size (one number or one per axis).
        padding_mode: how an axis shorter than the window is padded (centred, the odd voxel
            after): one of :data:`PADDING_MODES`.
        cval: the value of ``"constant"`` padding, in the model's [0, 1] input units (a
            framework's 0 in its own units is ``−shift/scale`` here); one number, or one per
            input channel (nnU-Net pads each channel with its own normalised 0).
        sw_batch_size: windows per forward pass.
        mirror_axes: test-time mirroring: the model also sees the window flipped along every
            non-empty combination of these axes (0, 1, 2 = H, W, D of ``[B, C, H, W, D]``) and
            the flipped-back logits are averaged; ``()``: none.
        windows: ``"monai"`` or ``"nnunet"``: whose window positions and Gaussian formula.
        allowed_mirror_axes: the axes the model's trainer allows mirroring along (nnU-Net's
            ``inference_allowed_mirroring_axes``), ``()`` for none, None when unrestricted.
        changed: names of the settings the user changed from the model's own (e.g.
            ``("mirror_axes",)`` after switching mirroring off for speed).

    Raises:
        ValueError: a value out of range (one line naming the setting).
    """

    overlap: float | tuple[float, float, float] = 0.5
    mode: str = "constant"
    sigma_scale: float | tuple[float, float, float] = 0.125
    padding_mode: str = "constant"
    cval: float | tuple[float, ...] = 0.0
    sw_batch_size: int = 1
    mirror_axes: tuple[int, ...] = ()
    windows: str = "monai"
    allowed_mirror_axes: tuple[int, ...] | None = None
    changed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(
            self,
            "overlap",
            _per_axis("overlap", self.overlap, lambda v: 0 <= v < 1, ">= 0 and < 1"),
        )
        put(self, "sigma_scale", _per_axis("sigma_scale", self.sigma_scale, lambda v: v > 0, "> 0"))
        for name, options in (
            ("mode", MODES),
            ("padding_mode", PADDING_MODES),
            ("windows", WINDOWS),
        ):
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {list(options)}, got {value!r}"
                                 + did_you_mean(value, options))  # fmt: skip
        put(self, "cval", numbers_per_channel("cval", self.cval))
        if (
            isinstance(self.sw_batch_size, bool)
            or not isinstance(self.sw_batch_size, int)
            or self.sw_batch_size < 1
        ):
            raise ValueError(f"sw_batch_size must be an integer >= 1, got {self.sw_batch_size!r}")
        put(self, "mirror_axes", _axes("mirror_axes", self.mirror_axes))
        if self.allowed_mirror_axes is not None:
            put(self, "allowed_mirror_axes", _axes("allowed_mirror_axes", self.allowed_mirror_axes))
            _check_mirroring(self.mirror_axes, self.allowed_mirror_axes)
        names = {f.name for f in fields(self)}
        changed = tuple(self.changed) if isinstance(self.changed, (list, tuple)) else self.changed
        if not isinstance(changed, tuple) or not set(changed) <= names:
            raise ValueError(
                f"changed must list setting names of {sorted(names)}, got {self.changed!r}"
            )
        put(self, "changed", tuple(sorted(set(changed))))

    # ------------------------------------------------------------------ per axis
    def overlaps(self) -> tuple[float, float, float]:
        """:attr:`overlap` for each axis ``(H, W, D)``."""
        return _triple(self.overlap)

    def sigma_scales(self) -> tuple[float, float, float]:
        """:attr:`sigma_scale` for each axis ``(H, W, D)``."""
        return _triple(self.sigma_scale)

    def mirror_combinations(self) -> list[tuple[int, ...]]:
        """Every non-empty combination of :attr:`mirror_axes` (the flips besides the window
        itself), in nnU-Net's order: single axes first."""
        axes = self.mirror_axes
        return [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]

    @property
    def passes(self) -> int:
        """Forward passes per window: ``2 ** len(mirror_axes)``."""
        return 2 ** len(self.mirror_axes)

    # ------------------------------------------------------------------ changes
    def changed_by_user(self, **changes: Any) -> Inference:
        """These settings with ``changes`` made by the user (recorded in :attr:`changed`).

        Raises:
            ValueError: an unknown setting, a bad value, or mirroring along axes the model's
                trainer does not allow (one line).
        """
        names = [f.name for f in fields(self) if f.name not in ("allowed_mirror_axes", "changed")]
        for key in changes:
            if key not in names:
                raise ValueError(f"no inference setting {key!r} (settings: {', '.join(names)})"
                                 + did_you_mean(key, names))  # fmt: skip
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        new = Inference(**{**values, **changes})
        differ = [k for k in changes if getattr(new, k) != getattr(self, k)]
        return Inference(**{**values, **changes, "changed": (*self.changed, *differ)})

    # ------------------------------------------------------------------ text and JSON
    def summary(self) -> str:
        """One line for tables and ``vafa info``, e.g. ``"nnU-Net windows, Gaussian (σ = 0.125
        × window), overlap 0.5, mirroring over axes 0, 1, 2 (8 passes per window)"``."""
        who = "nnU-Net" if self.windows == "nnunet" else "MONAI"
        weights = (
            f"Gaussian (σ = {_text(self.sigma_scale)} × window)"
            if self.mode == "gaussian"
            else "constant"
        )
        parts = [f"{who} windows", f"{weights} weights", f"overlap {_text(self.overlap)}"]
        if self.mirror_axes:
            axes = ", ".join(map(str, self.mirror_axes))
            parts.append(f"mirroring over axes {axes} ({self.passes} passes per window)")
        elif self.allowed_mirror_axes == ():
            parts.append("no mirroring (the trainer allows none)")
        else:
            parts.append("no mirroring")
        cval = self.cval if isinstance(self.cval, tuple) else (self.cval,)
        values = "/".join(f"{v:g}" for v in cval)
        pad = self.padding_mode if self.padding_mode != "constant" else f"constant {values}"
        parts.append(f"padding {pad}, {self.sw_batch_size} window(s) per batch")
        if self.changed:
            parts.append(f"changed by the user: {', '.join(self.changed)}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON dict; inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Inference:
        """Settings from :meth:`to_dict`'s dict (missing keys: the defaults).

        Raises:
            TypeError: not a dict. ValueError: an unknown key or a bad value.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"inference must be a dict, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                raise ValueError(f"inference setting {key!r} is unknown; allowed: {names}"
                                 + did_you_mean(key, names))  # fmt: skip
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)


# ------------------------------------------------------------------------------- checks


def _per_axis(name: str, value: Any, ok, rule: str) -> float | tuple[float, float, float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 3) or not all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and ok(v)
        for v in values
    ):
        raise ValueError(f"{name} must be a number {rule} (or 3 of them), got {value!r}")
    floats = [float(v) for v in values]
    return floats[0] if len(set(floats)) == 1 else tuple(floats)  # type: ignore[return-value]


def _triple(value: float | Sequence[float]) -> tuple[float, float, float]:
    return tuple(value) if isinstance(value, tuple) else (value, value, value)  # type: ignore[return-value]


def _axes(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of axes 0, 1, 2 (H, W, D), got {value!r}")
    axes = tuple(value)
    if not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in axes) or len(
        set(axes)
    ) != len(axes):
        raise ValueError(f"{name} must be distinct axes among 0, 1, 2 (H, W, D), got {list(axes)}")
    return tuple(sorted(axes))


def _check_mirroring(axes: tuple[int, ...], allowed: tuple[int, ...]) -> None:
    extra = [a for a in axes if a not in allowed]
    if extra:
        where = (
            "allows no test-time mirroring"
            if not allowed
            else f"allows mirroring only along axes {', '.join(map(str, allowed))}"
        )
        raise ValueError(f"mirror_axes {list(axes)}: the model's trainer {where}")


def _text(value: float | tuple[float, ...]) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}"
