"""Progress of generator jobs: :func:`relay` forwards a job's events, :class:`StepBar` draws them.

Long work in the library is a generator job: it yields an event after every step, takes
``False`` sent back as "cancel" and returns its result (:meth:`vafa.attacks.Attack.iter_attack`,
:func:`vafa.run.tiling.iter_attack_volume`, :func:`vafa.training.iter_train`, …). Two drivers
run one: :func:`vafa.attacks.drive` to its end with a callback (``callback(event) -> bool |
None``), and :func:`relay` inside another generator (``result = yield from relay(job, …)``), which
is how wrapping jobs and the napari workers re-yield events. :class:`StepBar` is the one consumer
that draws attack events as a text bar (the napari plugin draws its own, in the GUI thread).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from typing import TypeVar

from vafa.attacks.base import StepEvent

__all__ = ["StepBar", "relay"]

E = TypeVar("E")
T = TypeVar("T")
R = TypeVar("R")


def relay(
    job: Generator[E, bool | None, R],
    transform: Callable[[E], T | None],
    *,
    cancel: threading.Event | None = None,
) -> Generator[T, bool | None, R]:
    """Forward a generator job's events, and the answers sent back, to the job.

    ``result = yield from relay(job, transform, cancel=flag)`` yields ``transform(event)`` for
    every event of ``job`` and sends the value sent back for it into ``job``; a transform that
    returns None yields nothing for that event (the job is then sent None). Returns the job's
    return value.

    Args:
        job: a generator job (events out, ``False`` in cancels, result returned).
        transform: event → what to yield (e.g. a progress record), or None to yield nothing.
        cancel: a flag: while it is set, ``False`` is sent into ``job`` whatever came back
            (a GUI's cancel button); an answer ``False`` sets it (so it also tells afterwards
            whether the job was stopped).

    Returns:
        The return value of ``job``.
    """
    try:
        event = next(job)
        while True:
            record = transform(event)
            answer = None if record is None else (yield record)
            if cancel is not None:
                if answer is False:
                    cancel.set()
                answer = False if cancel.is_set() else answer
            event = job.send(answer)
    except StopIteration as stop:
        return stop.value


class StepBar:
    """A tqdm bar with one tick per attack step of every tile batch (on stderr).

    Args:
        title: text before the bar.

    Use as the ``callback`` of an attack, then :meth:`close` it.
    """

    def __init__(self, title: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=title, unit="step", leave=False, file=sys.stderr)

    def __call__(self, event: StepEvent) -> None:
        total = event.total * (event.tiles or 1)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(1)
        postfix = {"dice": f"{event.dice:.3f}"}
        if event.ssim is not None:
            postfix["ssim"] = f"{event.ssim:.3f}"
        if event.tiles and event.tiles > 1:
            postfix["tile"] = f"{event.tile}/{event.tiles}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()

    @staticmethod
    def write(text: str) -> None:
        """Print a line without breaking a running bar."""
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
