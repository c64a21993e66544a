"""3D volumes with their voxel-to-world affine: NIfTI loading, atomic saving and resampling.

A :class:`Volume` holds a float32 array in the file's voxel order ``(i, j, k)``, the 4×4 affine
that maps voxel indices to world millimetres (RAS+, nibabel convention) and the NIfTI header it
came from, so that derived volumes (adversarial, perturbation, predictions) are written back on
exactly the input's grid with the same qform/sform codes and units.

torch and MONAI are imported only by the resampling functions.
"""

from __future__ import annotations

import difflib
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from vafa.io.files import atomic_write

__all__ = [
    "Volume",
    "load_labels",
    "load_volume",
    "needs_resampling",
    "resample_like",
    "resample_to",
    "save_volume",
    "spacing_text",
]

_SAVE_DTYPES = tuple(
    np.dtype(t) for t in (np.float32, np.float64, np.uint8, np.int8, np.uint16, np.int16, np.int32)
)
_MODES = ("bilinear", "nearest")
AFFINE_ATOL = 1e-3
#: Spacings closer than this (mm, every axis) count as equal: no resampling.
SPACING_ATOL = 1e-3
# what nibabel/gzip raise on unreadable, corrupt or truncated files
READ_ERRORS = (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError)


@dataclass(eq=False)
class Volume:
    """A 3D image on a world grid.

    Attributes:
        array: float32 array ``[I, J, K]`` in file voxel order, finite values (e.g. HU for CT;
            integer class values for label maps).
        affine: 4×4 float64 voxel-index → world (mm, RAS+) matrix.
        header: the NIfTI header of the file the volume came from (kept for saving), or None.
        source: the file the volume was loaded from; None for derived volumes.
        original_dtype: the data type on disk (informative; saving defaults to float32).

    Raises:
        TypeError: ``array`` is not a numeric numpy array, or ``header`` is not a NIfTI header.
        ValueError: ``array`` is not 3D, has an empty axis or non-finite values; ``affine`` is
            not a finite, invertible 4×4 matrix.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    source: Path | None = None
    original_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray) or not (
            np.issubdtype(self.array.dtype, np.integer)
            or np.issubdtype(self.array.dtype, np.floating)
        ):
            raise TypeError(f"array must be a numeric numpy.ndarray, got {_describe(self.array)}")
        if self.array.ndim != 3 or 0 in self.array.shape:
            raise ValueError(f"array must be 3D with no empty axis, got shape {self.array.shape}")
        self.array = np.asarray(self.array, dtype=np.float32)
        bad = int(self.array.size - np.count_nonzero(np.isfinite(self.array)))
        if bad:
            raise ValueError(f"array must be finite, got {bad} NaN/Inf voxel(s)")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine must be a finite 4x4 matrix, got {self.affine!r}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"affine must be invertible, got {affine.tolist()}")
        self.affine = affine
        if self.header is not None and not isinstance(self.header, nib.Nifti1Header):
            raise TypeError(
                f"header must be a nibabel Nifti1Header or None, got {_describe(self.header)}"
            )
        if self.source is not None:
            self.source = Path(self.source)
        self.original_dtype = np.dtype(self.original_dtype)

    def __repr__(self) -> str:
        spacing = ", ".join(f"{v:g}" for v in self.spacing)
        return (
            f"Volume(shape={self.shape}, spacing=({spacing}), orientation={self.orientation!r}, "
            f"original_dtype={self.original_dtype}, source={self.source})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(I, J, K)``."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel sizes in mm along ``i, j, k`` (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Closest axis codes, e.g. ``"RAS"`` (nibabel's ``aff2axcodes``)."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray, dtype: Any = None) -> Volume:
        """A new volume on the same grid (same affine and header copy, ``source=None``).

        Args:
            array: ``[I, J, K]`` array with the same shape as this volume.
            dtype: ``original_dtype`` recorded for the new volume (e.g. ``np.uint8`` for a
                prediction); default float32.

        Raises:
            ValueError: the shape differs (both shapes are named).
        """
        if getattr(array, "shape", None) != self.array.shape:
            got = getattr(array, "shape", type(array).__name__)
            raise ValueError(f"array must have the volume's shape {self.shape}, got {got}")
        return Volume(
            array=array,
            affine=self.affine.copy(),
            header=None if self.header is None else self.header.copy(),
            source=None,
            original_dtype=np.dtype(np.float32 if dtype is None else dtype),
        )


def load_volume(path: str | os.PathLike) -> Volume:
    """Load a 3D NIfTI file (``.nii`` or ``.nii.gz``) as a float32 :class:`Volume`.

    The header's scaling (``scl_slope``/``scl_inter``) is applied. A 4D/5D file whose extra axes
    all have length 1 is squeezed to 3D.

    Args:
        path: the file.

    Returns:
        The volume, with ``source`` set to ``path`` and the header kept.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: wrong extension; not a readable NIfTI file (corrupt or truncated gzip, other
            format); not 3D; an empty axis; NaN/Inf voxels; a non-numeric data type.
    """
    path = Path(path)
    check_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        img = nib.load(path)
        dtype = img.get_data_dtype()
    except READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable NIfTI file: {err}") from err
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise ValueError(f"{path} must be a NIfTI image, got {type(img).__name__}")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{path}: data type must be integer or float, got {dtype}")
    shape = _squeezed_shape(path, img.shape)
    try:
        data = img.get_fdata(dtype=np.float32).reshape(shape)
    except READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable NIfTI file (corrupt data): {err}") from err
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise ValueError(f"{path} must contain only finite values, got {bad} NaN/Inf voxel(s)")
    return Volume(
        array=data,
        affine=img.affine,
        header=img.header.copy(),
        source=path,
        original_dtype=dtype,
    )


def load_labels(path: str | os.PathLike, like: Volume, max_classes: int | None = None) -> Volume:
    """Load a label map and check it belongs to the image ``like``.

    The returned array is float32 holding whole numbers (cast with ``.astype(np.int64)`` for
    class indices); ``original_dtype`` is the on-disk type.

    Args:
        path: ``.nii``/``.nii.gz`` label map.
        like: the image the labels annotate; shape and affine must match (affine within 1e-3).
        max_classes: if given, every value must be ``< max_classes``.

    Returns:
        The label volume.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, shape or affine mismatch (both named), negative or
            non-integer values, or a value ``>= max_classes``.
    """
    if max_classes is not None and (
        isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 1
    ):
        raise ValueError(f"max_classes must be a positive integer or None, got {max_classes!r}")
    labels = load_volume(path)
    if labels.shape != like.shape:
        raise ValueError(
            f"{labels.source}: labels must have the image's shape {like.shape}, got {labels.shape}"
        )
    if not np.allclose(labels.affine, like.affine, atol=AFFINE_ATOL):
        raise ValueError(
            f"{labels.source}: labels must have the image's affine (atol {AFFINE_ATOL}), got "
            f"{labels.affine.tolist()} vs image {like.affine.tolist()}"
        )
    arr = labels.array
    low = float(arr.min())
    if low < 0:
        raise ValueError(f"{labels.source}: labels must be non-negative, got minimum {low:g}")
    non_integer = int(np.count_nonzero(arr != np.round(arr)))
    if non_integer:
        raise ValueError(
            f"{labels.source}: labels must be integers, got {non_integer} non-integer voxel(s)"
        )
    high = int(arr.max())
    if max_classes is not None and high >= max_classes:
        raise ValueError(
            f"{labels.source}: label values must be < max_classes={max_classes}, got maximum {high}"
        )
    return labels


def save_volume(
    volume: Volume,
    path: str | os.PathLike,
    overwrite: bool = False,
    dtype: Any = None,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``volume`` to a NIfTI file atomically, with the source's affine, codes and units.

    The qform and sform (with their codes) and the units of ``volume.header`` are kept; if the
    affine differs from the header's (a resampled volume), both forms are set to the new affine
    with the same codes (sform code 2 "aligned" if both codes were 0). Without a header, nibabel's
    defaults are used (sform "aligned", qform "unknown", units mm). The file is written to a
    hidden temporary file in the same folder, then renamed; on any failure nothing remains.

    Args:
        volume: what to write (its ``array``, ``affine``, ``header`` and ``source`` are read;
            :func:`vafa.io.channels.save_image` passes a 4D channels-last array this way).
        path: ``.nii`` or ``.nii.gz`` (gzip, deterministic: no name, mtime 0).
        overwrite: replace an existing file (never ``volume.source`` nor a ``protect`` path).
        dtype: on-disk type; default float32. Integer types (``np.uint8``, ``np.int16``, …, for
            labels or HU) round to the nearest integer and refuse values out of the type's range.
        protect: further paths that must never be written (e.g. the input image).

    Returns:
        The written path.

    Raises:
        ValueError: wrong extension, ``path`` is the source or protected, values out of range.
        TypeError: unsupported ``dtype``.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the folder does not exist.
    """
    path = Path(path)
    check_suffix(path)
    out_dtype = np.dtype(np.float32 if dtype is None else dtype)
    if out_dtype not in _SAVE_DTYPES:
        raise TypeError(f"dtype must be one of {[str(t) for t in _SAVE_DTYPES]}, got {out_dtype}")
    forbidden = [p for p in (volume.source, *protect) if p is not None]
    for other in forbidden:
        if same_file(path, Path(other)):
            raise ValueError(f"refusing to write {path}: it is an input file ({other})")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: folder does not exist (for {path})")
    img = _to_image(volume, out_dtype, path)
    return atomic_write({path: lambda tmp: _save_synced(img, tmp)})[0]


def _save_synced(img: nib.Nifti1Image, path: Path) -> None:
    nib.save(img, path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def resample_to(
    volume: Volume,
    spacing: float | Iterable[float] | None = None,
    orientation: str | None = None,
    mode: str = "bilinear",
) -> Volume:
    """Reorient and/or resample a volume to a voxel spacing (MONAI ``Orientation``/``Spacing``).

    The world position of voxel ``(0, 0, 0)`` is kept by the spacing step; the output covers the
    input's extent. Values outside the input are taken from its border.

    Args:
        volume: the volume.
        spacing: target voxel size in mm, one number or three (along the output axes); None
            keeps the spacing.
        orientation: target axis codes such as ``"RAS"``; None keeps the orientation.
        mode: ``"bilinear"`` (trilinear, images) or ``"nearest"`` (label maps).

    Returns:
        A new volume (``source=None``, the input's header copy) with the new affine, or
        ``volume`` itself when nothing changes (orientation already as asked and spacing equal
        within 1e-3 mm).

    Raises:
        ValueError: invalid spacing, orientation or mode.
    """
    target = None if spacing is None else _check_spacing(spacing)
    codes = None if orientation is None else _check_orientation(orientation)
    mode = _check_mode(mode)
    if not needs_resampling(volume, target, codes):
        return volume
    from monai.transforms import Orientation, Spacing

    img = _to_meta(volume)
    if codes is not None and volume.orientation != codes:
        img = Orientation(axcodes=codes, labels=None)(img)
    if target is not None:
        current = np.linalg.norm(np.asarray(img.affine, dtype=np.float64)[:3, :3], axis=0)
        if not np.allclose(current, target, rtol=0, atol=SPACING_ATOL):
            img = Spacing(pixdim=target, mode=mode, padding_mode="border")(img)
    return _from_meta(img, volume)


def needs_resampling(
    volume, spacing: float | Iterable[float] | None = None, orientation: str | None = None
) -> bool:
    """Whether :func:`resample_to` changes ``volume`` (or Channels): another orientation, or a
    spacing more than :data:`SPACING_ATOL` mm off (None: kept)."""
    if orientation is not None and volume.orientation != _check_orientation(orientation):
        return True
    return spacing is not None and not np.allclose(
        volume.spacing, _check_spacing(spacing), rtol=0, atol=SPACING_ATOL
    )


def resample_like(volume: Volume, reference: Volume, mode: str = "bilinear") -> Volume:
    """Resample ``volume`` onto the grid (shape and affine) of ``reference``.

    Used to bring a model-grid result (adversarial image, prediction) back onto the input file's
    grid for export.

    Args:
        volume: the volume to resample.
        reference: the target grid; its header is used for the result.
        mode: ``"bilinear"`` (images) or ``"nearest"`` (label maps).

    Returns:
        A volume with ``reference``'s shape, affine and header (``source=None``), or ``volume``
        itself when it is already on that grid (affine within 1e-3).

    Raises:
        ValueError: invalid mode.
    """
    mode = _check_mode(mode)
    if volume.shape == reference.shape and np.allclose(
        volume.affine, reference.affine, rtol=0, atol=AFFINE_ATOL
    ):
        return volume
    import torch
    from monai.transforms import SpatialResample

    out = SpatialResample(mode=mode, padding_mode="border")(
        _to_meta(volume),
        dst_affine=torch.as_tensor(reference.affine, dtype=torch.float64),
        spatial_size=reference.shape,
    )
    array = np.asarray(out.detach().cpu().numpy()[0], dtype=np.float32)
    return reference.with_array(array, dtype=volume.original_dtype)


# ----------------------------------------------------------------------------- helpers


def _describe(value: object) -> str:
    return f"{type(value).__name__} {getattr(value, 'dtype', '')}".strip()


def check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"path must end in .nii or .nii.gz, got {str(path)!r}")


def _squeezed_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise ValueError(
            f"{path}: image must be 3D (or 4D/5D with length-1 extra axes), got shape {shape}"
        )
    if 0 in shape:
        raise ValueError(f"{path}: image axes must not be empty, got shape {shape}")
    return tuple(int(n) for n in shape[:3])  # type: ignore[return-value]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (also through links; by path when missing)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _to_image(volume: Volume, out_dtype: np.dtype, path: Path) -> nib.Nifti1Image:
    data = volume.array
    if np.issubdtype(out_dtype, np.integer):
        data = np.rint(data)
        info = np.iinfo(out_dtype)
        low, high = float(data.min()), float(data.max())
        if low < info.min or high > info.max:
            raise ValueError(
                f"values must fit {out_dtype} [{info.min}, {info.max}] to write {path}, got "
                f"range [{low:g}, {high:g}]"
            )
    data = data.astype(out_dtype)
    if volume.header is None:
        img = nib.Nifti1Image(data, volume.affine)
        img.header.set_xyzt_units("mm", "sec")
    else:
        hdr = volume.header.copy()
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
        same = np.allclose(hdr.get_best_affine(), volume.affine, rtol=0, atol=1e-6)
        img = nib.Nifti1Image(data, volume.affine, hdr)
        if not same:
            img.header.set_sform(volume.affine, code=scode if (scode or qcode) else 2)
            img.header.set_qform(volume.affine, code=qcode)
    img.header.set_data_dtype(out_dtype)
    img.header.set_slope_inter(np.nan, np.nan)
    return img


def _to_meta(volume: Volume):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(
        torch.from_numpy(volume.array.copy())[None],
        affine=torch.as_tensor(volume.affine, dtype=torch.float64),
    )


def _from_meta(img, like: Volume) -> Volume:
    array = np.asarray(img.detach().cpu().numpy()[0], dtype=np.float32)
    affine = np.asarray(img.affine.detach().cpu().numpy(), dtype=np.float64)
    header = None if like.header is None else like.header.copy()
    return Volume(array, affine, header, None, like.original_dtype)


def _check_spacing(spacing: float | Iterable[float]) -> tuple[float, float, float]:
    values = [spacing] * 3 if np.isscalar(spacing) else list(spacing)  # type: ignore[list-item]
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != 3 or not all(np.isfinite(v) and v > 0 for v in floats):
        raise ValueError(
            f"spacing must be one or three positive finite numbers (mm), got {spacing!r}"
        )
    return floats  # type: ignore[return-value]


def _check_orientation(orientation: str) -> str:
    codes = orientation.upper() if isinstance(orientation, str) else ""
    axes = sorted("LRPAIS".find(c) // 2 for c in codes)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise ValueError(
            f"orientation must be three axis codes, one of L/R, A/P and I/S each (e.g. 'RAS'), "
            f"got {orientation!r}"
        )
    return codes


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        close = difflib.get_close_matches(str(mode), _MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}{hint}")
    return mode


def spacing_text(spacing) -> str:
    """Voxel spacing as messages write it: ``(0.8, 0.8, 2.5) mm``."""
    return "(" + ", ".join(f"{s:g}" for s in spacing) + ") mm"
