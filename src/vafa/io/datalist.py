"""Decathlon-style datalists: ``{"training": [...], "validation": [...]}`` lists of cases
``{"image": …, "label": …}``, paths relative to the JSON file's folder — the one reader of
the CLI (attack, evaluate, report) and of VAFT training.

A case's ``image`` is one path (a 3D file, or a 4D file with the channels on its last axis, as
the Medical Segmentation Decathlon's BrainTumour task) or a list of paths, one 3D file per
channel in the model's channel order (as MONAI's BraTS bundle lists them, or nnU-Net's
``case_0000.nii.gz``, ``case_0001.nii.gz`` …). Such an image travels as an
:data:`ImagePaths`: a Path, or a tuple of Paths.

:func:`check_channels` compares every case with a model before anything runs (from the files'
headers: nothing is read but them), so a datalist that mixes one- and multi-channel cases, or
that does not fit the model, is refused in one line before a file is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import nibabel as nib

from vafa.io.channels import channels_text
from vafa.io.files import read_json
from vafa.io.volume import READ_ERRORS

__all__ = [
    "ImagePaths",
    "case_name",
    "channel_count",
    "check_channels",
    "check_same_kind",
    "describe",
    "group_channel_files",
    "image_files",
    "image_paths",
    "read_split",
]

#: One image file, or one file per channel (in the model's channel order).
ImagePaths = Union[Path, tuple[Path, ...]]  # noqa: UP007 (a runtime alias)


def read_split(
    path: str | os.PathLike, split: str, *, labels: bool = False
) -> list[tuple[ImagePaths, Path | None]]:
    """The cases of one split of a datalist.

    Args:
        path: the JSON file.
        split: ``"training"``, ``"validation"``, … (a key of the JSON object).
        labels: every case must name its ``label``.

    Returns:
        ``[(image, label or None), …]`` with paths resolved against the JSON's folder; a case
        may also be a bare image path (or list of paths) without labels.

    Raises:
        ValueError: not a JSON object, no non-empty list under ``split`` (the keys are named),
            a case without an image (or a label when ``labels``), or cases of different kinds
            (a list of channel files beside a single file, lists of different lengths).
    """
    path = Path(path)
    doc = read_json(path, "datalist")
    entries = doc.get(split) if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"datalist {path}: no list of cases under {split!r} (keys: {keys})")
    cases = [_case(path, split, n, entry, labels) for n, entry in enumerate(entries)]
    check_same_kind([image for image, _ in cases], f"datalist {path}: {split}")
    return cases


def check_same_kind(
    images: Sequence[ImagePaths], what: str, names: Sequence[str] | None = None
) -> None:
    """Every image is one file, or every one a list of as many channel files; else one line
    naming the first that differs from the first (``what``: e.g. ``"datalist d.json:
    training"``; ``names``: how to call each case, default ``"case <n>"``).

    Raises:
        ValueError: images of different kinds.
    """
    names = [f"case {n}" for n in range(len(images))] if names is None else list(names)
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    kinds = [_kind(image) for image in images]
    for n, kind in enumerate(kinds):
        if kind != kinds[0]:
            raise ValueError(
                f"{what} {names[0]} is {_kind_text(images[0])} but {names[n]} is "
                f"{_kind_text(images[n])}: the cases of a datalist must have the same channels"
            )


def image_paths(value: str | os.PathLike | Sequence[str | os.PathLike]) -> ImagePaths:
    """``"a.nii.gz"`` → Path; ``["a_0000.nii.gz", "a_0001.nii.gz"]`` → tuple of Paths (one
    entry: its Path)."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    paths = tuple(Path(v) for v in value)
    return paths[0] if len(paths) == 1 else paths


def image_files(image: ImagePaths) -> tuple[Path, ...]:
    """The files of an image (one, or one per channel)."""
    return image if isinstance(image, tuple) else (image,)


def case_name(image: ImagePaths) -> str:
    """The case's name: the file name without ``.nii``/``.nii.gz``; for one file per channel,
    the first's without nnU-Net's channel suffix (``case_0000.nii.gz`` → ``case``)."""
    first = image_files(image)[0]
    name = first.name.removesuffix(".gz").removesuffix(".nii")
    if isinstance(image, tuple) and len(name) > 5 and name[-5] == "_" and name[-4:].isdigit():
        name = name[:-5]
    return name


def describe(image: ImagePaths) -> str:
    """The image's file(s) for messages and tables: ``a.nii.gz`` or ``a_0000.nii.gz +
    a_0001.nii.gz``."""
    return " + ".join(str(p) for p in image_files(image))


def channel_count(image: ImagePaths) -> int:
    """How many channels an image has, from its header(s): the number of files, or the length
    of a 4D file's last axis (1 for a 3D file).

    Raises:
        FileNotFoundError: a file is missing. ValueError: not a readable NIfTI header.
    """
    if isinstance(image, tuple):
        return len(image)
    if not image.is_file():
        raise FileNotFoundError(f"{image}: no such file")
    try:
        shape = nib.load(image).shape
    except READ_ERRORS as err:
        raise ValueError(f"{image} is not a readable NIfTI file: {err}") from err
    return 1 if len(shape) <= 3 or all(n == 1 for n in shape[3:]) else int(shape[-1])


def group_channel_files(files: Sequence[Path]) -> list[ImagePaths]:
    """A folder's files as cases: nnU-Net's ``case_0000.nii.gz``, ``case_0001.nii.gz`` … grouped
    per case (channels in suffix order) when every file carries such a suffix; else one case
    per file."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(files):
        name = path.name.removesuffix(".gz").removesuffix(".nii")
        if len(name) < 6 or name[-5] != "_" or not name[-4:].isdigit():
            return list(files)
        groups.setdefault(name[:-5], []).append(path)
    return [image_paths(paths) for paths in groups.values()]


def check_channels(
    images: Sequence[ImagePaths], channels: int, names: Sequence[str] | None, where: str | None
) -> None:
    """Every image has the model's channel count (read from headers), or one line names the
    first that has not (``where``: e.g. ``"--datalist cases.json"``; None: images given alone).
    Unreadable or missing files are left to the loading of their case.

    Raises:
        ValueError: a count that differs.
    """
    for n, image in enumerate(images):
        try:
            count = channel_count(image)
        except (OSError, ValueError):  # unreadable: that case fails on its own when loaded
            continue
        if count != channels:
            which = describe(image) if where is None else f"{where}: case {n} ({describe(image)})"
            raise ValueError(f"{which} has {count} channel(s), {channels_text(channels, names)}")


def _case(path: Path, split: str, n: int, entry, labels: bool) -> tuple[ImagePaths, Path | None]:
    image = entry.get("image") if isinstance(entry, dict) else entry
    label = entry.get("label") if isinstance(entry, dict) else None
    listed = isinstance(image, list) and image and all(isinstance(p, str) for p in image)
    if not (isinstance(image, str) or listed) or (labels and not isinstance(label, str)):
        want = '{"image": PATH or [PATH, …], "label": PATH}'
        raise ValueError(f"datalist {path}: {split} case {n} must be {want}, got {entry!r}")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"datalist {path}: {split} case {n}: label must be a path, got {label!r}")
    files = [image] if isinstance(image, str) else image
    resolved = image_paths([path.parent / p for p in files])
    return resolved, None if label is None else path.parent / label


def _kind(image: ImagePaths) -> int:
    """0 for one file, else the number of channel files."""
    return len(image) if isinstance(image, tuple) else 0


def _kind_text(image: ImagePaths) -> str:
    return "one file" if not isinstance(image, tuple) else f"a list of {len(image)} channel files"
