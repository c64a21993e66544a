"""Conversions between :class:`vafa.io.volume.Volume` and napari layer data.

napari shows a NIfTI volume as ``(k, j, i)`` — the axial slider first — with
``scale = (dz, dy, dx)``. The NIfTI affine and header travel in the layer's ``metadata`` so that
derived layers and the writer put everything back on exactly the input's grid:
``file → layer → file`` gives the identical array and affine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vafa.io.volume import Volume

META_AFFINE = "affine"
META_HEADER = "nifti_header"
META_SOURCE = "source"
LABEL_NAME_HINTS = ("label", "seg", "mask")
MAX_LABEL_VALUES = 256


def volume_to_layer_data(volume: Volume) -> np.ndarray:
    """``(i, j, k)`` array → ``(k, j, i)`` layer data (a view)."""
    return np.transpose(volume.array, (2, 1, 0))


def layer_kwargs(volume: Volume, name: str, **extra: Any) -> dict[str, Any]:
    """Layer keyword arguments carrying the grid: name, scale ``(dz, dy, dx)``, metadata."""
    metadata = {
        META_AFFINE: np.array(volume.affine),
        META_HEADER: volume.header,
        META_SOURCE: str(volume.source) if volume.source else None,
    }
    return {
        "name": name,
        "scale": tuple(float(s) for s in volume.spacing[::-1]),
        "metadata": metadata,
        **extra,
    }


def is_label_volume(volume: Volume, name: str = "") -> bool:
    """Integer data with few distinct values, or a label-like file name."""
    lowered = name.lower()
    if any(hint in lowered for hint in LABEL_NAME_HINTS):
        return bool(np.all(volume.array == np.round(volume.array)))
    if not np.issubdtype(volume.original_dtype, np.integer):
        return False
    return volume.array.min() >= 0 and len(np.unique(volume.array)) <= MAX_LABEL_VALUES


def layer_to_volume(data: Any, metadata: dict | None, scale=None, translate=None) -> Volume:
    """Inverse of :func:`volume_to_layer_data`: ``(k, j, i)`` data → Volume on its grid.

    Uses the affine and header in ``metadata`` when present (exact round trip), else builds a
    diagonal affine from the layer's ``scale`` ``(dz, dy, dx)`` and ``translate``; ``source`` is
    the file the layer was read from (so that nothing overwrites it), if any.

    Raises:
        ValueError: data that is not a 3D scalar volume.
    """
    array = np.asarray(data)
    if array.ndim != 3:
        raise ValueError(f"layer data must be a 3D volume, got shape {array.shape}")
    metadata = metadata or {}
    affine = metadata.get(META_AFFINE)
    if affine is None:
        affine = np.eye(4)
        if scale is not None:
            affine[:3, :3] = np.diag(np.asarray(scale, dtype=float)[-3:][::-1])
        if translate is not None:
            affine[:3, 3] = np.asarray(translate, dtype=float)[-3:][::-1]
    return Volume(
        np.transpose(array, (2, 1, 0)),
        np.asarray(affine, dtype=float),
        header=metadata.get(META_HEADER),
        original_dtype=array.dtype,
        source=metadata.get(META_SOURCE) or None,
    )


def finite_float_data(layer) -> np.ndarray:
    """A float32 copy of ``layer.data``.

    Raises:
        ValueError: NaN/Inf values (naming the layer).
    """
    data = np.array(layer.data, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"image layer {layer.name!r} holds NaN/Inf values")
    return data


def derived_kwargs(source_layer, name: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for a layer derived from ``source_layer`` (same grid and metadata)."""
    return {
        "name": name,
        "scale": tuple(source_layer.scale),
        "translate": tuple(source_layer.translate),
        "metadata": dict(source_layer.metadata),
        **extra,
    }
