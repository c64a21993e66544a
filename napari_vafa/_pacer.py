"""GUI work cut into pieces, one piece per event-loop turn, so that napari stays responsive.

Adding a napari layer costs 0.1–0.2 s of GUI-thread time on a small CPU (its vispy visual, its
controls, the selection change), and a run's results are eight layers. :class:`Pacer` runs
such work one piece at a time, :data:`TURN_MS` apart: a real timer, not a zero-delay call, so
Qt handles input, other timers and paints between two pieces (with zero-delay calls two
layers' work ran back to back: 360–400 ms without handling input).

A piece is a callable; it may return more pieces (e.g. "make the layer" returns "insert it",
which returns "show it"), which run next, before the rest of the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TURN_MS", "Pacer", "Piece"]

#: ms between two pieces.
TURN_MS = 10

#: One piece of GUI work; returns the pieces that must follow it (or None).
Piece = Callable[[], "Iterable[Piece] | None"]


class Pacer:
    """A queue of GUI pieces run one per event-loop turn (on the GUI thread).

    Args:
        on_error: called with the exception when a piece raises; the queue is then dropped
            (what follows a failed piece depends on it).
    """

    def __init__(self, on_error: Callable[[Exception], Any]) -> None:
        self._queue: deque[Piece] = deque()
        self._scheduled = False
        self._on_error = on_error

    @property
    def busy(self) -> bool:
        """Whether pieces are waiting."""
        return bool(self._queue) or self._scheduled

    def run(self, pieces: Iterable[Piece]) -> None:
        """Queue ``pieces`` (after those already waiting)."""
        self._queue.extend(pieces)
        self._schedule()

    def clear(self) -> None:
        """Drop the waiting pieces (a piece already scheduled finds an empty queue)."""
        self._queue.clear()

    def _schedule(self) -> None:
        if self._queue and not self._scheduled:
            from qtpy.QtCore import QTimer

            self._scheduled = True
            QTimer.singleShot(TURN_MS, self._next)

    def _next(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        piece = self._queue.popleft()
        try:
            follow = piece()
        except Exception as err:  # report, and keep the GUI usable
            self._queue.clear()
            self._on_error(err)
            return
        if follow:
            self._queue.extendleft(reversed(list(follow)))
        self._schedule()
