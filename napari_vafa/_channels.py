"""Multi-channel images in the plugin (no Qt): reading a 4D channels file as one layer per
channel, rebuilding a :class:`~vafa.io.channels.Channels` image from the layers a user picked,
what the widget knows of the chosen model's channels, and the per-channel result layers.

Conventions:

* A 4D NIfTI whose last axis holds channels (:func:`is_channel_file`) opens as napari opens
  multichannel data (``channel_axis``): layers ``<file> [0]``, ``<file> [1]`` …, each with the
  metadata of a 3D volume (affine, 3D header, source) plus :data:`META_CHANNEL` (its index) and
  :data:`META_CHANNELS` (the file's channel count).
* Result layers of a multi-channel run: channel 0 keeps the single-channel keys
  (``"adversarial"``, ``"perturbation"`` …, so the compare view and export find them), channel
  ``c > 0`` has the key ``"adversarial#c"`` (:func:`channel_key`); each is named with its
  channel's name (``"adversarial T1c"``). Predictions stay one labels layer each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vafa.io.models import ModelCard

__all__ = [
    "MAX_CHANNELS",
    "META_CHANNEL",
    "META_CHANNELS",
    "PER_CHANNEL",
    "auto_pick",
    "channel_image",
    "channel_key",
    "channel_names",
    "is_channel_file",
    "known_card",
    "layer_names",
    "read_channels",
    "result_keys",
    "split_key",
]

META_CHANNEL = "channel"  #: a channel layer's index in its file
META_CHANNELS = "channels"  #: its file's channel count
#: A 4D file with more volumes on its last axis is shown as a series, not as channels.
MAX_CHANNELS = 16
#: The result layers made once per channel (the predictions are one layer each).
PER_CHANNEL = ("adversarial", "perturbation", "dct_clean", "dct_adversarial", "q_table", "zeroed")


# ----------------------------------------------------------------------------- reading
def is_channel_file(img) -> bool:
    """Whether a nibabel image may hold channels on its last axis: 2 to :data:`MAX_CHANNELS`
    volumes, 4D ``(I, J, K, C)`` or Slicer's 5D vector ``(I, J, K, 1, C)`` (whether its header
    calls them time instead is :func:`vafa.io.channels.load_image`'s rule)."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in (4, 5) or any(n != 1 for n in shape[3:-1]):
        return False
    return 2 <= shape[-1] <= MAX_CHANNELS


def read_channels(path: Path, name: str) -> tuple | None:
    """The layer data tuple of a 4D channels file (napari splits it along ``channel_axis``
    0 into one layer per channel), or None for any other file (or one the library refuses:
    it is then shown as it is)."""
    import nibabel as nib

    from napari_vafa._layers import layer_kwargs, volume_to_layer_data
    from vafa.io.channels import load_image

    try:
        img = nib.load(path)
        if not is_channel_file(img):
            return None
        image = load_image(path, int(img.shape[-1]))  # refuses a time series
    except Exception:  # unreadable or refused: the 3D/as-it-is path says why, or shows it
        return None
    count = len(image)
    data = np.stack([volume_to_layer_data(v) for v in image.volumes])  # (c, k, j, i)
    kwargs = layer_kwargs(image.volumes[0], name)
    kwargs["name"] = [f"{name} [{c}]" for c in range(count)]
    kwargs["metadata"] = [
        {**layer_kwargs(v, name)["metadata"], META_CHANNEL: c, META_CHANNELS: count}
        for c, v in enumerate(image.volumes)
    ]
    kwargs["channel_axis"] = 0
    return data, kwargs, "image"


# ----------------------------------------------------------------------------- picking
def auto_pick(layers: Sequence[Any], count: int) -> list[Any] | None:
    """The default layers of a ``count``-channel model among image ``layers`` (list order):
    the last complete set of channel layers of one file (in channel order), else a 4D layer
    with ``count`` channels first, else the first ``count`` 3D layers; None when none fits."""
    groups: dict[tuple, dict[int, Any]] = {}
    for layer in layers:
        meta = layer.metadata or {}
        if layer.ndim == 3 and meta.get(META_CHANNELS) == count and META_CHANNEL in meta:
            groups.setdefault(meta.get("source"), {})[int(meta[META_CHANNEL])] = layer
    complete = [g for g in groups.values() if sorted(g) == list(range(count))]
    if complete:
        return [complete[-1][c] for c in range(count)]
    stacked = [layer for layer in layers if layer.ndim == 4 and layer.data.shape[0] == count]
    if stacked:
        return [stacked[-1]]
    volumes = [layer for layer in layers if layer.ndim == 3]
    return volumes[:count] if len(volumes) >= count else None


def channel_names(card: ModelCard | None, count: int) -> list[str]:
    """The model's channel names, else ``channel 0`` …"""
    names = list(getattr(card, "channel_names", None) or [])
    return names if len(names) == count else [f"channel {c}" for c in range(count)]


def channel_image(viewer, layers: Sequence[Any], names: Sequence[str]):
    """The picked layers as one :class:`~vafa.io.channels.Channels` image.

    Args:
        viewer: the viewer the layers must belong to.
        layers: one 3D image layer per channel (in the model's order), or one 4D layer with
            the channels on its first axis.
        names: the model's channel names.

    Returns:
        ``(image, data)``: the Channels (layout ``"4d"`` when the layers are the channels of
        one 4D file, else ``"files"``) and channel 0's float32 ``(k, j, i)`` data.

    Raises:
        ValueError: a missing or repeated layer, a bad layer, another channel count, layers on
            different grids (one line, naming the layers).
    """
    from napari_vafa._worker_widget import image_layer_volume
    from vafa.io.channels import Channels

    count = len(names)
    if len(layers) == 1 and getattr(layers[0], "ndim", 0) == 4:
        return _split_layer(viewer, layers[0], names)
    if any(layer is None for layer in layers):  # the picker gives one combo per channel
        empty = [n for n, layer in zip(names, layers, strict=True) if layer is None]
        raise ValueError(
            f"pick an image layer for channel(s) {', '.join(empty)} (the model takes "
            f"{', '.join(names)}, one layer each)"
        )
    for a in range(count):
        for b in range(a + 1, count):
            if layers[a] == layers[b]:
                raise ValueError(
                    f"channels {names[a]} and {names[b]} are the same layer "
                    f"{layers[a].name!r}: pick one layer per channel"
                )
    picked = [image_layer_volume(viewer, layer, "each channel") for layer in layers]
    volumes = [volume for volume, _ in picked]
    _check_grids(volumes, layers, names)
    return Channels(tuple(volumes), tuple(names), _layout(layers)), picked[0][1]


def _split_layer(viewer, layer, names: Sequence[str]):
    """A 4D layer ``(c, k, j, i)`` as Channels (its channels first)."""
    from napari_vafa._layers import META_HEADER, finite_float_data, layer_to_volume
    from vafa.io.channels import Channels

    if layer not in viewer.layers:
        raise ValueError(f"image layer {layer.name!r} was deleted")
    data = finite_float_data(layer)
    if data.shape[0] != len(names):
        raise ValueError(
            f"image layer {layer.name!r} has {data.shape[0]} volumes on its first axis (shape "
            f"{data.shape}) but the model takes {len(names)} channels ({', '.join(names)})"
        )
    meta = dict(layer.metadata or {})
    header = meta.get(META_HEADER)
    if header is not None and len(header.get_data_shape()) != 3:
        header = header.copy()
        header.set_data_shape(data.shape[1:][::-1])
    meta[META_HEADER] = header
    volumes = tuple(layer_to_volume(c, meta, layer.scale[1:], layer.translate[1:]) for c in data)
    return Channels(volumes, tuple(names), "4d"), np.ascontiguousarray(data[0])


def _check_grids(volumes, layers, names) -> None:
    from vafa.io.channels import grid_mismatch

    called = [f"{layer.name!r} ({name})" for layer, name in zip(layers, names, strict=True)]
    mismatch = grid_mismatch(volumes, called)
    if mismatch is not None:
        raise ValueError(
            f"channel layers on different grids: {mismatch[1]}: pick layers on one grid"
        )


def _layout(layers) -> str:
    """``"4d"`` when the layers are the channels 0, 1 … of one 4D file, else ``"files"``."""
    metas = [layer.metadata or {} for layer in layers]
    sources = {meta.get("source") for meta in metas}
    indices = [meta.get(META_CHANNEL) for meta in metas]
    one_file = len(sources) == 1 and None not in sources
    return "4d" if one_file and indices == list(range(len(layers))) else "files"


# ----------------------------------------------------------------------------- the model
def known_card(picker, cache) -> ModelCard | None:
    """The chosen model's card when it is known without loading the model (GUI thread):
    the loaded one in ``cache``, else :meth:`ModelSource.known_card
    <vafa.io.handle.ModelSource.known_card>` (None for an nnU-Net folder before its first
    load, or a missing file)."""
    try:
        spec = picker.spec()
        card = cache.card(spec)
        return card if card is not None else spec.handle().known_card()
    except Exception:  # unknown until the model loads: the run says what is wrong
        return None


# ----------------------------------------------------------------------------- results
def channel_key(key: str, channel: int) -> str:
    """The result-layer key of ``key``'s layer of ``channel`` (channel 0: ``key`` itself)."""
    return key if channel == 0 else f"{key}#{channel}"


def split_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`channel_key`: ``(key, channel)``."""
    base, _, channel = key.partition("#")
    return base, int(channel) if channel else 0


def result_keys(order: Sequence[str], *groups) -> list[str]:
    """The keys of the dictionaries ``groups`` in stacking ``order`` (by base key, then
    channel): the layers to show, update or remove."""
    keys = {key for group in groups for key in group}
    known = [key for key in keys if split_key(key)[0] in order]
    return sorted(known, key=lambda k: (order.index(split_key(k)[0]), split_key(k)[1]))


def layer_names(base: dict[str, str], names: Sequence[str] | None) -> dict[str, str]:
    """Result-layer names: ``base`` (key → name), and for a multi-channel run each
    per-channel layer named with its channel (``"adversarial T1c"``)."""
    out = dict(base)
    for c, name in enumerate(names or ()):
        for key in PER_CHANNEL:
            if key in base:
                out[channel_key(key, c)] = f"{base[key]} {name}"
    return out
