"""Short garbage-collector pauses while a background job runs.

A full (generation-2) collection walks every tracked object of the process while holding the
GIL; with napari, Qt and torch loaded that takes about 0.45 s on a small CPU, and the GUI
freezes whichever thread triggered it (measured: a 464 ms GUI gap in the middle of an attack,
one full collection in the worker). While a job runs, the objects that existed before it are
frozen (:func:`gc.freeze` moves them to a permanent generation the collector skips, in O(1)),
so collections only walk what the job created; the last job to end unfreezes them
(:func:`gc.unfreeze`) and the collector works on everything again.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_old_objects", "unfreeze_old_objects"]

_jobs = 0


def freeze_old_objects() -> None:
    """A job starts (GUI thread): freeze what exists now, unless another job already did."""
    global _jobs
    if _jobs == 0:
        gc.freeze()
    _jobs += 1


def unfreeze_old_objects() -> None:
    """A job ended (GUI thread): unfreeze when it was the last one running."""
    global _jobs
    if _jobs == 0:
        return
    _jobs -= 1
    if _jobs == 0:
        gc.unfreeze()
