"""npe2 writers: image and labels layers to NIfTI (``.nii.gz``) on the layer's original grid."""

from __future__ import annotations

import numpy as np

from napari_vafa._layers import layer_to_volume


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write an image layer as float32 NIfTI; refuses to overwrite the file it was read from."""
    return [_write(path, data, meta, np.float32)]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write a labels layer as an integer NIfTI (uint8 when the labels fit, else int32)."""
    values = np.asarray(data)
    dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32
    return [_write(path, values, meta, dtype)]


def _write(path: str, data, meta: dict, dtype) -> str:
    from vafa.io.volume import save_volume

    if not str(path).lower().endswith((".nii", ".nii.gz")):
        path = f"{path}.nii.gz"
    metadata = meta.get("metadata") or {}
    volume = layer_to_volume(data, metadata, meta.get("scale"), meta.get("translate"))
    return str(save_volume(volume, path, overwrite=True, dtype=dtype))  # never over its source
