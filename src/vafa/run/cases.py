"""The per-case table of a batch attack (``attack_results.csv``): one row per case of a folder
or a datalist, built from each case's metrics (:class:`vafa.run.outcome_metrics.OutcomeMetrics`
of :func:`vafa.run.pipeline.run_attack`), so a resumed case (whose metrics are read back from
its JSON with :meth:`~vafa.run.outcome_metrics.OutcomeMetrics.from_dict`) gives the same row as
a fresh one."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vafa.io.datalist import case_name, describe, image_paths
from vafa.io.files import write_text
from vafa.run.outcome_metrics import OutcomeMetrics

__all__ = ["CASES_CSV", "CASE_FIELDS", "METRIC_FIELDS", "case_row", "write_case_table"]

CASES_CSV = "attack_results.csv"
#: The metric columns shared by the case table and the report's ``results.csv`` (adversarial
#: values; ``*_clean``: the clean ones).
METRIC_FIELDS = (
    "reference",
    "dice_fg_clean",
    "dice_fg",
    "dice_clean",
    "dice",
    "hd95_clean",
    "hd95",
    "ssim",
    "psnr",
    "linf",
    "linf_units",
)
#: Columns of :data:`CASES_CSV`.
CASE_FIELDS = (
    "case",
    "image",
    "labels",
    "adversarial",
    "status",
    "attack",
    *METRIC_FIELDS,
    "zeroed_fraction",
    "steps_run",
    "seed",
)


def case_row(
    image: str | os.PathLike | tuple[Path, ...],
    labels: str | os.PathLike | None,
    adversarial: str,
    status: str = "ok",
    metrics: OutcomeMetrics | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """One row of :data:`CASE_FIELDS` (JSON-ready: str, float, int or None).

    Args:
        image, labels: the case's files as given (an image: a path, or one path per channel:
            the ``image`` cell lists them joined by `` + ``). adversarial: the output's name.
        status: ``"ok"`` or ``"failed: <message>"``.
        metrics: the case's metrics (:func:`vafa.run.pipeline.run_attack`'s, or read back from
            its JSON), or None for a failed case.
    """
    row: dict[str, Any] = dict.fromkeys(CASE_FIELDS)
    image = image_paths(image)
    row.update(
        case=case_name(image),
        image=describe(image),
        labels=None if labels is None else str(labels),
        adversarial=adversarial,
        status=status,
        seed=seed,
    )
    if metrics is not None:
        for key in ("dice_fg", "dice", "hd95"):
            pair = getattr(metrics, key)
            row[f"{key}_clean"] = _number(pair.clean)
            row[key] = _number(pair.adversarial)
        row.update(
            attack=metrics.attack,
            reference=metrics.reference,
            ssim=_number(metrics.ssim),
            psnr=_number(metrics.psnr),
            linf=_number(metrics.linf),
            linf_units=_number(metrics.linf_original_units),
            zeroed_fraction=_number(metrics.zeroed_fraction),
            steps_run=metrics.steps_run,
        )
    return row


def write_case_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (in the order given) as CSV at ``path``, atomically; floats as ``%.6g``,
    None as an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CASE_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in CASE_FIELDS})
    return write_text(path, buffer.getvalue())


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
