"""GUI work cut into pieces, one per event-loop turn, so that napari stays responsive.

Adding a napari layer costs 0.1–0.2 s of GUI-thread time on a small CPU (its vispy visual, its
controls, the selection change), and a run's results are eight layers. :class:`Pacer` runs
such work one piece at a time, :data:`TURN_MS` apart: a real timer, not a zero-delay call, so
Qt handles input, other timers and paints between two pieces (with zero-delay calls two
layers' work ran back to back: 360–400 ms without handling input).

A piece is a callable; it may return more pieces (e.g. "make the layer" returns "insert it",
which returns "show it"), which run next, before the rest of the queue.

Two rules keep a piece and a repaint from running back to back (Qt paints the window right
after a piece, before it looks at input or timers; a layer's insertion, 90–170 ms, and the
repaint it causes, 60–150 ms under software OpenGL, were one stretch of 200–290 ms):

* a heavy piece can have its repaint moved to a turn of its own (:func:`paint_apart`): the
  window's updates are held while it runs, and it is painted one turn later;
* a piece whose timer fires late (the loop was busy, painting most likely) waits one more turn,
  so that input and the timers that came due meanwhile go first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["LATE_MS", "MAX_WAITS", "TURN_MS", "Pacer", "Piece", "paint_apart"]

#: ms between two pieces.
TURN_MS = 10
#: A piece's timer that fires later than this (ms) found the event loop busy — painting, most
#: likely — and waits one more turn, so that input and timers that came due meanwhile go first.
LATE_MS = 15
#: At most this many such waits in a row (a loop busy with other work still gets the pieces).
MAX_WAITS = 5

#: One piece of GUI work; returns the pieces that must follow it (or None).
Piece = Callable[[], "Iterable[Piece] | None"]


def paint_apart(piece: Piece) -> Piece:
    """``piece`` as one whose repaint waits for a turn of its own."""

    def apart():
        return piece()

    apart.paint_apart = True  # type: ignore[attr-defined]
    apart.__wrapped__ = piece  # type: ignore[attr-defined]
    return apart


class Pacer:
    """A queue of GUI pieces run one per event-loop turn (on the GUI thread).

    Args:
        on_error: called with the exception when a piece raises; the queue is then dropped
            (what follows a failed piece depends on it).
        window: returns the top-level window whose updates are held while a
            :func:`paint_apart` piece runs (None: such pieces paint as any other).
    """

    def __init__(
        self, on_error: Callable[[Exception], Any], window: Callable[[], Any] | None = None
    ) -> None:
        self._queue: deque[Piece] = deque()
        self._scheduled = False
        self._on_error = on_error
        self._window = window
        self._held = None  # the window while its updates are held
        self._due = 0.0  # when the scheduled call is due (perf_counter seconds)
        self._waits = 0
        #: a list to record ``(what, start, seconds)`` of every piece and held repaint in
        #: (benchmarks: which piece a GUI stall was); None records nothing
        self.trace: list[tuple[str, float, float]] | None = None

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
        self._release(repaint=False)

    def _schedule(self) -> None:
        if self._queue and not self._scheduled:
            self._later(self._next)

    def _later(self, call: Callable[[], None]) -> None:
        from qtpy.QtCore import QTimer

        self._scheduled = True
        self._due = time.perf_counter() + TURN_MS / 1000
        QTimer.singleShot(TURN_MS, call)

    def _next(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        late = time.perf_counter() - self._due > LATE_MS / 1000
        if late and self._waits < MAX_WAITS:
            self._waits += 1
            self._schedule()
            return
        self._waits = 0
        piece = self._queue.popleft()
        began = time.perf_counter()
        try:
            if getattr(piece, "paint_apart", False):
                self._hold()
            follow = piece()
            self._record(piece, began)
        except Exception as err:  # report, and keep the GUI usable
            self._queue.clear()
            self._release(repaint=False)
            self._on_error(err)
            return
        if follow:
            self._queue.extendleft(reversed(list(follow)))
        if self._held is not None:
            self._later(self._paint_turn)
        else:
            self._schedule()

    def _paint_turn(self) -> None:
        """The held repaint, in its own turn; the next piece a turn later."""
        self._scheduled = False
        began = time.perf_counter()
        self._release(repaint=True)
        self._record("repaint", began)
        self._schedule()

    def _record(self, piece, began: float) -> None:
        if self.trace is not None:
            name = piece if isinstance(piece, str) else _name(piece)
            self.trace.append((name, began, time.perf_counter() - began))

    def _hold(self) -> None:
        window = self._window() if self._window is not None else None
        if window is not None and window.updatesEnabled():  # not held by someone else
            window.setUpdatesEnabled(False)
            self._held = window

    def _release(self, repaint: bool) -> None:
        """Updates on again (which schedules a repaint); ``repaint``: paint now, so that
        the next piece's timer cannot expire during the paint and run right after it."""
        window, self._held = self._held, None
        if window is None:
            return
        try:
            window.setUpdatesEnabled(True)
            if repaint:
                window.repaint()
        except RuntimeError:  # the window was deleted meanwhile
            pass


def _name(piece) -> str:
    """A readable name of a piece (its function, and the key it closes over if any)."""
    inner = getattr(piece, "__wrapped__", piece)
    name = getattr(inner, "__qualname__", repr(inner))
    cells = getattr(inner, "__closure__", None) or ()
    keys = [c.cell_contents for c in cells if isinstance(c.cell_contents, str)]
    return f"{name}[{keys[0]}]" if keys else name
