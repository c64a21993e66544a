"""Background work of the attack widget's "Compare attacks" button (no Qt).

:func:`run_comparison` runs the paper's Table-1 grid (:func:`vafa.report.table1_grid`: clean,
PGD/FGSM/BIM, GN, VAFA-2D, VAFA; trimmed with ``quick``) on the widget's volume and model with
:func:`vafa.report.iter_grid`, yielding a small :class:`CompareProgress` per attack step and a
finished row after every entry, so that the metrics dock can grow its table and bars live.
Cancelling (the ``cancel`` event) stops within one attack step; the rows done so far are kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from napari_vafa._worker import (
    JobCancelled,
    JobFailed,
    ModelCache,
    ModelSpec,
    load_in_worker,
)

if TYPE_CHECKING:
    from vafa.io.volume import Volume
    from vafa.report import GridProgress
    from vafa.report.grid import GridEntry

__all__ = ["CompareDone", "CompareJob", "CompareProgress", "run_comparison"]


@dataclass
class CompareJob:
    """A comparison run: the volume (file units), optional labels, the model, the grid size
    (``grid``: the entries to run; None: :func:`vafa.report.table1_grid` of ``quick``) and
    the threat model of its attacks (``through``)."""

    image: Volume
    labels: Volume | None
    model: ModelSpec
    quick: bool = True
    seed: int | None = 0
    threads: int | None = None
    grid: list[GridEntry] | None = None
    through: str = "tiles"


@dataclass
class CompareProgress:
    """One attack step of entry ``index``/``total``; ``row`` (with ``label``) is set when the
    entry ends."""

    index: int
    total: int
    label: str
    step: int = 0
    steps: int = 0
    row: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: GridProgress) -> CompareProgress:
        """The record of one :func:`vafa.report.iter_grid` event."""
        step, label = event.step, event.entry.label
        return cls(
            index=event.index,
            total=event.total,
            label=label,
            step=0 if step is None else step.step,
            steps=0 if step is None else step.total,
            row=None if event.row is None else {**event.row, "label": label},
        )


@dataclass
class CompareDone:
    """The rows of the grid (:data:`vafa.report.RESULT_FIELDS` and the entry's ``label``);
    ``cancelled`` if stopped. ``per_class``: ``{entry key: {foreground class: adversarial
    Dice}}`` of the attacks that finished (the worst case per class comes from it)."""

    rows: list[dict[str, Any]]
    entries: list[GridEntry]
    model_name: str
    cancelled: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)


def run_comparison(
    job: CompareJob, cancel: threading.Event, cache: ModelCache | None = None
) -> Generator[CompareProgress, Any, CompareDone | JobFailed | JobCancelled]:
    """Run the grid: yields :class:`CompareProgress`, returns the result (never raises)."""
    timings: dict[str, float] = {}
    try:
        from vafa.report import iter_grid, table1_grid
        from vafa.run.progress import relay

        model, card = load_in_worker(job.threads, (cache or ModelCache()).get, job.model, timings)
        if cancel.is_set():
            return JobCancelled(timings)
        entries = job.grid if job.grid is not None else table1_grid(quick=job.quick)
        entries = [e if e.attack == "clean" else replace(e, through=job.through) for e in entries]
        name = job.model.describe()
        per_class: dict[str, dict[str, float | None]] = {}

        first = card.heads().first_foreground  # softmax: after the background; sigmoid: all

        def keep_classes(entry: GridEntry, outcome: Any) -> None:  # the foreground classes
            per_class[entry.key] = dict(
                list(outcome.metrics.dice_per_class.adversarial.items())[first:]
            )

        grid = iter_grid(
            model,
            card,
            job.image,
            job.labels,
            entries,
            model_name=name,
            case_name=job.image.source.name if job.image.source else "layer",
            device=job.model.device,
            seed=job.seed or 0,
            on_outcome=keep_classes,
        )
        start = time.perf_counter()
        rows = yield from relay(grid, CompareProgress.of, cancel=cancel)
        labels = {entry.key: entry.label for entry in entries}
        rows = [{**row, "label": labels.get(row["key"], row["key"])} for row in rows]
        timings["grid"] = time.perf_counter() - start
        cancelled = cancel.is_set()
        return CompareDone(rows, entries, name, cancelled, timings, per_class)
    except Exception as err:  # every failure becomes a notification, never a crash
        return JobFailed.from_exception(err)
