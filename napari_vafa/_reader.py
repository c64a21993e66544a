"""npe2 reader for NIfTI volumes (``.nii`` / ``.nii.gz``).

A viewer shows what napari can show: a 3D volume the library can attack becomes an Image (or
Labels) layer on its grid (:mod:`napari_vafa._layers`); a volume it cannot take is shown as it
is — NaN/Inf voxels as such, a 2D file as a 2D image, a 4D time series with its fourth axis as
the leading napari axis, ``(t, k, j, i)``. The attack and training widgets refuse those layers
with one line when Run is pressed.

A 4D file whose last axis holds channels (:func:`napari_vafa._channels.is_channel_file`: at
most :data:`~napari_vafa._channels.MAX_CHANNELS` volumes that the library does not read as a
time series; the Medical Segmentation Decathlon's BrainTumour images; also Slicer's 5D vector
files) opens as napari opens multichannel data:
one layer per channel (``channel_axis``), named ``<file> [0]``, ``<file> [1]`` …, each carrying
the grid like a 3D volume plus its channel index, so that the attack widget rebuilds the
:class:`~vafa.io.channels.Channels` image (:mod:`napari_vafa._channels`).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from napari_vafa._channels import read_channels
from napari_vafa._layers import (
    META_AFFINE,
    META_HEADER,
    META_SOURCE,
    is_label_volume,
    layer_kwargs,
    volume_to_layer_data,
)

SUFFIXES = (".nii", ".nii.gz")


def napari_get_reader(path):
    """Return :func:`read_nifti` when every path is a NIfTI file name, else None (never raises)."""
    paths = [path] if isinstance(path, (str, Path)) else path
    try:
        if not paths or not all(str(p).lower().endswith(SUFFIXES) for p in paths):
            return None
    except TypeError:
        return None
    return read_nifti


def read_nifti(path):
    """Read NIfTI file(s) into layer data tuples: Image layers, or Labels for label maps.

    Raises:
        ValueError: a file that is not readable NIfTI (napari shows the message).
    """
    from vafa.io.volume import load_volume

    paths = [path] if isinstance(path, (str, Path)) else path
    layers = []
    for p in paths:
        name = Path(p).name.removesuffix(".gz").removesuffix(".nii")
        channels = read_channels(Path(p), name)
        if channels is not None:
            layers.append(channels)
            continue
        try:
            volume = load_volume(p)
        except ValueError as err:  # not an attackable volume: show it as it is, if napari can
            shown = _as_it_is(Path(p), name)
            if shown is None:
                raise err from None
            layers.append(shown)
            continue
        if is_label_volume(volume, name):
            data = volume_to_layer_data(volume).astype("int32")
            layers.append((data, layer_kwargs(volume, name), "labels"))
        else:
            layers.append((volume_to_layer_data(volume), layer_kwargs(volume, name), "image"))
    return layers


def _as_it_is(path: Path, name: str) -> tuple | None:
    """The layer of a 2D–5D NIfTI file the library refuses (non-finite voxels, 2D, 4D), or
    None when napari cannot show it either (unreadable, 1D, empty, not numeric, 3D and finite:
    the library's own error stands).

    Axes after the third of length 1 are dropped; the data is shown with every axis reversed,
    ``(…, t, k, j, i)`` (``(j, i)`` for 2D); spatial scales are the affine's voxel sizes,
    further axes take the header's zooms (1 when unset).
    """
    import zlib

    import nibabel as nib

    try:
        img = nib.load(path)
        dtype = img.get_data_dtype()
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            return None
        data = np.asarray(img.get_fdata(dtype=np.float32))
        zooms = [float(z) for z in img.header.get_zooms()]
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error):
        return None  # unreadable for napari too: the library's message stands
    keep = [axis for axis, n in enumerate(data.shape) if axis < 3 or n != 1]
    data = data.reshape([data.shape[axis] for axis in keep])
    if not 2 <= data.ndim <= 5 or 0 in data.shape:
        return None
    if data.ndim == 3 and np.all(np.isfinite(data)):
        return None
    spatial = min(data.ndim, 3)
    spacing = np.linalg.norm(img.affine[:3, :spatial], axis=0)
    extra = [zooms[axis] if axis < len(zooms) and zooms[axis] > 0 else 1.0 for axis in keep[3:]]
    kwargs = {
        "name": name,
        "scale": tuple(float(s) for s in [*spacing, *extra][::-1]),
        "metadata": {
            META_AFFINE: np.array(img.affine),
            META_HEADER: img.header.copy(),
            META_SOURCE: str(path),
        },
    }
    labels = is_label_volume(SimpleNamespace(array=data, original_dtype=dtype), name)
    data = np.ascontiguousarray(data.T)  # every axis reversed: (…, t, k, j, i)
    return (data.astype("int32"), kwargs, "labels") if labels else (data, kwargs, "image")
