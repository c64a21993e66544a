"""``results.csv`` of a report: its columns, the resumable writer, the reader, and the
qualitative slices kept beside it."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vafa.io.files import write_bytes
from vafa.run.cases import METRIC_FIELDS

#: Columns of ``results.csv`` (metrics: adversarial values; ``*_clean``: the clean ones).
RESULT_FIELDS = (
    "model",
    "case",
    "table",
    "attack",
    "setting",
    "key",
    "options",
    "status",
    *METRIC_FIELDS,
    "lpips",
    "zeroed_fraction",
    "steps_run",
    "seed",
    "seconds",
)
NUMERIC_FIELDS = RESULT_FIELDS[RESULT_FIELDS.index("dice_fg_clean") :]
METRIC_COLUMNS = (
    ("dice_fg", "Dice fg", 3),
    ("dice", "DSC", 3),
    ("hd95", "HD95 (mm)", 1),
    ("ssim", "SSIM", 3),
    ("psnr", "PSNR (dB)", 1),
    ("linf", "L∞", 3),
    ("lpips", "LPIPS", 3),
)
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
SLICES_DIR = "slices"


# ----------------------------------------------------------------------------- results.csv
class ResultsWriter:
    """Append-only ``results.csv`` (or another CSV of the report with its own ``fields``):
    header once, every row flushed to disk."""

    def __init__(self, path: Path, fields: tuple[str, ...] = RESULT_FIELDS) -> None:
        self.path = path
        self.fields = fields

    def __enter__(self) -> ResultsWriter:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        torn = not fresh and not self.path.read_bytes().endswith(b"\n")
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        if torn:  # an interrupted write left half a line: start a new one
            self.file.write("\n")
        self.writer = csv.DictWriter(self.file, self.fields, extrasaction="ignore")
        if fresh:
            self.writer.writeheader()
        return self

    def write(self, row: Mapping[str, Any]) -> None:
        self.writer.writerow({k: _csv_value(row.get(k)) for k in self.fields})
        self.file.flush()
        os.fsync(self.file.fileno())

    def __exit__(self, *exc) -> None:
        self.file.close()


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_results(
    path: str | os.PathLike,
    fields: tuple[str, ...] = RESULT_FIELDS,
    numeric: tuple[str, ...] = NUMERIC_FIELDS,
) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` (numbers as float, empty cells as None); [] if absent.
    ``fields`` / ``numeric``: the columns of another CSV of the report.

    Raises:
        ValueError: the file has other columns than ``fields`` (:data:`RESULT_FIELDS`).
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != fields:
            raise ValueError(
                f"{path} has columns {reader.fieldnames}, expected {list(fields)} "
                "(not a report of this version: choose another output folder)"
            )
        rows = []
        for raw in reader:
            if None in raw or any(v is None for v in raw.values()):
                continue  # a torn last line
            row: dict[str, Any] = dict(raw)
            for key in numeric:
                row[key] = parse_number(raw[key])
            rows.append(row)
    return rows


def parse_number(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rows_in_scope(rows, model_names, case_names) -> list[dict[str, Any]]:
    """The latest row of every (model, case, key) of these models and cases; an ``ok`` row
    wins over a later failed or cancelled one."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        if row["model"] not in model_names or row["case"] not in case_names:
            continue
        ident = (row["model"], row["case"], row["key"])
        old = latest.get(ident)
        if old is None or row["status"] == "ok" or old["status"] != "ok":
            latest[ident] = row
    loaded = {(m, c) for (m, c, key) in latest if key != "case"}
    # a case that failed to load once and ran later is no longer a failure
    return [r for (m, c, key), r in latest.items() if key != "case" or (m, c) not in loaded]


def slice_path(out_dir: Path, model: str, case: str, key: str) -> Path:
    digest = hashlib.sha1(f"{model}\0{case}\0{key}".encode()).hexdigest()[:16]
    return Path(out_dir) / SLICES_DIR / f"{digest}.npz"


def save_slice(out_dir: Path, row: Mapping[str, Any]) -> None:
    """Keep a finished row's qualitative slice on disk (atomic), for resumed reports."""
    data = row.get("slice")
    if not data or row.get("status") != "ok":
        return
    path = slice_path(out_dir, row["model"], row["case"], row["key"])
    path.parent.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in data.items()})
    write_bytes(path, buffer.getvalue())
