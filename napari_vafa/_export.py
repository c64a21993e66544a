"""Export of an attack's result volumes as NIfTI: file names and atomic writes (no Qt but the
save dialog, :func:`ask_export_path`). A multi-channel result is written the way its input came
(:func:`vafa.io.outcome_files.write_volumes`: one 4D file, or one file per channel)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["EXTRAS", "ask_export_path", "export_run", "export_targets", "write_exports"]

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
    """Write the ``targets`` of :func:`export_targets`, all or nothing
    (:func:`vafa.io.outcome_files.write_volumes`: source units and affine, labels as integers).

    Raises:
        ValueError: a target is an input file (nothing written).
        OSError: a write failed (nothing written).
    """
    from vafa.io.outcome_files import write_volumes

    return write_volumes(outcome, targets, overwrite=True, protect=protect)


def export_run(outcome, path: Path, extras: Iterable[str], source) -> list[Path]:
    """:func:`write_exports` of :func:`export_targets`, protecting the run's inputs and the
    attacked layer's file (``source``: the result layers' :func:`~napari_vafa._result_layers.source_of`)."""
    targets = export_targets(Path(path), outcome, extras)
    return write_exports(outcome, targets, (*outcome.inputs, source and source.source))


def ask_export_path(parent, source) -> str:  # pragma: no cover - a modal dialog
    """The adversarial file chosen in a save dialog ("" when cancelled)."""
    from qtpy.QtWidgets import QFileDialog

    folder = Path(source.source).parent if source and source.source else Path.home()
    stem = (source.name if source else "volume").replace(" ", "_")
    path, _ = QFileDialog.getSaveFileName(
        parent,
        "Export adversarial volume",
        str(folder / f"{stem}_adversarial.nii.gz"),
        "NIfTI (*.nii.gz *.nii)",
    )
    return path
