"""MONAI bundles (the MONAI Model Zoo format) as vafa models: network, card and intensity
mapping read from the bundle's own description.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt``. :func:`load_bundle` reads, from the inference config:

- ``network_def``: the network (a class of ``monai.networks.nets``; a bundle's own Python code
  is never imported);
- ``preprocessing``: ``Orientationd`` → the card's orientation, ``Spacingd`` → its spacing, and
  the intensity transform → the card's [0, 1] window plus the network's first layer
  (:class:`vafa.io.wrapped.NormalizedInput`):

  ================================================  =========================  ================
  bundle transform                                  [0, 1] window (card)       first layer
  ================================================  =========================  ================
  ``ScaleIntensityRanged(a_min, a_max, b_min, b_max)``  ``ct_window(a_min, a_max)``  ``b_min + x·(b_max − b_min)``
  ``ScaleIntensityRangePercentilesd(lower, upper, …)``  ``percentile(lower, upper)``  the same
  ``ScaleIntensityd(minv, maxv)`` (min–max)          ``percentile(0, 100)``     ``minv + x·(maxv − minv)``
  ``NormalizeIntensityd(nonzero)`` (z-score)         ``zscore(k=5, nonzero)``   ``(2x − 1)·5``
  ================================================  =========================  ================

  (``NormalizeIntensityd`` followed by ``ScaleIntensityd`` is a min–max scaling.) Transforms
  that do not change intensities or the grid (``LoadImaged``, ``EnsureChannelFirstd``,
  ``EnsureTyped``, …) are skipped; any other transform is reported as not applied.
- ``inferer``: its ``SlidingWindowInferer`` → the card's patch size (``roi_size``, else the
  metadata's input ``spatial_shape``) and inference settings (overlap, mode, sigma_scale,
  padding, sw_batch_size: :func:`vafa.io.bundle_inferer.read_inferer`);
- ``postprocessing``: how outputs are read (:func:`vafa.io.bundle_inferer.read_outputs`):
  ``Activationsd(sigmoid=True)`` + ``AsDiscreted(threshold=t)`` → overlapping sigmoid regions
  thresholded at t (BraTS names: the BraTS label regions of
  :data:`vafa.ops.heads.BRATS_REGIONS`); otherwise softmax classes;
- ``metadata.json``: class names (``network_data_format.outputs.*.channel_def``), input
  channel names (``inputs.*.channel_def``, e.g. T1c, T1, T2, FLAIR), name, version.

Several input channels (``in_channels`` > 1, e.g. MONAI's BraTS bundle: one file per channel
in ``LoadImaged``): the card's intensity mapping is fitted on each channel on its own, which is
what ``NormalizeIntensityd``, ``ScaleIntensityRangePercentilesd`` and ``ScaleIntensityd`` do
with ``channel_wise=True``; with ``channel_wise=False`` they normalise all channels jointly,
which vafa cannot honour: refused in one line naming the transform.

Safety: references (``"@network_def#channels"``) and macros are resolved as data; a Python
expression (``"$..."``) in what vafa reads is refused unless the caller trusts the bundle
(``trust=True``, CLI ``--trust-checkpoint``), which lets MONAI evaluate it exactly as
``monai.bundle`` does; entries vafa does not read (a ``device``: vafa predicts on the device it
is given; dtypes; the post-processing but its activation and threshold) are never evaluated, and what MONAI returns (tensors, numpy
values, devices, callables) is never serialised: vafa converts what it reads (spacing → floats,
``roi_size`` → ints, …) or refuses it in one line naming the entry
(:mod:`vafa.io.bundle_config`). Weights are read with ``torch.load(weights_only=True)``
(:func:`vafa.io.state_dicts.read_state_dict`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vafa.io.bundle_config import BundleConfig, ConfigEntryError, LazyEntry, first_object
from vafa.io.bundle_inferer import read_inferer, read_outputs
from vafa.io.intensity import ZSCORE_K
from vafa.io.models import ModelCard, build_model
from vafa.io.state_dicts import load_state_strict, read_state_dict
from vafa.ops.checks import positive_int
from vafa.ops.messages import short_text

__all__ = ["BUNDLE_CONFIGS", "bundle_card", "is_monai_bundle", "load_bundle"]

#: Inference config file names, in the order they are looked for under ``configs/``.
BUNDLE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
BUNDLE_WEIGHTS = ("models/model.safetensors", "models/model.pt")

_NEUTRAL = frozenset(
    ("LoadImage", "EnsureChannelFirst", "AddChannel", "AsChannelFirst", "AsChannelLast",
     "EnsureType", "ToTensor", "ToNumpy", "CastToType", "Identity", "CopyItems", "DeleteItems",
     "SelectItems", "ToDevice", "ToMetaTensor", "FromMetaTensor", "SaveImage")
)  # fmt: skip
_INTENSITY = frozenset(
    ("ScaleIntensityRange", "ScaleIntensityRangePercentiles", "NormalizeIntensity",
     "ScaleIntensity")
)  # fmt: skip
_KNOWN = _NEUTRAL | _INTENSITY | {"Orientation", "Spacing"}
#: Intensity transforms that measure the image (``channel_wise=False``: all channels jointly).
_MEASURING = frozenset(("NormalizeIntensity", "ScaleIntensityRangePercentiles", "ScaleIntensity"))


def is_monai_bundle(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like a MONAI bundle (``configs/inference.json|yaml``)."""
    folder = Path(folder)
    return folder.is_dir() and _config_file(folder) is not None


def load_bundle(
    folder: str | os.PathLike, *, device: str | torch.device = "auto", trust: bool = False
) -> tuple[nn.Module, ModelCard]:
    """The network of a MONAI bundle with its weights, and the card made from the bundle.

    Args:
        folder: the bundle folder (``configs/``, ``models/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`:
            vafa chooses the device; the bundle's own ``device`` entries are not read.
        trust: let MONAI evaluate the bundle's Python expressions (``"$..."``) where vafa needs
            their value, and allow pickled objects in the weights. Only for trusted bundles.

    Returns:
        ``(model, card)``: a :class:`~vafa.io.wrapped.NormalizedInput` in eval mode on the
        device, mapping ``[B, C, H, W, D]`` in [0, 1] to logits; the card (architecture
        ``"monai-bundle"``), which :func:`vafa.io.checkpoints.save_model` can store beside
        fine-tuned weights.

    Raises:
        ValueError: not a bundle, a missing or unreadable file, an expression without
            ``trust``, an unsupported transform chain, a network that cannot be built or
            weights that do not fit it — one line naming the file and the problem.
    """
    from vafa.ops.devices import resolve_device

    folder = Path(folder)
    card = bundle_card(folder, trust=trust)
    dev = resolve_device(device)
    weights = _weights_file(folder)
    config = _config_file(folder)
    try:
        model = build_model(card)
    except ValueError as err:
        raise ValueError(f"{config}: network_def cannot be built: {err.__cause__ or err}") from None
    state = read_state_dict(weights, trust=trust)
    prefixed = {f"network.{k}": v for k, v in state.items()}
    load_state_strict(model, prefixed, card, f"weights {weights}")
    return model.to(dev).eval(), card


def bundle_card(folder: str | os.PathLike, *, trust: bool = False) -> ModelCard:
    """The model card of a bundle (network description, intensity mapping, grid, classes).

    Raises:
        ValueError: see :func:`load_bundle`.
    """
    folder = Path(folder)
    config = _config_file(folder)
    if config is None:
        raise ValueError(
            f"{folder}: not a MONAI bundle (no configs/{' or configs/'.join(BUNDLE_CONFIGS)})"
        )
    _weights_file(folder)  # a bundle without weights is an error before anything else
    reader = _BundleReader(folder, config, trust)
    network = reader.network()
    steps = reader.preprocessing()
    in_channels, out_channels = reader.channels(network)
    mapping = _intensity(steps, config, in_channels)
    class_names = reader.class_names(out_channels)
    outputs, output_notes = read_outputs(reader.postprocessing(), class_names, str(config))
    net_args = {k: v for k, v in network.items() if k not in ("in_channels", "out_channels")}
    roi, inference = reader.inferer(mapping["scale"], mapping["shift"])
    spacing, orientation, notes = _grid(steps, config)
    notes += mapping.pop("notes") + output_notes
    provenance = {
        "source": "MONAI bundle",
        "bundle": reader.meta.get("name") or folder.resolve().name,
        "version": reader.meta.get("version"),
        "task": reader.meta.get("task"),
        "config": str(config.relative_to(folder)),
        "input_layer": mapping.pop("layer"),
        "notes": notes,
    }
    try:
        return ModelCard(
            architecture="monai-bundle",
            kwargs={"network": net_args, "input_scale": mapping["scale"],
                    "input_shift": mapping["shift"]},
            in_channels=in_channels,
            channel_names=reader.channel_names(in_channels),
            out_channels=out_channels,
            class_names=class_names,
            outputs=outputs,
            roi_size=reader.roi_size(network, roi),
            intensity=mapping["intensity"],
            spacing=spacing,
            orientation=orientation,
            provenance={k: v for k, v in provenance.items() if v not in (None, [])},
            inference=inference,
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config}: {err}") from None


# ----------------------------------------------------------------------------- reading


class _BundleReader(BundleConfig):
    """Reads the parts of a bundle config that vafa needs (:class:`BundleConfig`: references
    resolved as data, expressions evaluated by MONAI only where read and only with trust)."""

    # ------------------------------------------------------------------ the parts
    def network(self) -> dict[str, Any]:
        network = self.get("network_def")
        if not isinstance(network, dict) or not isinstance(network.get("_target_"), str):
            raise ValueError(f"{self.config}: network_def must be a component with a _target_")
        from vafa.io.wrapped import monai_network_class

        try:
            cls = monai_network_class(network["_target_"])
        except ValueError as err:
            raise ValueError(f"{self.config}: network_def cannot be built: {err}") from None
        network["_target_"] = f"{cls.__module__}.{cls.__name__}"
        found = first_object(network, "network_def")
        if found is not None:  # e.g. "act": "$torch.nn.PReLU": a card stores JSON
            raise ValueError(f"{self.config}: {found[0]} is a {type(found[1]).__name__} "
                             f"({short_text(found[1], 60)}), which a model card cannot store "
                             "(numbers, strings, lists, dicts)")  # fmt: skip
        if network.get("spatial_dims", 3) != 3:
            raise ValueError(f"{self.config}: network_def is {network['spatial_dims']}D; vafa "
                             "attacks volumes with 3D networks")  # fmt: skip
        return network

    def preprocessing(self) -> list[tuple[str, Mapping[str, Any]]]:
        """The enabled transforms, as :class:`~vafa.io.bundle_config.LazyEntry` views: only the
        arguments vafa reads are resolved (an ``EnsureTyped`` device or dtype never is)."""
        pre = self.get("preprocessing", lazy=True)
        transforms = pre.get("transforms") if isinstance(pre, Mapping) else pre
        if not isinstance(transforms, list):
            raise ValueError(f"{self.config}: preprocessing must be a Compose of a transform list")
        steps = []
        for i, t in enumerate(transforms):
            if not isinstance(t, Mapping) or not isinstance(t.get("_target_"), str):
                raise ValueError(f"{self.config}: preprocessing#transforms#{i} is not a transform")
            if not _disabled(t):
                steps.append((_transform_name(t["_target_"]), t))
        return steps

    def postprocessing(self) -> list[tuple[str, LazyEntry]]:
        """The enabled components of the post-processing, ``(_target_, entry)``, found by
        following references only: nothing else of it is resolved or evaluated."""
        raw, id, seen = self.follow(self.parser.get("postprocessing", default=None),
                                    "postprocessing", ())  # fmt: skip
        if isinstance(raw, dict) and "transforms" in raw:
            raw, id, seen = self.follow(raw["transforms"], f"{id}#transforms", seen)
        steps = []
        for i, t in enumerate(raw if isinstance(raw, list) else []):
            t, t_id, t_seen = self.follow(t, f"{id}#{i}", seen)
            if isinstance(t, dict) and isinstance(t.get("_target_"), str) and not _disabled(t):
                steps.append((t["_target_"], LazyEntry(self, t, t_id, t_seen)))
        return steps

    def channels(self, network: dict[str, Any]) -> tuple[int, int]:
        inputs = _first_io(self.meta, "inputs")
        outputs = _first_io(self.meta, "outputs")
        in_channels = network.get("in_channels", inputs.get("num_channels", 1))
        out_channels = network.get("out_channels", outputs.get("num_channels"))
        if out_channels is None:
            raise ValueError(f"{self.config}: network_def has no out_channels")
        try:  # used before the card checks them (the channel names, the intensity per channel)
            return positive_int("in_channels", in_channels), positive_int(
                "out_channels", out_channels
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.config}: network_def's {err}") from None

    def class_names(self, out_channels: int) -> list[str]:
        names = _channel_def(self.meta, "outputs", out_channels)
        return names or [f"class {i}" for i in range(out_channels)]

    def channel_names(self, in_channels: int) -> list[str] | None:
        """The input channels' names (``inputs.*.channel_def``), None where not given."""
        return _channel_def(self.meta, "inputs", in_channels)

    def inferer(self, scale: float, shift: float) -> tuple[Any, Any]:
        """:func:`~vafa.io.bundle_inferer.read_inferer` of the entry, resolving only its keys
        that vafa reads."""
        raw, id, seen = self.follow(self.parser.get("inferer", default=None), "inferer", ())

        def resolve(value: Any, name: str) -> Any:  # name: "inferer#<key>"; id: where it is
            return self.resolve(value, id + name.removeprefix("inferer"), seen)

        return read_inferer(raw, resolve, str(self.config), scale, shift)

    def roi_size(self, network: dict[str, Any], roi: Any) -> Any:
        if roi is None:
            shape = _first_io(self.meta, "inputs").get("spatial_shape")
            if isinstance(shape, list) and all(isinstance(s, int) for s in shape):
                roi = shape
        roi = roi if roi is not None else network.get("img_size")
        if roi is None:
            raise ValueError(
                f"{self.config}: no patch size (neither inferer#roi_size nor the metadata's "
                "spatial_shape)"
            )
        return [roi] * 3 if isinstance(roi, int) else roi


# ------------------------------------------------------------------------- interpretation


def _intensity(
    steps: list[tuple[str, Mapping[str, Any]]], config: Path, in_channels: int = 1
) -> dict[str, Any]:
    """The card's intensity mapping (fitted per channel) and first layer of the bundle's
    intensity transforms."""
    chain = [(name, t) for name, t in steps if name in _INTENSITY]
    names = [name for name, _ in chain]
    if not chain:
        raise ValueError(
            f"{config}: no intensity transform in preprocessing (one of {', '.join(sorted(_INTENSITY))}"
            "); vafa needs it to map images to [0, 1]"
        )
    notes: list[str] = []
    if names == ["NormalizeIntensity", "ScaleIntensity"]:
        notes.append(
            "NormalizeIntensityd followed by ScaleIntensityd is a min–max scaling; vafa applies "
            "it as one (voxels that NormalizeIntensityd(nonzero) keeps at 0 may differ)"
        )
        chain = chain[1:]
    elif len(chain) > 1:
        raise ValueError(
            f"{config}: unsupported chain of intensity transforms {' → '.join(names)} (vafa "
            "reads one of them, or NormalizeIntensityd → ScaleIntensityd)"
        )
    name, t = chain[0]
    if in_channels > 1 and name in _MEASURING and t.get("channel_wise", False) is not True:
        raise ValueError(
            f"{config}: {t['_target_']} with channel_wise=false measures the {in_channels} input "
            "channels jointly; vafa fits the intensity mapping on each channel on its own and "
            "cannot honour it (channel_wise=true can: MONAI's BraTS bundle sets it)"
        )
    try:
        out = _INTERPRET[name](t)  # reads (and, trusted, evaluates) the transform's arguments
    except ConfigEntryError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{config}: {t['_target_']}: {short_text(err)}") from None
    out["notes"] = notes + out.get("notes", [])
    return out


def _scale_intensity_range(t: Mapping[str, Any]) -> dict[str, Any]:
    a_min, a_max = _number(t, "a_min"), _number(t, "a_max")
    b_min, b_max = _b_range(t, "b_min", "b_max")
    notes = [] if t.get("clip", False) else [_NO_CLIP]
    return _affine({"type": "ct_window", "a_min": a_min, "a_max": a_max}, b_min, b_max, notes)


def _scale_intensity_range_percentiles(t: Mapping[str, Any]) -> dict[str, Any]:
    if t.get("relative", False):
        raise ValueError("relative=True is not supported")
    lower, upper = _number(t, "lower"), _number(t, "upper")
    b_min, b_max = _b_range(t, "b_min", "b_max")
    notes = [] if t.get("clip", False) else [_NO_CLIP]
    return _affine({"type": "percentile", "p_low": lower, "p_high": upper}, b_min, b_max, notes)


def _scale_intensity(t: Mapping[str, Any]) -> dict[str, Any]:
    if t.get("factor") is not None:
        raise ValueError("factor is not supported (only minv/maxv)")
    minv, maxv = t.get("minv", 0.0), t.get("maxv", 1.0)
    if minv is None or maxv is None:
        raise ValueError("minv and maxv must be numbers")
    return _affine({"type": "percentile", "p_low": 0.0, "p_high": 100.0}, minv, maxv, [])


def _normalize_intensity(t: Mapping[str, Any]) -> dict[str, Any]:
    if t.get("subtrahend") is not None or t.get("divisor") is not None:
        raise ValueError("fixed subtrahend/divisor are not supported")
    nonzero = bool(t.get("nonzero", False))
    mapping = {"type": "zscore", "k": ZSCORE_K, "nonzero": nonzero}
    return _affine(mapping, -ZSCORE_K, ZSCORE_K, [])


_INTERPRET = {
    "ScaleIntensityRange": _scale_intensity_range,
    "ScaleIntensityRangePercentiles": _scale_intensity_range_percentiles,
    "ScaleIntensity": _scale_intensity,
    "NormalizeIntensity": _normalize_intensity,
}
_NO_CLIP = (
    "the bundle does not clip outside its intensity window (clip=false); vafa's [0, 1] image "
    "does, so voxels beyond the window reach the model clipped"
)


def _affine(intensity: dict[str, Any], low: Any, high: Any, notes: list[str]) -> dict[str, Any]:
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"output range {name} must be a number, got {value!r}")
    scale, shift = float(high) - float(low), float(low)
    if scale == 0:
        raise ValueError(f"output range must not be empty, got [{low}, {high}]")
    layer = "x" if (scale, shift) == (1.0, 0.0) else f"{shift:g} + x·{scale:g}"
    return {"intensity": intensity, "scale": scale, "shift": shift, "notes": notes,
            "layer": f"model input = {layer} (x: the [0, 1] image)"}  # fmt: skip


def _grid(steps: list[tuple[str, Mapping[str, Any]]], config: Path) -> tuple[Any, Any, list[str]]:
    spacing = orientation = None
    notes: list[str] = []
    ignored = []
    for name, t in steps:
        if name == "Spacing":
            pixdim = t.get("pixdim")
            pixdim = [pixdim] * 3 if isinstance(pixdim, (int, float)) else pixdim
            if (
                isinstance(pixdim, list)
                and len(pixdim) == 3
                and all(isinstance(p, (int, float)) and p > 0 for p in pixdim)
            ):
                spacing = [float(p) for p in pixdim]
            else:
                notes.append(f"Spacingd pixdim {pixdim!r} kept the input spacing on some axis")
        elif name == "Orientation":
            orientation = t.get("axcodes")
        elif name not in _KNOWN:
            ignored.append(t["_target_"])
    if ignored:
        text = (
            f"{config}: vafa does not apply the preprocessing transform(s) "
            f"{', '.join(ignored)}; give it images as those transforms would leave them"
        )
        warnings.warn(text, UserWarning, stacklevel=4)
        notes.append(f"not applied: {', '.join(ignored)}")
    return spacing, orientation, notes


# --------------------------------------------------------------------------------- helpers


def _config_file(folder: Path) -> Path | None:
    for name in BUNDLE_CONFIGS:
        path = folder / "configs" / name
        if path.is_file():
            return path
    return None


def _weights_file(folder: Path) -> Path:
    for name in BUNDLE_WEIGHTS:
        path = folder / name
        if path.is_file():
            return path
    raise ValueError(f"{folder / BUNDLE_WEIGHTS[-1]}: the bundle has no weights file")


def _transform_name(target: str) -> str:
    name = target.rpartition(".")[2]
    for suffix in ("Dict", "D", "d"):
        if name.endswith(suffix) and name[: -len(suffix)] in _KNOWN:
            return name[: -len(suffix)]
    return name


def _first_io(meta: dict[str, Any], kind: str) -> dict[str, Any]:
    section = (meta.get("network_data_format") or {}).get(kind)
    if isinstance(section, dict):
        for value in section.values():
            if isinstance(value, dict):
                return value
    return {}


def _channel_def(meta: dict[str, Any], kind: str, count: int) -> list[str] | None:
    """The ``count`` channel names of the metadata's first ``kind`` (inputs, outputs), or None
    when they are missing, empty or not unique."""
    channel_def = _first_io(meta, kind).get("channel_def")
    if not isinstance(channel_def, dict):
        return None
    names = [str(channel_def.get(str(i), "")).strip() for i in range(count)]
    return names if all(names) and len(set(names)) == len(names) else None


def _disabled(component: Mapping[str, Any]) -> bool:
    """MONAI's reading of ``_disabled_`` (a bool, or the string "true"; never evaluated)."""
    written = getattr(component, "written", None)  # a LazyEntry: its value as written
    value = written("_disabled_") if written else component.get("_disabled_", False)
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _number(t: Mapping[str, Any], key: str) -> float:
    value = t.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def _b_range(t: Mapping[str, Any], low: str, high: str) -> tuple[Any, Any]:
    if t.get(low) is None or t.get(high) is None:  # MONAI: no output scaling
        return 0.0, 1.0
    return t[low], t[high]
