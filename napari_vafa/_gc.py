"""Short garbage-collector pauses while background jobs run and their results are shown.

A full (generation-2) collection walks every tracked object of the process while holding the
GIL; with napari, Qt and torch loaded that takes about 0.45 s on a small CPU, and the GUI
freezes whichever thread triggered it (measured: a 464 ms GUI gap in the middle of an attack,
one full collection in the worker; and 466–606 ms while the first run's clean-prediction layer
was inserted, right after the job had unfrozen the objects). While a job runs, the objects that
existed before it are frozen (:func:`gc.freeze` moves them to a permanent generation the
collector skips, in O(1)), so collections only walk what the job created.

They stay frozen after the last job ends — its result layers are still being shown, and a
teacher moves the next slider within seconds — and are unfrozen, with the one full collection
that catches up, only once no job has run for :data:`IDLE_UNFREEZE_MS` (the GUI is idle then).
A job that starts meanwhile keeps them frozen (and freezes what is new).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

__all__ = ["IDLE_UNFREEZE_MS", "freeze_old_objects", "unfreeze_now", "unfreeze_old_objects"]

#: ms without any job after which the old objects are unfrozen and collected.
IDLE_UNFREEZE_MS = 5000

_jobs = 0
_frozen = False
_token = 0


def _later(ms: int, call: Callable[[], None]) -> None:
    from qtpy.QtCore import QTimer

    QTimer.singleShot(ms, call)


def freeze_old_objects() -> None:
    """A job starts (GUI thread): freeze what exists now, unless a running job already did."""
    global _jobs, _frozen, _token
    if _jobs == 0:
        gc.freeze()  # also when still frozen from an earlier job: adds what is new since
        _frozen = True
        _token += 1  # an unfreeze waiting for the GUI to be idle is off
    _jobs += 1


def unfreeze_old_objects() -> None:
    """A job ended (GUI thread): when it was the last, unfreeze once the GUI has been idle
    for :data:`IDLE_UNFREEZE_MS`."""
    global _jobs
    if _jobs == 0:
        return
    _jobs -= 1
    if _jobs == 0:
        token = _token
        _later(IDLE_UNFREEZE_MS, lambda: _idle_unfreeze(token))


def _idle_unfreeze(token: int) -> None:
    """No job since ``token``: unfreeze, and let the one full collection run now."""
    global _frozen
    if token != _token or _jobs or not _frozen:
        return
    gc.unfreeze()
    _frozen = False
    gc.collect()


def unfreeze_now() -> None:
    """Unfreeze at once when no job runs (e.g. napari closing, or between tests)."""
    global _token
    if _jobs == 0 and _frozen:
        _token += 1
        _idle_unfreeze(_token)
