"""Model presets, model cards and safe checkpoint loading/saving.

A *preset* names a network architecture (a MONAI class and its default constructor arguments)
together with the data conventions it was published with (class names, intensity mapping,
voxel spacing, orientation, patch size). A :class:`ModelCard` is the JSON description that
travels beside a weights file: which preset to build, the constructor arguments that differ,
and everything a user needs to feed the model correctly.

Presets:

- ``"unetr-btcv"``: MONAI ``UNETR`` as in the VAFA paper (Hanif et al., MICCAI 2023) on
  Synapse/BTCV: 14 classes, CT window [-175, 250] HU, spacing 1.5×1.5×2.0 mm, RAS, ROI 96³.
- ``"swin-unetr"``: MONAI ``SwinUNETR`` (feature size 48), BTCV conventions.
- ``"segresnet"``: MONAI ``SegResNet`` (16 initial filters), BTCV conventions.
- ``"unet"``: MONAI ``UNet`` (channels 16…256, 4 strides of 2, 2 residual units), BTCV
  conventions.
- ``"demo-unet"``: the small MONAI ``UNet`` of the bundled demo model (3 mm spacing).

Two more architectures carry the whole network description in the card's ``kwargs`` and are
not offered as presets (:func:`list_presets` leaves them out): ``"monai-bundle"`` (a MONAI
bundle's ``network_def``, :mod:`vafa.io.bundles`) and ``"nnunet"`` (an nnU-Net v2 plans
configuration, :mod:`vafa.io.nnunet`); both wrap the network in
:class:`vafa.io.wrapped.NormalizedInput`, its first layer from [0, 1] to the network's units.

Card JSON (``card_version`` 1), written by :func:`vafa.io.checkpoints.save_card` and
:func:`vafa.io.checkpoints.save_model`::

    {
      "card_version": 1,
      "architecture": "unetr-btcv",
      "kwargs": {"img_size": [96, 96, 96], "feature_size": 16, ...},
      "in_channels": 1,
      "channel_names": ["image"],
      "out_channels": 14,
      "class_names": ["background", "spleen", ...],
      "outputs": {"activation": "softmax"},
      "roi_size": [96, 96, 96],
      "intensity": {"type": "ct_window", "a_min": -175.0, "a_max": 250.0},
      "spacing": [1.5, 1.5, 2.0],
      "orientation": "RAS",
      "provenance": {"trained_by": "...", "data": "...", "metrics": {...}},
      "training": null
    }

Reading and writing cards and weights (:func:`~vafa.io.checkpoints.load_card`,
:func:`~vafa.io.checkpoints.save_card`, :func:`~vafa.io.checkpoints.load_model`,
:func:`~vafa.io.checkpoints.save_model`) live in :mod:`vafa.io.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vafa.io.inference import Inference
from vafa.io.intensity import mapping_from_dict
from vafa.io.presets import PRESETS, Preset, get_preset
from vafa.ops.checks import numbers_per_channel, positive_int, positive_triple
from vafa.ops.heads import Heads, check_outputs
from vafa.ops.messages import did_you_mean

__all__ = [
    "CARD_VERSION",
    "ModelCard",
    "build_model",
    "check_channel_names",
    "count_parameters",
    "list_presets",
    "register_preset",
]

#: Version written in the ``card_version`` field of every card.
CARD_VERSION = 1


@dataclass
class ModelCard:
    """Everything needed to build a model and feed it correctly; stored as JSON beside weights.

    Every field is validated (and normalised to its JSON form: tuples become lists, the intensity
    dict is canonicalised) on construction.

    Attributes:
        architecture: preset name, one of :func:`list_presets`.
        in_channels: number of input channels C of ``[B, C, H, W, D]`` inputs, >= 1.
        channel_names: one unique name per input channel, in the model's order (e.g.
            ``["T1c", "T1", "T2", "FLAIR"]``); None: ``["image"]`` for one channel, else
            ``["channel_0", …]``.
        out_channels: number of output classes (logit channels), >= 1.
        class_names: one unique non-empty name per output channel, index 0 first.
        outputs: how the output channels are read (:func:`vafa.ops.heads.check_outputs`):
            ``{"activation": "softmax"}`` (default: exclusive classes, argmax) or
            ``{"activation": "sigmoid", "threshold": 0.5, "regions": {name: [label values]}}``
            (overlapping regions named by ``class_names``); :meth:`heads` reads them.
        roi_size: patch size ``(H, W, D)`` in voxels that the model sees (sliding window / tiles).
        intensity: intensity mapping dict, see :func:`vafa.io.intensity.mapping_from_dict`,
            fitted on each channel separately; or a list of such dicts, one per channel
            (e.g. nnU-Net's CT normalisation for a CT channel, z-score for a PET channel).
        kwargs: constructor arguments overriding the preset's (JSON values). Never
            ``in_channels``/``out_channels``: those are card fields.
        spacing: voxel spacing ``(x, y, z)`` in mm that inputs are resampled to, or None to use
            volumes as they are.
        orientation: axis codes inputs are reoriented to (e.g. ``"RAS"``), or None for as is.
        provenance: free JSON dict: who trained it, on which data, with which metrics.
        training: free JSON dict of training settings, or None.
        inference: how whole volumes are predicted (:class:`vafa.io.inference.Inference`, a
            dict in JSON): a model folder's own framework inference; by default MONAI's
            sliding window, overlap 0.5, constant weights, no mirroring.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a field has an invalid value (unknown architecture or kwarg with a
            "did you mean" hint, wrong number of class names, bad ROI, bad intensity dict, …).
    """

    architecture: str
    in_channels: int
    out_channels: int
    class_names: list[str]
    roi_size: tuple[int, int, int]
    intensity: dict[str, Any] | list[dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    channel_names: list[str] | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    inference: Inference = field(default_factory=Inference)
    outputs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _validate_card(self)

    def heads(self) -> Heads:
        """The :class:`vafa.ops.heads.Heads` of :attr:`outputs` (what every consumer asks)."""
        return Heads.from_outputs(self.outputs, self.class_names)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelCard:
        """The card of a preset, with some fields replaced.

        ``kwargs`` in ``overrides`` is merged over the preset's constructor arguments (the card
        stores the full merged dict, so it stays meaningful if the preset changes later).

        Args:
            name: preset name, see :func:`list_presets`.
            **overrides: card fields to replace, e.g. ``out_channels=9, class_names=[...]``.

        Raises:
            ValueError: unknown preset or field name (with a "did you mean" hint), or an invalid
                resulting card.
        """
        preset = get_preset(name)
        _check_names(overrides, _FIELD_NAMES - {"architecture"}, "ModelCard.from_preset argument")
        fields: dict[str, Any] = {
            "architecture": preset.name,
            "in_channels": preset.in_channels,
            "out_channels": len(preset.class_names),
            "class_names": list(preset.class_names),
            "roi_size": preset.roi_size,
            "intensity": dict(preset.intensity),
            "kwargs": dict(preset.kwargs),
            "spacing": preset.spacing,
            "orientation": preset.orientation,
        }
        extra = overrides.pop("kwargs", None) or {}
        if not isinstance(extra, Mapping):
            raise TypeError(f"kwargs must be a dict, got {type(extra).__name__}")
        fields["kwargs"].update(extra)
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``card_version`` first; inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"card_version": CARD_VERSION}
        for name in _FIELD_ORDER:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, Inference) else _json_copy(value)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | os.PathLike | None = None) -> ModelCard:
        """Build and validate a card from its JSON dict.

        Args:
            d: dict as written by :meth:`to_dict`. Required: ``architecture``, ``in_channels``,
                ``out_channels``, ``class_names``, ``roi_size``, ``intensity``; the other fields
                default to ``{}`` / None. ``kwargs`` may hold only the arguments that differ
                from the preset.
            source: where ``d`` came from (a card file), named in every error message.

        Raises:
            TypeError: ``d`` is not a dict, or a field has the wrong type.
            ValueError: a field is missing, unknown (with a "did you mean" hint) or invalid.
        """
        where = f"model card {os.fspath(source)}: " if source is not None else "model card: "
        if not isinstance(d, Mapping):
            raise TypeError(f"{where}card must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("card_version", CARD_VERSION)
        if version != CARD_VERSION:
            raise ValueError(f"{where}card_version must be {CARD_VERSION}, got {version!r}")
        try:
            _check_names(d, _FIELD_NAMES, "field")
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and _required(f)]
        if missing:
            raise ValueError(f"{where}missing required field(s): {', '.join(missing)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}{err}") from None


def build_model(preset_or_card: str | ModelCard) -> nn.Module:
    """Construct the (randomly initialised) network of a preset or a card, on the CPU.

    Args:
        preset_or_card: a preset name (see :func:`list_presets`) or a :class:`ModelCard`, whose
            ``kwargs`` are merged over the preset's and whose ``in_channels``/``out_channels``
            are used.

    Returns:
        The module in training mode, float32, on the CPU. It maps ``[B, in_channels, H, W, D]``
        inputs in [0, 1] to ``[B, out_channels, H, W, D]`` logits.

    Raises:
        TypeError: the argument is neither a string nor a card.
        ValueError: unknown preset, or the constructor rejected the arguments.
    """
    if isinstance(preset_or_card, str):
        card = ModelCard.from_preset(preset_or_card)
    elif isinstance(preset_or_card, ModelCard):
        card = preset_or_card
    else:
        raise TypeError(
            "preset_or_card must be a preset name or a ModelCard, "
            f"got {type(preset_or_card).__name__}"
        )
    preset = get_preset(card.architecture)
    kwargs = {**preset.kwargs, **card.kwargs}
    constructor = preset.constructor()
    try:
        return constructor(in_channels=card.in_channels, out_channels=card.out_channels, **kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"could not build {card.architecture!r} with kwargs {kwargs}: {err}"
        ) from err


def list_presets() -> list[str]:
    """Names of the registered presets, sorted (not the self-describing ``"monai-bundle"`` and
    ``"nnunet"``, whose cards are made from a bundle or a result folder)."""
    return sorted(name for name, preset in PRESETS.items() if preset.listed)


def register_preset(
    name: str,
    constructor: Callable[..., nn.Module],
    *,
    class_names: Sequence[str],
    intensity: Mapping[str, Any],
    roi_size: Sequence[int],
    kwargs: Mapping[str, Any] | None = None,
    in_channels: int = 1,
    spacing: Sequence[float] | None = None,
    orientation: str | None = None,
    roi_check: Callable[[dict[str, Any], tuple[int, ...]], str | None] | None = None,
) -> None:
    """Add an architecture so that cards can name it.

    Args:
        name: new preset name (must not exist yet).
        constructor: callable taking ``in_channels=``, ``out_channels=`` and ``**kwargs`` and
            returning the module (e.g. a MONAI network class).
        class_names: default class names (their number is the default ``out_channels``).
        intensity: default intensity mapping dict.
        roi_size: default patch size ``(H, W, D)``.
        kwargs: default constructor arguments (JSON values).
        in_channels: default number of input channels.
        spacing: default spacing in mm or None.
        orientation: default orientation or None.
        roi_check: optional ``f(kwargs, roi_size) -> error text or None`` run on every card.

    Raises:
        ValueError: ``name`` already exists, or the defaults do not form a valid card.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if name in PRESETS:
        raise ValueError(f"name must not be an existing preset, got {name!r}")
    preset = Preset(
        name,
        lambda: constructor,
        dict(kwargs or {}),
        tuple(class_names),
        dict(intensity),
        tuple(roi_size),
        in_channels,
        None if spacing is None else tuple(spacing),
        orientation,
        roi_check,
    )
    PRESETS[name] = preset
    try:
        ModelCard.from_preset(name)
    except (TypeError, ValueError):
        del PRESETS[name]
        raise


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ------------------------------------------------------------------------------- validation

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ModelCard))
_FIELD_ORDER = (  # order of the JSON file
    "architecture", "kwargs", "in_channels", "channel_names", "out_channels", "class_names",
    "outputs", "roi_size",
    "intensity", "spacing", "orientation", "provenance", "training", "inference",
)  # fmt: skip
_AXES = ({"L", "R"}, {"A", "P"}, {"S", "I"})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_names(given: Mapping[str, Any], allowed: Any, what: str) -> None:
    for key in given:
        if key not in allowed:
            raise ValueError(
                f"{what} {key!r} is unknown; allowed: {sorted(allowed)}"
                + did_you_mean(key, allowed)
            )


def _validate_card(card: ModelCard) -> None:
    preset = get_preset(card.architecture)
    card.in_channels = positive_int("in_channels", card.in_channels)
    card.out_channels = positive_int("out_channels", card.out_channels)
    card.class_names = _class_names(card.class_names, card.out_channels)
    card.outputs = check_outputs(card.outputs, card.class_names)
    card.roi_size = positive_triple("roi_size", card.roi_size, int)
    card.channel_names = check_channel_names(card.channel_names, card.in_channels)
    card.intensity = _intensity(card.intensity, card.in_channels)
    card.kwargs = _json_dict("kwargs", card.kwargs)
    _check_kwargs(preset, card.kwargs)
    if preset.roi_check is not None:
        problem = preset.roi_check({**preset.kwargs, **card.kwargs}, card.roi_size)
        if problem:
            raise ValueError(problem)
    card.spacing = None if card.spacing is None else positive_triple("spacing", card.spacing, float)
    card.orientation = _orientation(card.orientation)
    card.provenance = _json_dict("provenance", card.provenance)
    card.training = None if card.training is None else _json_dict("training", card.training)
    if not isinstance(card.inference, Inference):
        card.inference = Inference.from_dict(card.inference)
    numbers_per_channel("inference.cval", card.inference.cval, card.in_channels)


def _intensity(value: Any, in_channels: int) -> dict[str, Any] | list[dict[str, Any]]:
    """One mapping dict (for every channel) or a list of them, one per channel; canonical."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != in_channels:
            raise ValueError(
                f"intensity must be one dict or a list of in_channels={in_channels} dicts, "
                f"got a list of {len(value)}"
            )
        return [_intensity(v, 1) for v in value]
    if not isinstance(value, Mapping):
        raise TypeError(f"intensity must be a dict or a list of dicts, got {type(value).__name__}")
    try:
        return mapping_from_dict(value).to_dict()
    except (TypeError, ValueError) as err:
        raise type(err)(f"intensity is invalid: {err}") from None


def check_channel_names(value: Any, in_channels: int) -> list[str]:
    """Validated input channel names; None gives ``["image"]`` or ``["channel_0", …]``."""
    if value is None:
        return ["image"] if in_channels == 1 else [f"channel_{i}" for i in range(in_channels)]
    return _unique_names("channel_names", value, in_channels, "in_channels")


def _class_names(value: Any, out_channels: int) -> list[str]:
    return _unique_names("class_names", value, out_channels, "out_channels")


def _unique_names(what: str, value: Any, count: int, count_name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    names = list(value)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise TypeError(f"{what} must be a list of non-empty strings, got {names!r}")
    if len(names) != count:
        raise ValueError(
            f"{what} must have {count_name}={count} entries, got {len(names)}: {names}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique, got duplicates {dupes}")
    return names


def _orientation(value: Any) -> str | None:
    if value is None:
        return None
    rule = "3 axis codes, one of L/R, A/P and S/I each (e.g. 'RAS'), or None"
    if not isinstance(value, str):
        raise TypeError(f"orientation must be {rule}, got {value!r}")
    code = value.upper()
    if len(code) != 3 or any(sum(c in axis for c in code) != 1 for axis in _AXES):
        raise ValueError(f"orientation must be {rule}, got {value!r}")
    return code


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def _json_dict(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise TypeError(f"{name} must have string keys, got {list(value)}")
    try:
        return _json_copy(dict(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold only JSON values (finite numbers): {err}") from None


def _check_kwargs(preset: Preset, kwargs: dict[str, Any]) -> None:
    for key in ("in_channels", "out_channels"):
        if key in kwargs:
            raise ValueError(f"kwargs must not contain {key!r}: set the card field {key} instead")
    try:
        params = inspect.signature(preset.constructor()).parameters
    except (TypeError, ValueError):  # a builder without a signature: let it check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {n for n in params if n not in ("self", "in_channels", "out_channels")}
    _check_names(kwargs, allowed, f"kwargs key for {preset.name}")
