"""The files of an attack outcome: volumes in the source's units and affine, and
``metrics.json`` — written all or nothing, never over an input.

:func:`write_outcome` writes every file of a :class:`vafa.run.pipeline.AttackOutcome` into a
folder (:data:`OUTCOME_FILES`); :func:`write_volumes` writes chosen fields to chosen paths (the
one outcome writer of the CLI, the napari export and the Slicer modules).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vafa.io.channels import Channels, channel_paths, save_image
from vafa.io.files import atomic_write, json_ready
from vafa.io.volume import same_file

__all__ = ["OUTCOME_FILES", "write_outcome", "write_volumes"]

#: Files written by :func:`write_outcome`, by outcome field.
OUTCOME_FILES = {
    "adversarial": "adversarial.nii.gz",
    "perturbation": "perturbation.nii.gz",
    "clean_prediction": "clean_prediction.nii.gz",
    "adversarial_prediction": "adversarial_prediction.nii.gz",
    "q_table": "q_table.nii.gz",
    "metrics": "metrics.json",
}


def write_outcome(
    outcome: Any,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike] = (),
) -> dict[str, Path]:
    """Write the outcome's files into ``out_dir`` (created if needed), all or nothing.

    Files (:data:`OUTCOME_FILES`): ``adversarial.nii.gz``, ``perturbation.nii.gz`` (float32),
    ``clean_prediction.nii.gz``, ``adversarial_prediction.nii.gz`` (uint8; int16 beyond 256
    classes), ``q_table.nii.gz`` (VAFA only) and ``metrics.json`` (``metrics``, ``settings``,
    ``history``). Everything is first written to hidden temporary files and renamed into place
    only when all succeeded (renames within one folder do not fail in practice); on failure
    the temporary files (and a folder this call created) are removed.

    Args:
        outcome: a :class:`vafa.run.pipeline.AttackOutcome` (from
            :func:`vafa.run.pipeline.run_attack`).
        out_dir: destination folder.
        overwrite: replace existing files (never an input file).
        protect: more paths that must never be written.

    Returns:
        ``{field: path}`` of the written files (a multi-channel image stored as one file per
        channel is written beside ``path``, as :func:`vafa.io.channels.channel_paths` names).

    Raises:
        FileExistsError: a file exists and ``overwrite`` is False (nothing is written).
        ValueError: a destination is an input or protected file.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    targets = {k: out_dir / name for k, name in OUTCOME_FILES.items()}
    if outcome.q_table is None:
        del targets["q_table"]
    try:
        write_volumes(outcome, targets, overwrite=overwrite, protect=protect, make_folder=True)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    return targets


def write_volumes(
    outcome: Any,
    targets: Mapping[str, str | os.PathLike],
    *,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike] = (),
    make_folder: bool = False,
) -> list[Path]:
    """Write outcome fields (``{"adversarial": path, "q_table": path, …}``; ``"metrics"``: the
    JSON of metrics, settings and history) all or nothing — the one writer of outcomes for the
    CLI, the napari export and the Slicer modules.

    Volumes keep the source's units, affine and header; predictions are uint8 (int16 beyond 255
    classes), the rest float32. A multi-channel image is written as its input came: one 4D
    file at the path, or one file per channel (:func:`vafa.io.channels.channel_paths`).

    Args:
        outcome: a :class:`vafa.run.pipeline.AttackOutcome` (read: the volume fields named in
            ``targets``, ``metrics``, ``settings``, ``history`` and ``inputs``).
        targets: ``{field: path}``.
        overwrite, protect: as for :func:`write_outcome`.
        make_folder: create the targets' folders.

    Raises:
        FileExistsError: a target exists and ``overwrite`` is False (nothing is written).
        ValueError: a target is an input or protected file, or names an empty field.
    """
    forbidden = [Path(p) for p in (*outcome.inputs, *protect) if p]
    jobs = {}
    for key, path in targets.items():
        if key != "metrics" and getattr(outcome, key) is None:
            raise ValueError(f"this outcome has no {key}")
        jobs.update(_jobs(outcome, key, Path(path)))
    for path in jobs:
        if any(same_file(path, p) for p in forbidden):
            raise ValueError(f"refusing to write {path}: it is an input file")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    if make_folder:
        for path in jobs:
            path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(jobs)
    return list(jobs)


def _jobs(outcome: Any, key: str, path: Path) -> dict[Path, Any]:
    """``{file: writer(tmp)}`` of one field: one file, or one per channel of a "files" image."""
    value = None if key == "metrics" else getattr(outcome, key)
    if isinstance(value, Channels) and value.layout == "files":
        return {
            p: partial(_write_volume, outcome, key, v)
            for p, v in zip(channel_paths(path, len(value)), value.volumes, strict=True)
        }
    return {path: partial(_write_one, outcome, key)}


def _write_one(outcome: Any, key: str, tmp: Path) -> None:
    if key == "metrics":
        doc = {
            "metrics": outcome.metrics.to_dict(),
            "settings": outcome.settings,
            "history": outcome.history,
        }
        tmp.write_text(json.dumps(json_ready(doc), indent=2, allow_nan=False) + "\n", "utf-8")
        return
    _write_volume(outcome, key, getattr(outcome, key), tmp)


def _write_volume(outcome: Any, key: str, volume: Any, tmp: Path) -> None:
    dtype = np.float32
    if key.endswith("prediction"):
        dtype = np.uint8 if float(volume.array.max()) <= 255 else np.int16
    save_image(volume, tmp, dtype=dtype, overwrite=True, protect=outcome.inputs)
