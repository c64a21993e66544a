"""Background work of the VAFT widget: a plain generator (no Qt) that napari runs in a thread.

:func:`run_training` loads the base model (a fresh copy every run: training changes it in
place), drives :func:`vafa.training.iter_train` and yields small :class:`TrainProgress`
records for the GUI: the loss terms of the updates and the validation rounds since the last
record, plus where the run stands. Records are throttled (at most one every
``TrainJob.interval`` seconds, except that a finished validation round is sent at once), so a
fast run cannot flood the GUI thread whatever the model's speed.

Cancelling: the GUI sets a :class:`threading.Event`; at the trainer's next event the generator
sends ``False`` into :func:`~vafa.training.iter_train`, which saves ``latest`` within one
iteration and returns. From then on the generator yields nothing more: it drains the trainer to
its end, so the save also completes when napari's worker is asked to quit (widget closed).
Errors never escape: the generator *returns* a :class:`~napari_vafa._worker.JobFailed`
(missing datalist files, labels with too many classes, an unwritable folder … are raised by
the trainer at its first step, before any file of an earlier run is touched).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_vafa._worker import JobCancelled, JobFailed, ModelSpec, _load_model, load_in_worker

if TYPE_CHECKING:
    from vafa.io.volume import Volume
    from vafa.training import TrainingConfig, TrainingEvent, TrainingResult

__all__ = [
    "TrainDone",
    "TrainJob",
    "TrainProgress",
    "run_training",
]


@dataclass
class TrainJob:
    """Everything one training run needs (built on the GUI thread, used in the worker).

    Attributes:
        model: the base model to fine-tune (its ``device`` is where training runs; the
            weights are loaded on the CPU first).
        train_data: a datalist JSON path, or ``[(image, labels)]`` volume pairs (file units,
            labels on the image's grid).
        val_data: validation pairs; None: the datalist's ``validation`` list (or none).
        out_dir: the output folder (checked on the GUI thread; the trainer checks again).
        config: the hyper-parameters.
        overwrite: replace an earlier run in ``out_dir``.
        roi: patch size (the new model card's ``roi_size``); None: the base card's.
        threads: ``torch.set_num_threads`` in the worker thread; None leaves it alone.
        interval: least seconds between two progress records (0: one per trainer event).
    """

    model: ModelSpec
    train_data: Path | list[tuple[Volume, Volume]]
    val_data: list[tuple[Volume, Volume]] | None
    out_dir: Path
    config: TrainingConfig
    overwrite: bool = False
    roi: tuple[int, int, int] | None = None
    threads: int | None = None
    interval: float = 0.2


@dataclass
class TrainProgress:
    """Where the run stands, and the new points of the curves since the last record.

    Attributes:
        stage: stage of the latest trainer event (``"attack"``, ``"train"``, ``"validation"``).
        iteration, total: updates done / planned.
        epoch, epochs: current epoch (1-based) / planned.
        lr: learning rate of the last update.
        elapsed: seconds since training started.
        losses: ``(iteration, {"loss", "clean", "adv", "fr"})`` of every update since the
            last record (only the mode's terms).
        validations: ``(iteration, validation)`` of every finished validation round since the
            last record (``dice_fg_clean``, ``dice_fg_adv``, … see
            :class:`vafa.training.TrainingEvent`).
        attack_step, attack_steps: the attack making the current batch (or validating).
        case, cases: validation progress.
    """

    stage: str
    iteration: int
    total: int
    epoch: int
    epochs: int
    lr: float = 0.0
    elapsed: float = 0.0
    losses: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    validations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    attack_step: int | None = None
    attack_steps: int | None = None
    case: int | None = None
    cases: int | None = None

    @property
    def loss(self) -> float:
        """The total loss of the last update in this record (NaN when there is none)."""
        return self.losses[-1][1].get("loss", math.nan) if self.losses else math.nan


@dataclass
class TrainDone:
    """A finished (possibly cancelled) run.

    Attributes:
        result: the trainer's :class:`vafa.training.TrainingResult` (checkpoint paths,
            iterations, epochs, ``cancelled``, last validation, …).
        tail: the curve points not yet sent in a :class:`TrainProgress` (or None).
        timings: seconds spent loading the model and training.
    """

    result: TrainingResult
    tail: TrainProgress | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path | None:
        """The model to use next: ``best`` when written, else ``latest`` (None: neither)."""
        for path in (self.result.best, self.result.latest):
            if path is not None and path.is_file():
                return path
        return None


def run_training(
    job: TrainJob, cancel: threading.Event
) -> Generator[TrainProgress, Any, TrainDone | JobFailed | JobCancelled]:
    """Run one VAFT training: yields :class:`TrainProgress` records, returns the outcome.

    Never raises: failures come back as :class:`~napari_vafa._worker.JobFailed`; a cancel
    before training started as :class:`~napari_vafa._worker.JobCancelled`.

    Args:
        job: what to run.
        cancel: set it to stop: ``latest`` is saved within one iteration.
    """
    timings: dict[str, float] = {}
    try:
        model, card = load_in_worker(job.threads, load_base_model, job.model, timings)
        if job.roi is not None:
            card = replace(card, roi_size=tuple(job.roi))
        if cancel.is_set():
            return JobCancelled(timings)
        start = time.perf_counter()
        result, tail = yield from _train(job, model, card, cancel)
        timings["train"] = time.perf_counter() - start
        return TrainDone(result, tail, timings)
    except Exception as err:  # every failure becomes a notification, never a crash
        return JobFailed.from_exception(err)


def load_base_model(spec: ModelSpec):
    """``(model, card)`` of ``spec``, on the CPU (the trainer moves it to ``spec.device``)."""
    return _load_model(replace(spec, device="cpu"))


def _train(job: TrainJob, model, card, cancel: threading.Event):
    from vafa.run.progress import relay
    from vafa.training import iter_train

    steps = iter_train(
        model,
        card,
        job.train_data,
        job.val_data,
        out_dir=job.out_dir,
        config=job.config,
        overwrite=job.overwrite,
        device=job.model.device,
    )
    throttle = _Throttle(job.interval, cancel)
    result = yield from relay(steps, throttle, cancel=cancel)
    return result, throttle.pending.tail()


class _Throttle:
    """Training events in, at most one progress record every ``interval`` seconds out (a
    finished validation round at once); after a cancel none: the trainer is drained to its end."""

    def __init__(self, interval: float, cancel: threading.Event) -> None:
        self.interval = interval
        self.cancel = cancel
        self.pending = _Pending()
        self.last_sent = -math.inf

    def __call__(self, event: TrainingEvent) -> TrainProgress | None:
        self.pending.add(event)
        now = time.perf_counter()
        if self.cancel.is_set() or not (
            self.pending.validations or now - self.last_sent >= self.interval
        ):
            return None
        record = self.pending.record(event)
        self.pending, self.last_sent = _Pending(), now
        return record


class _Pending:
    """Curve points collected between two progress records."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, dict[str, float]]] = []
        self.validations: list[tuple[int, dict[str, Any]]] = []
        self.last: TrainingEvent | None = None

    def add(self, event: TrainingEvent) -> None:
        self.last = event
        if event.stage == "train" and event.losses:
            self.losses.append((event.iteration, dict(event.losses)))
        if event.validation is not None:
            self.validations.append((event.iteration, dict(event.validation)))

    def record(self, event: TrainingEvent) -> TrainProgress:
        return TrainProgress(
            stage=event.stage,
            iteration=event.iteration,
            total=event.total,
            epoch=event.epoch,
            epochs=event.epochs,
            lr=event.lr,
            elapsed=event.elapsed,
            losses=self.losses,
            validations=self.validations,
            attack_step=event.attack_step,
            attack_steps=event.attack_steps,
            case=event.case,
            cases=event.cases,
        )

    def tail(self) -> TrainProgress | None:
        if self.last is None or not (self.losses or self.validations):
            return None
        return self.record(self.last)
