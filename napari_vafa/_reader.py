"""npe2 reader for NIfTI volumes (``.nii`` / ``.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

from napari_vafa._layers import is_label_volume, layer_kwargs, volume_to_layer_data

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
    """Read NIfTI file(s) into layer data tuples: Image layers, or Labels for label maps."""
    from vafa.io.volume import load_volume

    paths = [path] if isinstance(path, (str, Path)) else path
    layers = []
    for p in paths:
        volume = load_volume(p)
        name = Path(p).name.removesuffix(".gz").removesuffix(".nii")
        if is_label_volume(volume, name):
            data = volume_to_layer_data(volume).astype("int32")
            layers.append((data, layer_kwargs(volume, name), "labels"))
        else:
            layers.append((volume_to_layer_data(volume), layer_kwargs(volume, name), "image"))
    return layers
