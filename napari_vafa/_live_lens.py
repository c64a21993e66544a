"""The attack widget's live lens on the GUI side: when to ask for a lens, where, and showing it.

A lens is asked for when a slider is released, an attack setting changes, *live lens* is ticked
or the view moves to another place (a quarter of the cube or more); settings changes wait
:data:`SETTLE_MS` (a typed number, a combo), view moves :data:`VIEW_SETTLE_MS` (scrolling sends
many events). The jobs run in :class:`napari_vafa._lens.LensRunner`; a result is shown in place
over its cube, one layer per event-loop turn, and handed to the widget's step scrubber.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer

from napari_vafa._result_layers import ResultLayers, source_of

if TYPE_CHECKING:
    from napari_vafa._lens import LensDone

__all__ = ["SETTLE_MS", "VIEW_SETTLE_MS", "LiveLens", "lens_summary"]

#: ms a lens waits after a setting changed before it runs.
SETTLE_MS = 60
#: ms it waits after the view moved.
VIEW_SETTLE_MS = 150


def lens_summary(done: LensDone) -> str:
    """The status line of a lens: its cube, steps, time, Dice and SSIM, and what it chose."""
    result, plan = done.result, done.plan
    size = "×".join(str(s.stop - s.start) for s in result.region)
    text = (
        f"live lens {size} · {plan.steps if plan else '?'} steps · {result.seconds:.2f} s · "
        f"Dice {result.dice_clean:.3f} → {result.dice_adversarial:.3f} · "
        f"SSIM {result.ssim:.3f}"
    )
    if not result.labels_used:
        text += " (vs clean prediction)"
    if plan is not None and plan.note:
        text += f"\n{plan.note}"
    return text


def _data_key(layer) -> tuple | None:
    """What identifies a layer's data, edits in place included (a checksum: ~2 ms for the
    sample), or None for no layer."""
    data = getattr(layer, "data", None)
    if data is None:
        return None
    array = np.ascontiguousarray(data)
    return (id(data), array.shape, str(array.dtype), zlib.adler32(array.view(np.uint8)))


class LiveLens:
    """The live lens of ``host``, the attack widget (its *live* and *lens* controls, inputs,
    status line and scrubber).

    Attributes:
        layers: the ``lens:`` layers (:class:`~napari_vafa._result_layers.ResultLayers`).
        runner: the jobs (:class:`~napari_vafa._lens.LensRunner`).
        pacer: the GUI pieces that show a lens (apart from the full runs').
        last: the last :class:`~napari_vafa._lens.LensDone` shown.
        shown, shown_at: lenses shown, and ``perf_counter`` of the last (benchmarks).
    """

    def __init__(self, host) -> None:
        from napari_vafa._lens import LENS_LAYERS, LensRunner
        from napari_vafa._pacer import Pacer

        self.host = host
        self.viewer = host.viewer
        self.layers = ResultLayers(host.viewer, host.reset_choices, names=LENS_LAYERS)
        self.runner = LensRunner(host._cache, self._progress, self._show, self._failed)
        self.pacer = Pacer(host._on_pacer_error, host._main_window)
        self.last: LensDone | None = None
        self.shown = 0
        self.shown_at = 0.0
        self._center: tuple[float, float, float] | None = None
        self._layer = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.request)
        self._connect()

    # ------------------------------------------------------------------ when
    def _connect(self) -> None:
        from qtpy.QtWidgets import QAbstractSlider

        host = self.host
        settings = [*host.attack_controls.widgets, host.attack, host.seed, host.labels_layer,
                    host.image_layer, host.lens_size, host.model_source]  # fmt: skip
        for control in settings:
            control.changed.connect(self._setting_changed)
            for slider in control.native.findChildren(QAbstractSlider):
                slider.sliderReleased.connect(self.request)
        host.live.changed.connect(self._toggled)
        self.viewer.dims.events.current_step.connect(self._view_moved)
        self.viewer.camera.events.center.connect(self._view_moved)

    def _setting_changed(self, *_: Any) -> None:
        from qtpy.QtWidgets import QAbstractSlider

        if any(
            slider.isSliderDown()
            for control in self.host.attack_controls.widgets
            for slider in control.native.findChildren(QAbstractSlider)
        ):
            return  # a slider is being dragged: its release asks
        self._schedule(SETTLE_MS)

    def _toggled(self, on: bool) -> None:
        if on:
            self._schedule(0)
        else:
            self.stop()

    def _view_moved(self, *_: Any) -> None:
        if self._center is None or self.last is None:
            self._schedule(VIEW_SETTLE_MS)
            return
        center = self.view_center()
        if not self.host.lens_size.value:
            return  # the whole volume: wherever one looks
        quarter = int(self.host.lens_size.value) / 4
        if (
            center is not None
            and max(abs(a - b) for a, b in zip(center, self._center, strict=True)) >= quarter
        ):
            self._schedule(VIEW_SETTLE_MS)

    def _schedule(self, delay_ms: int) -> None:
        if self.host.live.value and not self.host._closed:
            self._timer.start(delay_ms)

    # ------------------------------------------------------------------ where and what
    def view_center(self) -> tuple[float, float, float] | None:
        """The view point in the chosen image's voxels ``(i, j, k)``: the slice shown on the
        axes not displayed, the camera's centre on the displayed ones."""
        layer = self.host.image_layer.value
        if layer is None or layer not in self.viewer.layers or layer.ndim != 3:
            return None
        dims = self.viewer.dims
        point = list(dims.point[-3:])
        displayed = list(dims.displayed)
        center = list(self.viewer.camera.center)[-len(displayed) :]
        for axis, value in zip(displayed, center, strict=True):
            if axis >= dims.ndim - 3:
                point[axis - (dims.ndim - 3)] = value
        kji = [(p - t) / s for p, t, s in zip(point, layer.translate, layer.scale, strict=True)]
        return tuple(float(v) for v in kji[::-1])  # type: ignore[return-value]

    def request(self, *_: Any) -> bool:
        """Attack the cube around the view point now (False when it did not start: *live
        lens* off, a full run busy, or bad input — said in the status line)."""
        import torch

        from napari_vafa._lens import LensJob

        host = self.host
        self._timer.stop()
        if not host.live.value or host._closed or host.is_running:
            return False
        try:
            layer, image, _, labels = host._inputs()
        except (ValueError, TypeError) as err:
            host.status.value = f"live lens: {err}"
            return False
        center = self.view_center()
        if center is None:
            return False
        self._center, self._layer = center, layer
        data_keys = (*map(_data_key, self._image_layers(layer)), _data_key(host.labels_layer.value))
        self.runner.request(
            LensJob(
                image=image,
                labels=labels,
                model=host.model_picker.spec(),
                attack=host.attack.value,
                options=host._attack_options(),
                seed=int(host.seed.value),
                center=center,
                image_key=data_keys,
                size=int(host.lens_size.value),
                threads=torch.get_num_threads(),
            )
        )
        return True

    def _image_layers(self, layer) -> list:
        """The layers the model input is made of: each channel's, or the one image layer."""
        picker = self.host.channel_picker
        return picker.layers() if picker.active else [layer]

    def stop(self) -> None:
        """No lens now: the waiting one dropped, the running one stopped within a step."""
        self._timer.stop()
        self.runner.stop()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # Qt deleted it already (napari closing)
            self._timer.stop()
        self.pacer.clear()
        self.runner.close()

    # ------------------------------------------------------------------ showing
    def _progress(self, p) -> None:
        if not self.host._closed and not self.host.is_running:
            self.host.status.value = f"live lens: step {p.step}/{p.total}…"

    def _failed(self, message: str) -> None:
        if not self.host._closed:
            self.host.status.value = f"live lens: {message}"

    def _show(self, done: LensDone) -> None:
        """The lens in place: its layers over the cube, the status line, the scrubber."""
        from napari_vafa._lens import LENS_ORDER, lens_source

        host, layer = self.host, self._layer
        if host._closed or host.is_running or layer not in self.viewer.layers:
            return
        self.layers.source = lens_source(source_of(layer, None), done.start_kji)

        def put(key: str):
            return lambda: self.layers.put(key, done.layers.get(key), done)

        def finish() -> None:
            adversarial = self.layers.layers.get("adversarial")
            if adversarial is not None:
                adversarial.bounding_box.visible = True  # the cube, outlined
            self.last = done
            host.scrubber.attach(self._scrub_source(done))
            host.status.value = lens_summary(done)
            self.shown_at = time.perf_counter()
            self.shown += 1

        # one layer per event-loop turn, in place too: each update is 10-30 ms of napari's
        # own work (layer list, thumbnail, controls) plus a repaint; five at once froze the
        # GUI for 100-130 ms. (Tried: all five, or images then labels, with the repaint held
        # and done a turn later: faster to show, 0.74-0.82 s median, but the held repaint of
        # the whole window made gaps of 124-145 ms.)
        self.pacer.clear()  # an older lens still being shown: the newest wins
        self.pacer.run([*(put(key) for key in LENS_ORDER), finish])

    def _scrub_source(self, done: LensDone):
        from napari_vafa._scrubber import ScrubSource, returned_position

        result = done.result
        return ScrubSource(
            name="lens",
            history=result.history,
            channels=[(done.mapping, done.clean_units)],  # channel 0, where the lens is drawn
            layers=self.layers.layers,
            result=done.layers,
            returned=returned_position([result.returned_step], result.history.total),
            clean_dice=result.dice_clean,
        )
