"""Multi-channel images: co-registered 3D volumes in a model's channel order.

Many models take several co-registered channels: BraTS (T1c, T1, T2, FLAIR), HECKTOR (PET +
CT), prostate (T2 + ADC). Such an image is stored either as

* one 4D NIfTI with the channels on its last axis (``"4d"``; the Medical Segmentation
  Decathlon's BrainTumour task),
* one 5D NIfTI ``(I, J, K, 1, C)`` with the ``vector`` intent (``"vector"``: how 3D Slicer
  writes a vector volume for a CLI module, and the only multi-channel file it reads back as one
  volume), or
* one 3D file per channel, in the model's channel order (``"files"``; nnU-Net's
  ``case_0000.nii.gz``, ``case_0001.nii.gz`` …, the file lists of MONAI's BraTS bundle).

A :class:`Channels` holds the channels as :class:`~vafa.io.volume.Volume` objects on one grid
and remembers its layout, so that results (the adversarial image, the perturbation) are written
the way the input came: one 4D or 5D file, or one file per channel named by
:func:`channel_paths`.
It offers the grid attributes of a Volume (``shape``, ``affine``, ``spacing``, ``orientation``,
``header``, ``source``, ``with_array``) with ``array`` channel-first ``[C, I, J, K]`` (the
layout of MONAI and torch), so model-space code treats one and several channels alike.

:func:`load_image` is the one entry point of every face: one path or several, checked against
the model card's channel count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from vafa.io.volume import (
    AFFINE_ATOL,
    READ_ERRORS,
    Volume,
    check_suffix,
    load_volume,
    save_volume,
    spacing_text,
)

__all__ = [
    "LAYOUTS",
    "Channels",
    "channel_paths",
    "channel_volumes",
    "channels_text",
    "each_channel",
    "grid_mismatch",
    "load_image",
    "save_image",
]

#: How a multi-channel image is stored: one 4D NIfTI, one 5D vector NIfTI, one 3D file per channel.
LAYOUTS = ("4d", "vector", "files")
#: NIfTI time units: a 4th axis with one of these (or none) and a step other than 0 or 1 is a
#: time series.
_TIME_UNITS = ("sec", "msec", "usec")


@dataclass(eq=False)
class Channels:
    """A multi-channel image: 3D volumes on one grid, in the model's channel order.

    Attributes:
        volumes: one :class:`~vafa.io.volume.Volume` per channel (same shape and affine).
        names: channel names (e.g. ``("T1c", "T1", "T2", "FLAIR")``), or None.
        layout: ``"4d"`` (one 4D NIfTI, channels last), ``"vector"`` (one 5D NIfTI
            ``(I, J, K, 1, C)``, vector intent) or ``"files"`` (a file per channel).

    Raises:
        TypeError: a channel is not a Volume.
        ValueError: no channel, channels on different grids (both named), a bad layout or a
            name count that differs from the channel count.
    """

    volumes: tuple[Volume, ...]
    names: tuple[str, ...] | None = None
    layout: str = "files"

    def __post_init__(self) -> None:
        self.volumes = tuple(self.volumes)
        if not self.volumes:
            raise ValueError("a multi-channel image needs at least one channel")
        for v in self.volumes:
            if not isinstance(v, Volume):
                raise TypeError(f"each channel must be a Volume, got {type(v).__name__}")
        if self.names is not None:
            self.names = tuple(self.names)
            if len(self.names) != len(self.volumes):
                raise ValueError(
                    f"{len(self.names)} channel names for {len(self.volumes)} channels"
                )
        called = [  # the file, else the channel's name or number
            str(v.source) if v.source is not None
            else self.names[i] if self.names is not None else f"channel {i + 1}"
            for i, v in enumerate(self.volumes)
        ]  # fmt: skip
        mismatch = grid_mismatch(self.volumes, called)
        if mismatch is not None:
            raise ValueError(
                f"channels on different grids: {mismatch[1]}: resample them onto one grid"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")

    def __len__(self) -> int:
        return len(self.volumes)

    def __repr__(self) -> str:
        names = "" if self.names is None else f", names={list(self.names)}"
        return (
            f"Channels({len(self)} x {self.shape}, layout={self.layout!r}{names}, "
            f"source={self.source})"
        )

    @property
    def array(self) -> np.ndarray:
        """float32 ``[C, I, J, K]`` (a new stacked array)."""
        return np.stack([v.array for v in self.volumes])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape ``(I, J, K)``."""
        return self.volumes[0].shape

    @property
    def affine(self) -> np.ndarray:
        return self.volumes[0].affine

    @property
    def header(self) -> nib.Nifti1Header | None:
        return self.volumes[0].header

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.volumes[0].spacing

    @property
    def orientation(self) -> str:
        return self.volumes[0].orientation

    @property
    def original_dtype(self) -> np.dtype:
        return self.volumes[0].original_dtype

    @property
    def source(self) -> Path | None:
        """The 4D file, or the first channel's file (None for derived images)."""
        return self.volumes[0].source

    @property
    def sources(self) -> tuple[Path, ...]:
        """Every file the image was read from (once each)."""
        return tuple(dict.fromkeys(v.source for v in self.volumes if v.source is not None))

    def map(self, fn: Callable[[Volume], Volume]) -> Channels:
        """``fn`` applied to each channel (e.g. a resampling); names and layout kept."""
        return Channels(tuple(fn(v) for v in self.volumes), self.names, self.layout)

    def with_array(self, array: np.ndarray, dtype: Any = None) -> Channels:
        """A new image on the same grid from ``array`` ``[C, I, J, K]`` (``source`` None).

        Raises:
            ValueError: the shape differs (both named).
        """
        want = (len(self), *self.shape)
        if getattr(array, "shape", None) != want:
            got = getattr(array, "shape", type(array).__name__)
            raise ValueError(f"array must have the image's shape {want}, got {got}")
        return Channels(
            tuple(v.with_array(a, dtype) for v, a in zip(self.volumes, array, strict=True)),
            self.names,
            self.layout,
        )


def channel_volumes(image: Volume | Channels) -> tuple[Volume, ...]:
    """The channels of an image as Volumes (a Volume: itself, alone)."""
    return image.volumes if isinstance(image, Channels) else (image,)


def each_channel(image: Volume | Channels, fn: Callable[[Volume], Volume]) -> Volume | Channels:
    """``fn`` on a Volume, or on each channel of a Channels (names and layout kept); an image
    ``fn`` leaves unchanged (the same objects back) is returned itself."""
    if not isinstance(image, Channels):
        return fn(image)
    out = image.map(fn)
    return image if all(a is b for a, b in zip(out.volumes, image.volumes, strict=True)) else out


def load_image(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    channels: int = 1,
    names: Sequence[str] | None = None,
) -> Volume | Channels:
    """Load an image for a model that takes ``channels`` input channels.

    Args:
        paths: one ``.nii``/``.nii.gz`` file (3D, or 4D with the channels on its last axis) or
            one 3D file per channel, in the model's channel order.
        channels: the model's input channel count (``card.in_channels``).
        names: the model's channel names (``card.channel_names``), named in errors and kept.

    Returns:
        A :class:`~vafa.io.volume.Volume` for a one-channel model given one 3D file (as
        :func:`~vafa.io.volume.load_volume`), else a :class:`Channels`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unreadable files, a channel count that differs from the model's (what
            was read as channels is said: which axis of which file), a 4D file whose last axis
            its header marks as time, channels on different grids.
    """
    listed = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not listed:
        raise ValueError("no image file given")
    want = channels_text(channels, names)
    if len(listed) > 1:
        volumes = tuple(_load_3d(p, want) for p in listed)
        if len(volumes) != channels:
            raise ValueError(f"got {len(volumes)} channel files but {want}")
        return Channels(volumes, _names(names, channels), "files")
    path = listed[0]
    img = _open(path)
    if img.ndim <= 3 or all(n == 1 for n in img.shape[3:]):
        if channels != 1:
            raise ValueError(
                f"{path} is one 3D volume but {want}: give one file per channel in that "
                "order, or one 4D file with the channels on its last axis"
            )
        return load_volume(path)
    return _split_4d(path, img, channels, want, names)


def channel_paths(path: str | os.PathLike, count: int) -> list[Path]:
    """The files of a ``"files"`` image written at ``path``: ``stem_0000.nii.gz``,
    ``stem_0001.nii.gz`` … (nnU-Net's channel naming), beside ``path``."""
    path = Path(path)
    check_suffix(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    stem = path.name[: -len(suffix)]
    return [path.with_name(f"{stem}_{i:04d}{suffix}") for i in range(count)]


def save_image(
    image: Volume | Channels,
    path: str | os.PathLike,
    overwrite: bool = False,
    dtype: Any = None,
    protect: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """Write an image the way its input came: a Volume or a ``"4d"`` image to ``path``, a
    ``"vector"`` image as a 5D ``(I, J, K, 1, C)`` NIfTI with the vector intent (what 3D Slicer
    reads back as a vector volume), a ``"files"`` image to :func:`channel_paths` (each file
    atomically; arguments as :func:`~vafa.io.volume.save_volume`). Returns the written
    paths."""
    if isinstance(image, Volume):
        return [save_volume(image, path, overwrite, dtype, protect)]
    protect = [*protect, *image.sources]
    if image.layout == "files":
        targets = channel_paths(path, len(image))
        return [
            save_volume(v, p, overwrite, dtype, protect)
            for v, p in zip(image.volumes, targets, strict=True)
        ]
    stacked = _channels_last(image)
    return [save_volume(stacked, path, overwrite, dtype, protect)]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Stacked:
    """What :func:`~vafa.io.volume.save_volume` reads: a 4D or 5D array with a grid and header."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None
    source: Path | None = None


def _channels_last(image: Channels) -> _Stacked:
    """``[I, J, K, C]`` (``"4d"``) or ``[I, J, K, 1, C]`` with the vector intent (``"vector"``)."""
    header = None if image.header is None else image.header.copy()
    array = np.moveaxis(image.array, 0, -1)
    if image.layout != "vector":
        return _Stacked(array, image.affine, header)
    if header is None:
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm")
    header.set_intent("vector")
    return _Stacked(array[:, :, :, None, :], image.affine, header)


def channels_text(channels: int, names: Sequence[str] | None) -> str:
    """What a model takes, as messages say it: ``the model takes 2 channels (CT, PET)``."""
    listed = f" ({', '.join(names)})" if names else ""
    return f"the model takes {channels} channel{'s' if channels != 1 else ''}{listed}"


def _names(names: Sequence[str] | None, count: int) -> tuple[str, ...] | None:
    return None if names is None or len(names) != count else tuple(names)


def _open(path: Path) -> nib.Nifti1Image:
    check_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        img = nib.load(path)
    except READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable NIfTI file: {err}") from err
    if not isinstance(img, nib.Nifti1Image):
        raise ValueError(f"{path} must be a NIfTI image, got {type(img).__name__}")
    return img


def _load_3d(path: Path, want: str) -> Volume:
    img = _open(path)
    if img.ndim > 3 and any(n != 1 for n in img.shape[3:]):
        raise ValueError(
            f"{path} has shape {img.shape}: with one file per channel each must be 3D ({want})"
        )
    return load_volume(path)


def _split_4d(path: Path, img: nib.Nifti1Image, channels: int, want: str, names) -> Channels:
    shape = tuple(int(n) for n in img.shape)
    if len(shape) > 5 or (len(shape) == 5 and shape[3] != 1):
        raise ValueError(f"{path} has shape {shape}: vafa reads channels from a 4D file "
                         "(I, J, K, C) or a 5D vector file (I, J, K, 1, C) only")  # fmt: skip
    axis, count = len(shape), shape[-1]  # 1-based axis, as NIfTI numbers its dimensions
    step = _time_step(img) if len(shape) == 4 else None  # 5D: axis 4, the time axis, is 1 long
    if step is not None:
        raise ValueError(
            f"{path}: its header marks axis {axis} ({count} volumes) as time (step {step}), "
            f"not channels; {want}"
        )
    if count != channels:
        raise ValueError(
            f"{path}: read {count} channels on its last axis (axis {axis}, shape {shape}) "
            f"but {want}"
        )
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(*shape[:3], count)
    except READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable NIfTI file (corrupt data): {err}") from err
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise ValueError(f"{path} must contain only finite values, got {bad} NaN/Inf voxel(s)")
    dtype = img.get_data_dtype()
    volumes = tuple(
        Volume(data[..., c], img.affine, _header_3d(img), path, dtype) for c in range(count)
    )
    return Channels(volumes, _names(names, count), "vector" if len(shape) == 5 else "4d")


def _header_3d(img: nib.Nifti1Image) -> nib.Nifti1Header:
    header = img.header.copy()
    header.set_data_shape(img.shape[:3])
    return header


def _time_step(img: nib.Nifti1Image) -> str | None:
    """``"2 sec"`` when the header gives the 4th axis a real step (not 0 or 1) in a time unit
    or in no unit (a repetition time whose unit was not written), else None."""
    unit = img.header.get_xyzt_units()[1]
    step = float(img.header["pixdim"][4])
    if unit in (*_TIME_UNITS, "unknown") and step not in (0.0, 1.0) and np.isfinite(step):
        return f"{step:g} {unit}" if unit != "unknown" else f"{step:g}"
    return None


def grid_mismatch(volumes: Sequence[Volume], names: Sequence[str]) -> tuple[int, str] | None:
    """The first volume off the first one's grid (shape and affine), as ``(index, words)``
    naming both, or None when all share it. ``names``: how to call each volume in the words."""
    first = volumes[0]
    for index, v in enumerate(volumes[1:], 1):
        if v.shape == first.shape and np.allclose(v.affine, first.affine, atol=AFFINE_ATOL):
            continue
        if v.shape == first.shape and np.allclose(v.spacing, first.spacing, atol=AFFINE_ATOL):
            return index, (
                f"{names[index]} has the shape and spacing of {names[0]} but another position "
                "or orientation"
            )
        return index, (
            f"{names[0]} has shape {first.shape}, spacing {spacing_text(first.spacing)}; "
            f"{names[index]} has shape {v.shape}, spacing {spacing_text(v.spacing)}"
        )
    return None
