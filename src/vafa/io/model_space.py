"""File units ↔ model space: a volume prepared for the model a card describes.

* :func:`to_model_space` turns a :class:`~vafa.io.volume.Volume` (e.g. CT in HU) or a
  multi-channel :class:`~vafa.io.channels.Channels` image into the model's input:
  resampled/reoriented to the card's spacing and orientation (when they differ), mapped to
  [0, 1] by the card's intensity mapping fitted on each channel — a :class:`ModelInput`.
* :func:`labels_to_model_space` brings a label map onto the same grid.
* :func:`from_model_space` maps a [0, 1] model-space tensor back to file units, on the model
  grid or on the input's grid. Voxels the tensor leaves unchanged get their exact input values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from vafa.io.channels import Channels, channel_volumes, channels_text, each_channel
from vafa.io.intensity import ChannelWindows, CTWindow, fit_windows
from vafa.io.models import ModelCard
from vafa.io.volume import (
    AFFINE_ATOL,
    Volume,
    load_labels,
    needs_resampling,
    resample_like,
    resample_to,
    spacing_text,
)

__all__ = [
    "ModelInput",
    "adversarial_model_input",
    "back_to_source",
    "check_label_classes",
    "from_model_space",
    "grid_differs",
    "labels_to_model_space",
    "load_model_labels",
    "to_model_space",
    "units_on_grid",
]


@dataclass(eq=False)
class ModelInput:
    """A volume prepared for a model (see :func:`to_model_space`).

    Attributes:
        tensor: ``[1, C, H, W, D]`` float32 CPU tensor in [0, 1] on the model grid.
        grid: the model-grid image in file units (e.g. HU); ``source`` itself when no
            resampling was needed.
        source: the input image (a Volume, or Channels for a multi-channel model).
        mapping: the intensity window fitted on ``grid`` (a :class:`~vafa.io.intensity.CTWindow`;
            for percentile scaling, the window of this volume's percentiles); for Channels, a
            :class:`~vafa.io.intensity.ChannelWindows` (one window per channel).
        resampled: whether ``grid`` differs from ``source`` (spacing or orientation).
        card: the model card used.
    """

    tensor: torch.Tensor
    grid: Volume | Channels
    source: Volume | Channels
    mapping: CTWindow | ChannelWindows
    resampled: bool
    card: ModelCard

    @property
    def channels(self) -> bool:
        """Whether the image has a channel axis (a :class:`~vafa.io.channels.Channels`)."""
        return isinstance(self.grid, Channels)

    def batch(self, array: np.ndarray) -> torch.Tensor:
        """``[H, W, D]`` (or ``[C, H, W, D]`` for Channels) → ``[1, C, H, W, D]`` tensor."""
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor[None] if self.channels else tensor[None, None]

    def unbatch(self, tensor: torch.Tensor) -> np.ndarray:
        """``[1, C, H, W, D]`` → float32 ``[H, W, D]`` (or ``[C, H, W, D]`` for Channels)."""
        arr = tensor.detach().cpu().numpy()
        return np.asarray(arr[0] if self.channels else arr[0, 0], dtype=np.float32)


def to_model_space(volume: Volume, card: ModelCard, *, resample: bool = True) -> ModelInput:
    """Prepare a volume for the model a card describes.

    Args:
        volume: image in file units (e.g. HU): a Volume for a one-channel model, a
            :class:`~vafa.io.channels.Channels` with ``card.in_channels`` channels otherwise.
        card: the model card; ``spacing``/``orientation`` (if set) give the model grid and
            ``intensity`` the mapping to [0, 1].
        resample: reorient/resample (trilinear) to the card's grid when it differs; False uses
            the volume as it is (with a warning when its spacing or orientation differ).

    Returns:
        :class:`ModelInput`.

    Raises:
        TypeError: ``volume`` is not a Volume or Channels, or ``card`` not a ModelCard.
        ValueError: the channel count differs from the card's, or the intensity mapping
            cannot be fitted (e.g. percentile scaling of a constant volume).
    """
    if not isinstance(volume, (Volume, Channels)):
        raise TypeError(
            f"volume must be a vafa.io.volume.Volume or vafa.io.channels.Channels, got "
            f"{type(volume).__name__}"
        )
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a vafa.io.models.ModelCard, got {type(card).__name__}")
    count = len(volume) if isinstance(volume, Channels) else 1
    if count != card.in_channels:
        raise ValueError(
            f"{channels_text(card.in_channels, card.channel_names)}, the image has {count}"
        )
    grid = volume
    if resample:
        grid = _resampled(volume, card)
    elif grid_differs(volume, card):
        warnings.warn(
            f"volume spacing {spacing_text(volume.spacing)} / orientation {volume.orientation} "
            f"differ from the card's {card.spacing} / {card.orientation}; resample=False uses "
            "the volume as it is",
            UserWarning,
            stacklevel=2,
        )
    channels = isinstance(grid, Channels)
    array = grid.array
    mapping = fit_windows(card.intensity, array, channels)
    tensor = torch.from_numpy(mapping.forward(array))
    tensor = tensor[None] if channels else tensor[None, None]
    return ModelInput(tensor, grid, volume, mapping, grid is not volume, card)


def labels_to_model_space(labels: Volume, model_input: ModelInput) -> torch.Tensor:
    """Bring a label map of the input volume onto the model grid.

    Args:
        labels: class-index map on ``model_input.source``'s grid (same shape and affine).
        model_input: from :func:`to_model_space`.

    Returns:
        ``[1, 1, H, W, D]`` int64 CPU tensor on the model grid (nearest-neighbour resampling).

    Raises:
        TypeError: ``labels`` is not a Volume.
        ValueError: another grid, negative or non-integer values, or a class index
            ``>= card.out_channels`` (the file is named).
    """
    if not isinstance(labels, Volume):
        raise TypeError(f"labels must be a vafa.io.volume.Volume, got {type(labels).__name__}")
    name = str(labels.source) if labels.source is not None else "labels"
    card = model_input.card
    _check_on_image_grid(labels, model_input, name)
    check_label_classes(labels, card, name)
    labels = _onto_model_grid(labels, model_input, name, mode="nearest")
    return torch.from_numpy(np.rint(labels.array).astype(np.int64))[None, None]


def from_model_space(
    tensor01: torch.Tensor | np.ndarray, model_input: ModelInput, *, resample_back: bool = False
) -> Volume:
    """Map a model-space volume (e.g. adversarial, in [0, 1]) back to file units.

    The window's inverse is applied with the model-grid volume's original values
    (:meth:`~vafa.io.intensity.CTWindow.inverse`); voxels equal to the model input keep their
    exact original value, so ``from_model_space(model_input.tensor, model_input)`` returns the
    model-grid volume bit for bit, clipped voxels included.

    Args:
        tensor01: ``[1, C, H, W, D]`` or ``[H, W, D]`` (``[C, H, W, D]``) on the model grid.
        model_input: from :func:`to_model_space`.
        resample_back: return the result on the input's grid: the difference to the model-grid
            volume is resampled (trilinear) and added to the input, so unchanged voxels keep
            the input's exact values and resampling blur is not counted as a change.

    Returns:
        A float32 :class:`~vafa.io.volume.Volume` with the model grid's (or the input's) affine.

    Raises:
        ValueError: wrong shape.
    """
    shape = model_input.grid.shape
    if model_input.channels:
        shape = (len(model_input.grid), *shape)
    on_grid = units_on_grid(_as_grid_array(tensor01, shape), model_input)
    return back_to_source(on_grid, model_input) if resample_back else on_grid


def units_on_grid(arr: np.ndarray, model_input: ModelInput) -> Volume:
    """[0, 1] model-grid array (``[H, W, D]``, or ``[C, H, W, D]`` for Channels) → file
    units on the model grid (unchanged voxels exact)."""
    grid = model_input.grid
    original = grid.array
    units = model_input.mapping.inverse(arr, original)
    same = arr == model_input.unbatch(model_input.tensor)
    units[same] = original[same]
    return grid.with_array(units)


def back_to_source(on_grid: Volume, model_input: ModelInput) -> Volume:
    """Model-grid volume in file units → input grid: the input plus the resampled change."""
    if not model_input.resampled:
        return on_grid
    source = model_input.source
    change = on_grid.with_array(on_grid.array - model_input.grid.array)
    delta = each_channel(change, lambda v: resample_like(v, channel_volumes(source)[0]))
    return source.with_array(source.array + delta.array)


def adversarial_model_input(
    adversarial: Volume | Channels, model_input: ModelInput
) -> tuple[Volume | Channels, torch.Tensor]:
    """An adversarial version of ``model_input.source`` (same grid, file units) in the clean
    image's model space: ``(model-grid image in file units, [1, C, H, W, D] tensor in [0, 1])``
    (resampled like the clean image; the clean image's fitted intensity windows).

    Raises:
        TypeError: not an image like the clean one (Volume, or Channels of as many channels).
        ValueError: another grid (the image's shape or affine named).
    """
    image = model_input.source
    if type(adversarial) is not type(image) or len(channel_volumes(adversarial)) != len(
        channel_volumes(image)
    ):
        raise TypeError(
            f"adversarial must be an image like the clean one ({image!r}), got {adversarial!r}"
        )
    _check_on_image_grid(adversarial, model_input, "adversarial")
    adversarial = _onto_model_grid(adversarial, model_input, "adversarial")
    array = adversarial.array
    return model_input.grid.with_array(array), model_input.batch(model_input.mapping.forward(array))


def _check_on_image_grid(image: Volume | Channels, model_input: ModelInput, name: str) -> None:
    """ValueError (naming ``name``) unless ``image`` is on the clean image's grid (shape, and
    affine within :data:`~vafa.io.volume.AFFINE_ATOL`)."""
    source = model_input.source
    if image.shape != source.shape:
        raise ValueError(
            f"{name} is not on the image's grid: it has shape {image.shape}, the image "
            f"{source.shape}"
        )
    if not np.allclose(image.affine, source.affine, atol=AFFINE_ATOL):
        raise ValueError(
            f"{name} is not on the image's grid: its affine is {image.affine.tolist()}, the "
            f"image's {source.affine.tolist()}"
        )


def _resampled(image: Volume | Channels, card: ModelCard, mode: str = "bilinear"):
    """``image`` (every channel) resampled to the card's spacing and orientation."""
    return each_channel(image, lambda v: resample_to(v, card.spacing, card.orientation, mode))


def _onto_model_grid(image, model_input: ModelInput, name: str, mode: str = "bilinear"):
    """``image`` (on the clean image's grid) resampled as the clean image was (``mode``:
    ``"nearest"`` for labels); ValueError if that does not land on the model grid."""
    if not model_input.resampled:
        return image
    grid = model_input.grid
    image = _resampled(image, model_input.card, mode)
    if image.shape != grid.shape or not np.allclose(image.affine, grid.affine, atol=AFFINE_ATOL):
        raise ValueError(f"{name} resampled to shape {image.shape}, model grid {grid.shape}")
    return image


def _as_grid_array(value, shape: tuple[int, ...], name: str = "tensor01") -> np.ndarray:
    """``[1, 1, H, W, D]``/``[H, W, D]`` (or ``[1, C, H, W, D]``/``[C, H, W, D]``) → numpy."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value)}")
    batched = (1, *shape) if len(shape) == 4 else (1, 1, *shape)
    if value.shape == batched:
        value = value.reshape(shape)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {list(batched)} or {shape}, got {value.shape}")
    return np.asarray(value, dtype=np.float32)


def grid_differs(volume: Volume | Channels, card: ModelCard) -> bool:
    """Whether :func:`to_model_space` resamples ``volume`` for the card's model
    (:func:`~vafa.io.volume.needs_resampling` to the card's spacing and orientation)."""
    return needs_resampling(volume, card.spacing, card.orientation)


def load_model_labels(path, image: Volume | Channels, card: ModelCard) -> Volume:
    """A label map file of ``image`` (same grid), checked against what the card's model predicts
    (:func:`check_label_classes`: classes below ``out_channels``, or the values its sigmoid
    regions cover)."""
    labels = load_labels(path, like=image)
    check_label_classes(labels, card, str(labels.source))
    return labels


def check_label_classes(labels: Volume, card: ModelCard, name: str) -> None:
    """Labels must be non-negative whole numbers below ``card.out_channels`` (``name`` in errors)."""
    arr = labels.array
    if float(arr.min()) < 0 or not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{name} must hold non-negative integer class indices")
    heads = card.heads()
    if heads.sigmoid:
        stray = heads.stray_labels(np.unique(arr).tolist())
        if stray:
            raise ValueError(
                f"{name} holds value(s) {stray} that no output region of the model covers "
                f"(regions {heads.region_dict()})"
            )
        return
    high = int(arr.max())
    if high >= card.out_channels:
        raise ValueError(
            f"{name} holds class {high} but the model ({card.architecture}) predicts "
            f"{card.out_channels} classes (0..{card.out_channels - 1})"
        )
