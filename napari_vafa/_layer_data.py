"""The data of the attack widget's result layers, made off the GUI thread: volumes in napari's
``(k, j, i)`` order and file units, DCT pictures, the zeroed-coefficient mask, and the contrast
limits they are shown with."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vafa.run.pipeline import AttackOutcome

__all__ = [
    "display_block_size",
    "display_limits",
    "result_layer_data",
    "seen_by_model",
    "window_interior",
]


def result_layer_data(
    outcome: AttackOutcome, block_size: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Data of every result layer (keys of :data:`napari_vafa._worker.RESULT_LAYERS`) in napari's ``(k, j, i)``.

    Volumes are on the image's grid (``resample_back=True``); a multi-channel image's image
    layers once per channel (:func:`napari_vafa._channels.channel_key`), the predictions once.
    The DCT pictures use ``block_size``; the zeroed-coefficient mask needs the attack's own
    grid and is left out (with a note) when the image was resampled for the model.
    """
    from napari_vafa._channels import channel_key
    from vafa.io.channels import channel_volumes
    from vafa.report.figures import channel_dct_pictures

    model_input = outcome.model_input
    label_dtype = _label_dtype(outcome)
    layers = {
        "clean_prediction": napari_order(outcome.clean_prediction.array, label_dtype),
        "adversarial_prediction": napari_order(outcome.adversarial_prediction.array, label_dtype),
    }
    channels = zip(
        channel_volumes(outcome.adversarial),
        channel_volumes(outcome.perturbation),
        channel_dct_pictures(outcome, block_size),
        strict=True,
    )
    for c, (adversarial, perturbation, (dct_clean, dct_adversarial)) in enumerate(channels):
        layers[channel_key("adversarial", c)] = napari_order(adversarial.array, np.float32)
        layers[channel_key("perturbation", c)] = napari_order(perturbation.array, np.float32)
        layers[channel_key("dct_clean", c)] = napari_order(dct_clean, np.float32)
        layers[channel_key("dct_adversarial", c)] = napari_order(dct_adversarial, np.float32)
    notes: list[str] = []
    if outcome.q_table is None:
        return layers, notes
    for c, q in enumerate(channel_volumes(outcome.q_table)):
        layers[channel_key("q_table", c)] = napari_order(q.array, np.float32)
        if not model_input.resampled:
            layers[channel_key("zeroed", c)] = napari_order(_zeroed(model_input, q.array, c, block_size),
                                                    np.uint8)  # fmt: skip
    band = (outcome.settings.get("attack") or {}).get("bands", "all")
    if band != "all":
        notes.append(
            f"quantization table: only the {band} DCT band was quantized; the other "
            "coefficients (q = 0) are shown grey"
        )
    if model_input.resampled:
        notes.append("zeroed-coefficient mask not shown: the image was resampled")
    return layers, notes


def napari_order(array: np.ndarray, dtype) -> np.ndarray:
    """A contiguous ``(k, j, i)`` copy (napari's order) of an ``(i, j, k)`` array in
    ``dtype`` (None: its own)."""
    return np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=dtype)


def display_limits(
    layers: dict[str, np.ndarray], seen: np.ndarray | None = None
) -> dict[str, tuple[float, float]]:
    """Contrast limits of the image result layers (computed here, off the GUI thread).

    Multi-channel results (keys ``"perturbation#1"`` …, :func:`napari_vafa._channels.channel_key`,
    ``seen`` then ``(c, k, j, i)``) get limits per channel, each in its own units:

    * perturbation: centred on 0, ±(99.5th percentile of |change| over the changed voxels
      inside the model's intensity window, ``seen`` (``(k, j, i)`` bool; None: all)): voxels
      outside it (air, dense bone) that the attack moved into the window map back to changes of
      hundreds of HU and would wash out what the model actually sees; ``perturbation_range``
      is ±max;
    * DCT pictures: ``[0, 99.9th percentile]`` of the clean picture, shared by both;
    * quantization table: its minimum and maximum; a minimum of 0 (coefficients not
      quantized: outside a band-limited VAFA's band, or tiles never attacked) is drawn grey
      (:func:`napari_vafa._result_layers.q_table_colormap`).
    """
    from napari_vafa._channels import channel_key, split_key

    limits: dict[str, tuple[float, float]] = {}
    for key in layers:
        base, c = split_key(key)
        if base == "perturbation":
            mask = seen if seen is None or seen.ndim == 3 else seen[c]
            limits[key], limits[f"{key}_range"] = _perturbation_limits(layers[key], mask)
        elif base == "dct_clean":
            high = float(np.percentile(layers[key], 99.9)) or 1.0
            limits[key] = limits[channel_key("dct_adversarial", c)] = (0.0, high)
        elif base == "q_table":
            low, high = float(layers[key].min()), float(layers[key].max())
            limits[key] = (low, max(high, low + 1.0))
    return limits


def _perturbation_limits(perturbation: np.ndarray, seen: np.ndarray | None):
    """``(shown, range)`` of a perturbation layer (see :func:`display_limits`)."""
    change = np.abs(perturbation)
    inside = change[(change != 0) & seen] if seen is not None else np.empty(0)
    change = change[change != 0]
    if not change.size:
        return (-1.0, 1.0), (-1.0, 1.0)
    high = float(change.max())
    limit = float(np.percentile(inside if inside.size else change, 99.5)) or high
    return (-limit, limit), (-high, high)


def _zeroed(model_input, q: np.ndarray, channel: int, block_size) -> np.ndarray:
    """Where ``q`` (channel ``channel``'s table) sends a DCT coefficient to zero."""
    import torch

    from vafa.run.tiling import quantized_to_zero_layout

    table = torch.from_numpy(np.ascontiguousarray(q))[None, None]
    tensor = model_input.tensor[:, channel : channel + 1]
    mask = quantized_to_zero_layout(tensor, table, block_size, model_input.card.roi_size)
    return mask[0, 0].numpy()


def _label_dtype(outcome: AttackOutcome):
    high = max(outcome.clean_prediction.array.max(), outcome.adversarial_prediction.array.max())
    return np.uint8 if high <= 255 else np.int32


def display_block_size(outcome: AttackOutcome) -> tuple[int, ...]:
    """Block size of the DCT pictures: the attack's own, else the library's display block
    (:data:`vafa.report.figures.DISPLAY_BLOCK`)."""
    from vafa.report.figures import DISPLAY_BLOCK

    block = (outcome.settings.get("attack") or {}).get("block_size")
    if block is None:
        return (DISPLAY_BLOCK,) * 3
    if isinstance(block, int):
        return (block,) * 3
    return tuple(int(b) for b in block)


def seen_by_model(outcome: AttackOutcome) -> np.ndarray | None:
    """``(k, j, i)`` mask of the voxels inside the model's intensity window (``(c, k, j, i)``
    for a multi-channel image; None: the result is on another grid than the clean image)."""
    source = outcome.model_input.source
    if source.shape != outcome.perturbation.shape:
        return None
    inside = window_interior(outcome.model_input.mapping, source.array)
    return np.transpose(inside, (0, 3, 2, 1) if inside.ndim == 4 else (2, 1, 0))


def window_interior(mapping, clean: np.ndarray) -> np.ndarray:
    """Voxels of ``clean`` (file units) that the intensity ``mapping`` puts strictly inside
    (0, 1): the ones whose change the model sees as it is."""
    mapped = mapping.forward(clean)
    return (mapped > 0) & (mapped < 1)
