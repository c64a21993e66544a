"""A report shared out over ``torchrun`` processes (:func:`vafa.report.job.run_report` with a
:class:`vafa.run.distributed.Dist` of more than one process).

Work items are the model × case × entry triples in the report's order (models, then cases,
then the model's grid); item ``i`` runs on rank ``i mod world_size``. Each process appends
its finished rows to its own part file, ``<out>/.vafa-parts/results.rank<R>.csv`` (the
resumable :class:`~vafa.report.results.ResultsWriter`: one row per line, flushed), so no two
processes write one file. After every process is done, rank 0 merges ``results.csv`` and the
part files into a new ``results.csv`` (atomically), then removes the part files; only then
are ``report.md`` and the plots written (by rank 0).

Resuming: every process first reads ``results.csv`` and every part file left by an
interrupted job (whatever its world size), and skips the items that have an ``ok`` row.
The qualitative slices go to ``slices/`` under a name per item, written by the item's rank.
With several nodes, ``--out`` must be on a file system they all share.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vafa.io.files import write_text
from vafa.report.grid import GridEntry
from vafa.report.results import RESULT_FIELDS, RESULTS_CSV, read_results

__all__ = ["PARTS_DIR", "ReportShards"]

PARTS_DIR = ".vafa-parts"


class ReportShards:
    """The sharding of one :func:`~vafa.report.job.run_report` call.

    Args:
        out_dir: the report folder.
        dist: the job (:class:`vafa.run.distributed.Dist`), or None: one process, inactive
            (every method then keeps the single-process behaviour).
    """

    def __init__(self, out_dir: Path, dist=None) -> None:
        self.out_dir = Path(out_dir)
        self.dist = dist
        self.active = dist is not None and dist.world_size > 1
        self.next_item = 0

    @property
    def writes_report(self) -> bool:
        """Whether this process writes ``report.md`` and the plots (rank 0, or alone)."""
        return not self.active or self.dist.is_writer

    def previous_rows(self) -> list[dict[str, Any]]:
        """Rows of the part files of an interrupted job (none when inactive). Every process
        has read them before any process appends (a barrier)."""
        if not self.active:
            return []
        rows = [row for path in self._parts() for row in read_results(path)]
        self.dist.barrier()
        return rows

    def results_path(self) -> Path:
        """Where this process appends its rows: ``results.csv``, or its own part file."""
        if not self.active:
            return self.out_dir / RESULTS_CSV
        folder = self.out_dir / PARTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"results.rank{self.dist.rank}.csv"

    def others(self, entries: Sequence[GridEntry]) -> set[str]:
        """Keys of the entries of the next model × case that other processes run (call once
        per model × case, in the report's order)."""
        first, self.next_item = self.next_item, self.next_item + len(entries)
        if not self.active:
            return set()
        return {e.key for i, e in enumerate(entries, first) if not self.dist.owns(i)}

    def finish(self, result) -> None:
        """Wait for every process; sum the counts of ``result`` (a
        :class:`~vafa.report.job.ReportResult`) over them; unless any process was
        cancelled, rank 0 merges the part files into ``results.csv``."""
        if not self.active:
            return
        dist = self.dist
        result.cancelled = dist.any(result.cancelled)
        counts = dist.sum(torch.tensor([result.ran, result.skipped, result.failed]))
        result.ran, result.skipped, result.failed = (int(v) for v in counts.tolist())
        if dist.is_writer and not result.cancelled:
            self._merge()
        dist.barrier()

    # ------------------------------------------------------------------ helpers
    def _parts(self) -> list[Path]:
        return sorted((self.out_dir / PARTS_DIR).glob("results.rank*.csv"))

    def _merge(self) -> None:
        """``results.csv`` then every part's rows (a row already there is not repeated: a
        merge cut short, or one case-load failure seen by several processes), atomically."""
        csv_path = self.out_dir / RESULTS_CSV
        parts = self._parts()
        rows: list[dict[str, str]] = []
        seen: set[tuple[str, ...]] = set()
        for path in [csv_path, *parts]:
            for row in _raw_rows(path):
                ident = tuple(row[k] for k in RESULT_FIELDS)
                if ident not in seen:
                    seen.add(ident)
                    rows.append(row)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, RESULT_FIELDS)  # the dialect of ResultsWriter
        writer.writeheader()
        writer.writerows(rows)
        write_text(csv_path, buffer.getvalue())
        for path in parts:
            path.unlink()
        with contextlib.suppress(OSError):  # not empty: something else lives there
            (self.out_dir / PARTS_DIR).rmdir()


def _raw_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results file as written (strings), without a torn last line."""
    if not path.is_file():
        return []
    read_results(path)  # checks the columns
    with open(path, newline="", encoding="utf-8") as f:
        return [
            raw
            for raw in csv.DictReader(f)
            if None not in raw and all(v is not None for v in raw.values())
        ]
