"""What the plugin's dock widgets share: one background job at a time, Run/Cancel, a status line,
a plots dock, input checks of image and labels layers, and clean behaviour when napari closes.

:class:`WorkerWidget` is a magicgui :class:`~magicgui.widgets.Container`. A subclass builds its
controls (it must create ``run_button``, ``cancel_button`` and ``status`` with
:meth:`_make_run_controls`), lists the controls to disable while running in ``_input_names``,
and implements ``_make_job`` (GUI thread, raises ``ValueError``/``TypeError``/``OSError`` for bad
input) and ``_start`` (calls :meth:`_start_worker`). Results come back through the subclass's
``_on_progress`` / ``_on_returned``; :meth:`_on_finished` and :meth:`_on_destroyed` are shared.

The worker's generator must never raise (errors are returned as a value, see
:func:`napari_vafa._worker.run_job`) and must stop when its ``cancel`` event is set.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_vafa._pacer import Pacer

if TYPE_CHECKING:
    import napari

    from vafa.io.volume import Volume

__all__ = [
    "WorkerWidget",
    "image_layer_volume",
    "labels_on_image_grid",
    "layer_choices",
    "notify_error",
    "notify_info",
]


def notify_error(message: str) -> None:
    """An error notification in napari (one place, so that tests can record them)."""
    show_error(message)


def notify_info(message: str) -> None:
    show_info(message)


def image_layer_volume(viewer, layer, purpose: str) -> tuple[Volume, np.ndarray]:
    """The 3D image ``layer`` as a :class:`~vafa.io.volume.Volume` in file order and units.

    Args:
        viewer: the viewer the layer must still belong to.
        layer: the chosen image layer (or None).
        purpose: what needs it, for messages (``"the attack"``, ``"training"``).

    Returns:
        ``(volume, data)``: the volume (affine from the layer's metadata, or its scale and
        translate; ``source`` set when the layer came from a file) and a float32 copy of the
        layer's data in napari's ``(k, j, i)`` order.

    Raises:
        ValueError: no layer, a layer not in the viewer, a 2D/4D/RGB/multiscale layer, NaN/Inf.
    """
    from napari_vafa._layers import finite_float_data, layer_to_volume

    if layer is None or layer not in viewer.layers:
        raise ValueError(
            "no image layer: open a 3D volume first (File ▸ Open, or File ▸ Open Sample ▸ "
            "napari-vafa)"
        )
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False) or layer.ndim != 3:
        kind = "an RGB" if getattr(layer, "rgb", False) else f"a {layer.ndim}D"
        raise ValueError(
            f"image layer {layer.name!r} is {kind} layer; {purpose} needs a 3D single-channel "
            f"volume, got data of shape {tuple(np.shape(layer.data))}"
        )
    data = finite_float_data(layer)
    return layer_to_volume(data, layer.metadata, layer.scale, layer.translate), data


def layer_choices(viewer, kind: str, exclude=None) -> list[tuple[str, Any]]:
    """``(name, layer)`` of the viewer's napari ``kind`` layers (``"Image"``, ``"Labels"``),
    in list order, without those ``exclude(layer)`` rejects (e.g. a widget's own results)."""
    import napari.layers

    cls = getattr(napari.layers, kind)
    return [
        (layer.name, layer)
        for layer in viewer.layers
        if isinstance(layer, cls) and not (exclude is not None and exclude(layer))
    ]


def labels_on_image_grid(viewer, labels, image_layer, image: Volume, hint: str) -> Volume:
    """The labels layer as a Volume on ``image``'s grid (its own dtype kept). A 4D image layer
    (channels first) is compared by its last three axes.

    Raises:
        ValueError: the layer was deleted, or its shape/scale/translate differ from the
            image layer's (``hint`` says what to do instead).
    """
    if labels not in viewer.layers:
        raise ValueError(f"labels layer {labels.name!r} was deleted")
    shape = tuple(np.shape(labels.data))
    grid_shape = tuple(np.shape(image_layer.data))[-3:]
    if shape != grid_shape:
        raise ValueError(
            f"labels layer {labels.name!r} has shape {shape} but image layer "
            f"{image_layer.name!r} has shape {grid_shape}; {hint}"
        )
    scale = tuple(image_layer.scale)[-3:]
    if not (
        np.allclose(labels.scale, scale)
        and np.allclose(labels.translate, tuple(image_layer.translate)[-3:])
    ):
        raise ValueError(
            f"labels layer {labels.name!r} (scale {tuple(labels.scale)}) is not on the grid of "
            f"image layer {image_layer.name!r} (scale {scale})"
        )
    values = np.asarray(labels.data)
    return image.with_array(np.transpose(values, (2, 1, 0)).astype(np.float32), dtype=values.dtype)


def _unfreeze() -> None:
    from napari_vafa._gc import unfreeze_old_objects

    unfreeze_old_objects()


class WorkerWidget(Container):
    """Base of a dock widget running one background job at a time.

    Class attributes a subclass sets: ``TITLE`` (prefix of notifications), ``PLOTS_DOCK`` (name
    of the dock of ``self.plots``), ``CANCEL_TEXT`` (status while cancelling).

    Args:
        napari_viewer: the viewer.
        plots: the QWidget docked beside the widget (curves, bars).
    """

    TITLE = ""
    PLOTS_DOCK = ""
    CANCEL_TEXT = "cancelling…"
    #: ms between the click and the worker's start (the GUI settles first)
    START_DELAY_MS = 50

    def __init__(self, napari_viewer: napari.viewer.Viewer, plots) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.plots = plots
        self._worker = None
        self._cancel: threading.Event | None = None
        self._pbar = None
        self._started = 0.0
        self._closed = False
        #: GUI work of a run cut into pieces (new layers), run one per event-loop turn
        self.pacer = Pacer(self._on_pacer_error, self._main_window)

    def _main_window(self):
        """The top-level window this widget is in (a floating dock's main window too)."""
        widget = self.native
        while widget.parentWidget() is not None:
            widget = widget.parentWidget()
        return widget

    def _make_run_controls(self) -> Container:
        """Create ``run_button``, ``cancel_button`` and ``status``; returns the button row."""
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="", value="ready")
        return Container(
            layout="horizontal",
            labels=False,
            label="",
            widgets=[self.run_button, self.cancel_button],
        )

    def _connect(self) -> None:
        """Wire Run/Cancel, layer-list changes and destruction; call once controls exist."""
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for name in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, name).connect(self.reset_choices)
        self.native.destroyed.connect(self._on_destroyed)
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumHeight(5 * self.status.native.fontMetrics().lineSpacing())
        self._update_visibility()
        # dock the plots once napari has docked this widget (drawn before any run)
        QTimer.singleShot(0, self._ensure_plots_docked)

    # ------------------------------------------------------------------ subclass hooks
    @staticmethod
    def _input_names() -> tuple[str, ...]:
        return ()

    def _update_visibility(self, *_: Any) -> None:
        """Show only the controls that apply (subclasses)."""

    def _make_job(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _start(self, job) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _after_worker(self, worker) -> None:
        """The worker has ended (GUI thread; the widget still exists)."""
        self._finish_run()

    # ------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        """Whether a job is running."""
        return self._worker is not None

    def _set_running(self, running: bool) -> None:
        for name in self._input_names():
            getattr(self, name).enabled = not running
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        if not running:
            self._update_visibility()

    def _finish_run(self) -> None:
        try:
            self._set_running(False)
        except RuntimeError:  # the Qt widgets are gone (napari closed)
            self._closed = True

    # ------------------------------------------------------------------ run and cancel
    def run(self, *_: Any) -> bool:
        """Start a job with the current settings (returns False when it did not start).

        Bad input becomes a napari error notification; the widget stays usable.
        """
        if self.is_running:
            return False
        try:
            job = self._make_job()
        except (ValueError, TypeError, OSError) as err:
            notify_error(f"{self.TITLE}: {err}")
            self.status.value = f"not started: {err}"
            return False
        self._start(job)
        return True

    def cancel(self, *_: Any) -> None:
        """Ask the job to stop (it ends within one step or iteration)."""
        if self._cancel is not None and self.is_running:
            self._cancel.set()
            self.cancel_button.enabled = False
            self.status.value = self.CANCEL_TEXT

    @property
    def cancelling(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def _start_worker(self, function, job, *extra, progress: str, worker_class=None):
        """Run ``function(job, cancel_event, *extra)`` in a napari generator worker.

        Its ``yielded`` values go to ``self._on_progress``, its return value to
        ``self._on_returned``; a progress bar ``progress`` is opened in the activity dock where
        that is cheap (:mod:`napari_vafa._progress`).
        """
        from napari.qt.threading import create_worker

        from napari_vafa._progress import open_activity_progress

        self._cancel = threading.Event()
        self._started = time.perf_counter()
        self._ensure_plots_docked()
        self._pbar = open_activity_progress(progress)
        kwargs = {} if worker_class is None else {"_worker_class": worker_class}
        worker = create_worker(
            function, job, self._cancel, *extra, _start_thread=False, _ignore_errors=True, **kwargs
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True)
        # start on a later event-loop turn: what the click just changed (a new preview layer,
        # the disabled controls) is painted while the CPU is still free of the job
        QTimer.singleShot(self.START_DELAY_MS, lambda: self._launch(worker))
        return worker

    def _launch(self, worker) -> None:
        from napari_vafa._gc import freeze_old_objects

        if self._worker is not worker or self._closed:
            return
        if self.pacer.busy:  # the click's GUI work (e.g. a new preview layer) first, on an idle CPU
            QTimer.singleShot(self.START_DELAY_MS, lambda: self._launch(worker))
            return
        freeze_old_objects()
        worker.finished.connect(_unfreeze)
        worker.start()

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started

    # ------------------------------------------------------------------ worker → GUI
    def _on_progress(self, progress) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_returned(self, result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_errored(self, err: BaseException) -> None:  # pragma: no cover - jobs never raise
        if self._closed:
            return
        notify_error(f"{self.TITLE} failed: {err}")
        self.status.value = f"failed: {err}"

    def _on_pacer_error(self, err: Exception) -> None:
        """A piece of GUI work failed (e.g. a layer update): report, keep the widget usable."""
        if self._closed:
            return
        notify_error(f"{self.TITLE}: could not show the result: {err}")
        self.status.value = f"failed to show the result: {err}"
        if self._worker is None:
            self._finish_run()

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if not self._closed:
            self._after_worker(worker)

    def _on_destroyed(self, *_: Any) -> None:
        """The widget or napari is closing: stop the job."""
        self._closed = True
        self.pacer.clear()
        if self._cancel is not None:
            self._cancel.set()
        if self._worker is not None:
            self._worker.quit()

    # ------------------------------------------------------------------ plots dock
    def _ensure_plots_docked(self) -> None:
        if self._closed:
            return
        try:
            window = self.viewer.window
            if self.plots in window.dock_widgets.values():
                return
            window.add_dock_widget(self.plots, name=self.PLOTS_DOCK, area="right")
        except (AttributeError, RuntimeError):  # the viewer was closed meanwhile
            pass
