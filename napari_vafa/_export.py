"""Export of an attack's result volumes as NIfTI (no Qt): file names and atomic writes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["EXTRAS", "export_targets", "write_exports"]

#: Optional exports: check-box name → outcome fields.
EXTRAS = {
    "perturbation": ("perturbation",),
    "predictions": ("clean_prediction", "adversarial_prediction"),
    "q_table": ("q_table",),
}


def export_targets(path: Path, outcome, extras: Iterable[str]) -> dict[str, Path]:
    """Files to write: ``{outcome field: path}``.

    ``path`` names the adversarial volume (``.nii.gz`` added when it has no NIfTI suffix); the
    extras (keys of :data:`EXTRAS`) go beside it as ``<stem>_<field><suffix>``; the q table
    only when the attack made one.
    """
    name = path.name
    if not name.lower().endswith((".nii", ".nii.gz")):
        name += ".nii.gz"
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else ".nii"
    stem = name[: -len(suffix)]
    targets = {"adversarial": path.parent / name}
    for extra in extras:
        for key in EXTRAS[extra]:
            if getattr(outcome, key) is not None:
                targets[key] = path.parent / f"{stem}_{key}{suffix}"
    return targets


def write_exports(outcome, targets: dict[str, Path], protect: Iterable[str | Path]) -> list[Path]:
    """Write the ``targets`` of :func:`export_targets` in the source's units, affine and header.

    Predictions are written as uint8 (int16 beyond 255 classes), the rest as float32.
    Nothing is written when any target is a ``protect`` path (the inputs).

    Returns:
        The written paths, in order.

    Raises:
        ValueError: a target is an input file (nothing written).
        OSError: a write failed (the files written before it stay; each write is atomic).
    """
    from vafa.io.volume import same_file, save_volume

    protect = [Path(p) for p in protect if p]
    for target in targets.values():
        if any(same_file(target, p) for p in protect):
            raise ValueError(f"refusing to overwrite the input file {target}")
    written = []
    for key, target in targets.items():
        volume = getattr(outcome, key)
        dtype = np.uint8 if key.endswith("prediction") else np.float32
        if dtype is np.uint8 and float(volume.array.max()) > 255:
            dtype = np.int16
        written.append(save_volume(volume, target, overwrite=True, dtype=dtype, protect=protect))
    return written
