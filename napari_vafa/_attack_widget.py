"""The "VAFA attack" dock widget: attack an image layer live, inspect the results, export them.

The widget is a magicgui :class:`~magicgui.widgets.Container`; every control is an attribute
(``widget.attack.value = "pgd"``, ``widget.run_button.clicked()``) so that tests drive it like
a user. Work runs in a napari generator worker (:func:`napari_vafa._worker.run_job`): the GUI
thread only receives one small :class:`~napari_vafa._worker.Progress` per step (status line,
progress bar, live curve) and, at most every ``PREVIEW_INTERVAL`` seconds, the current
adversarial tile to paste into the "adversarial" layer. Result layers are created once and
updated in place on re-runs; all carry the source layer's scale, translate and metadata.

Heavy imports (torch, :mod:`vafa`) happen when the widget is built or a run starts, never at
plugin discovery.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatRangeSlider,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    Slider,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_vafa._model_picker import ModelPicker
from napari_vafa._result_layers import LAYER_ORDER, ResultLayers, source_of
from napari_vafa._tooltips import tooltip

if TYPE_CHECKING:
    import napari

    from napari_vafa._worker import JobDone, Progress

__all__ = ["ATTACKS", "BLOCK_SIZES", "AttackWidget"]

#: Attack combo entries: (label, name for :func:`vafa.build_attack`).
ATTACKS = (
    ("VAFA-3D", "vafa"),
    ("VAFA-2D", "vafa2d"),
    ("PGD", "pgd"),
    ("FGSM", "fgsm"),
    ("BIM", "bim"),
    ("GN", "gn"),
)
BLOCK_SIZES = (4, 8, 16, 32, 48, 96)
USE_PREDICTION = "use model prediction"
METRICS_DOCK = "VAFA metrics"
#: Least seconds between two live refreshes of the 3D "adversarial" layer.
PREVIEW_INTERVAL = 0.4
#: Controls shown for each attack (the others are hidden).
ATTACK_CONTROLS = {
    "vafa": ("q_range", "vafa_steps", "block_size", "use_ssim", "ssim_weight", "normalize"),
    "vafa2d": ("q_range", "vafa_steps", "block_size", "normalize"),
    "pgd": ("eps", "alpha", "voxel_steps"),
    "bim": ("eps", "alpha", "voxel_steps"),
    "fgsm": ("eps",),
    "gn": ("std",),
}


class AttackWidget(Container):
    """Dock widget running VAFA (and the voxel baselines) on an image layer.

    Args:
        napari_viewer: the viewer (injected by napari).

    Attributes:
        last_outcome: the :class:`vafa.pipeline.AttackOutcome` of the last finished run.
        results: the :class:`napari_vafa._result_layers.ResultLayers` of this widget.
        model_picker: the model and device controls (also reachable as ``model_source``,
            ``weights``, ``card_file``, ``device``).
        plots: the :class:`napari_vafa._plots.MetricsPlot` shown in the "VAFA metrics" dock.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from napari_vafa._plots import MetricsPlot
        from napari_vafa._worker import ModelCache
        from vafa.devices import available_devices

        self.viewer = napari_viewer
        self.last_outcome = None
        self.last_result: JobDone | None = None
        self.results = ResultLayers(napari_viewer, self.reset_choices)
        self.plots = MetricsPlot()
        self._cache = ModelCache()
        self._worker = None
        self._cancel: threading.Event | None = None
        self._pbar = None
        self._applying: list[str] | None = None
        self._started = 0.0
        self._closed = False

        self._build_controls(available_devices())
        self.attack.changed.connect(self._update_visibility)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self.export)
        for name in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, name).connect(self.reset_choices)
        self.native.destroyed.connect(self._on_destroyed)
        self._update_visibility()
        # dock the metrics canvas once napari has docked this widget (drawn before any run)
        QTimer.singleShot(0, self._ensure_plots_docked)

    # ------------------------------------------------------------------ construction
    def _build_controls(self, devices: list[str]) -> None:
        self.image_layer = ComboBox(label="image", choices=self._image_choices)
        self.labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self.model_picker = ModelPicker(devices)
        for name, control in zip(ModelPicker.NAMES, self.model_picker.widgets, strict=True):
            setattr(self, name, control)
        self.attack = ComboBox(label="attack", choices=ATTACKS, value="vafa")
        self.q_range = FloatRangeSlider(
            label="q_min – q_max", min=1, max=100, step=1, value=(5, 20)
        )
        self.vafa_steps = Slider(label="steps", min=1, max=100, value=20)
        self.block_size = ComboBox(label="block size", choices=BLOCK_SIZES, value=32)
        self.use_ssim = CheckBox(label="SSIM loss", value=True)
        self.ssim_weight = FloatSpinBox(
            label="SSIM weight", min=0.0, max=100.0, step=0.1, value=1.0
        )
        self.normalize = ComboBox(label="normalize", choices=["clip", "slice"], value="clip")
        self.eps = FloatSlider(label="ε (/255)", min=0.0, max=16.0, step=0.5, value=4.0)
        self.alpha = FloatSpinBox(label="step α", min=0.0001, max=1.0, step=0.001, value=0.01)
        self.voxel_steps = Slider(label="steps", min=1, max=100, value=20)
        self.std = FloatSlider(label="σ (/255)", min=0.0, max=16.0, step=0.5, value=4.0)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="", value="ready")
        self.export_perturbation = CheckBox(text="perturbation", value=False)
        self.export_predictions = CheckBox(text="predictions", value=False)
        self.export_q_table = CheckBox(text="q table", value=False)
        self.export_button = PushButton(text="Export NIfTI…", enabled=False)
        for name in (
            *self._input_names(),
            "run_button",
            "cancel_button",
            "status",
            "export_button",
        ):
            getattr(self, name).tooltip = tooltip("attack", name)
        buttons = Container(
            layout="horizontal",
            labels=False,
            label="",
            widgets=[self.run_button, self.cancel_button],
        )
        extras = Container(
            layout="horizontal",
            labels=False,
            label="also export",
            widgets=[self.export_perturbation, self.export_predictions, self.export_q_table],
        )
        self.extend([
            self.image_layer, self.labels_layer, self.model_source, self.weights,
            self.card_file, self.device, self.attack, self.q_range, self.vafa_steps,
            self.block_size, self.use_ssim, self.ssim_weight, self.normalize, self.eps,
            self.alpha, self.voxel_steps, self.std, self.seed, buttons, self.status, extras,
            self.export_button,
        ])  # fmt: skip
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumHeight(5 * self.status.native.fontMetrics().lineSpacing())

    @staticmethod
    def _input_names() -> tuple[str, ...]:
        return (
            "image_layer", "labels_layer", "model_source", "weights", "card_file", "device",
            "attack", "q_range", "vafa_steps", "block_size", "use_ssim", "ssim_weight",
            "normalize", "eps", "alpha", "voxel_steps", "std", "seed", "export_perturbation",
            "export_predictions", "export_q_table",
        )  # fmt: skip

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not self.results.is_result(layer)
        ]

    def _labels_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        layers = [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not self.results.is_result(layer)
        ]
        return [(USE_PREDICTION, USE_PREDICTION), *layers]

    @property
    def result_layers(self) -> dict[str, Any]:
        """The result layers by key (see :data:`napari_vafa._worker.RESULT_LAYERS`)."""
        return self.results.layers

    def _update_visibility(self, *_: Any) -> None:
        self.model_picker.update_visibility()
        shown = set(ATTACK_CONTROLS[self.attack.value])
        for name in {n for names in ATTACK_CONTROLS.values() for n in names}:
            getattr(self, name).visible = name in shown
        self.export_q_table.enabled = self.attack.value in ("vafa", "vafa2d")

    # ------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        """Whether an attack is running (or its result layers are still being shown)."""
        return self._worker is not None or self._applying is not None

    def _set_running(self, running: bool) -> None:
        for name in self._input_names():
            getattr(self, name).enabled = not running
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        self.export_button.enabled = not running and self.last_outcome is not None
        if not running:
            self._update_visibility()

    # ------------------------------------------------------------------ run
    def run(self, *_: Any) -> bool:
        """Start an attack with the current settings (returns False when it did not start).

        Bad input (no image, a 2D/RGB layer, labels of another shape, a missing checkpoint …)
        becomes a napari error notification; the widget stays usable.
        """
        if self.is_running:
            return False
        try:
            job = self._make_job()
        except (ValueError, TypeError, OSError) as err:
            show_error(f"VAFA attack: {err}")
            self.status.value = f"not started: {err}"
            return False
        self._start(job)
        return True

    def cancel(self, *_: Any) -> None:
        """Stop after the current step; the best result so far is kept and shown."""
        if self._cancel is not None and self.is_running:
            self._cancel.set()
            self.cancel_button.enabled = False
            self.status.value = "cancelling after this step…"

    def _make_job(self):
        import torch

        from napari_vafa._layers import META_SOURCE, layer_to_volume
        from napari_vafa._worker import AttackJob

        layer = self.image_layer.value
        if layer is None or layer not in self.viewer.layers:
            raise ValueError(
                "no image layer: open a 3D volume first (File ▸ Open, or File ▸ Open Sample ▸ "
                "napari-vafa)"
            )
        if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False) or layer.ndim != 3:
            kind = "an RGB" if getattr(layer, "rgb", False) else f"a {layer.ndim}D"
            raise ValueError(
                f"image layer {layer.name!r} is {kind} layer; the attack needs a 3D "
                f"single-channel volume, got data of shape {tuple(np.shape(layer.data))}"
            )
        data = np.array(layer.data, dtype=np.float32, copy=True)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"image layer {layer.name!r} holds NaN/Inf values")
        image = layer_to_volume(data, layer.metadata, layer.scale, layer.translate)
        source = (layer.metadata or {}).get(META_SOURCE)
        if source:
            image.source = Path(source)
        labels = self._labels_volume(layer, image)
        job = AttackJob(
            image=image,
            labels=labels,
            model=self.model_picker.spec(),
            attack=self.attack.value,
            options=self._attack_options(),
            seed=int(self.seed.value),
            threads=torch.get_num_threads(),
            preview_interval=PREVIEW_INTERVAL,
        )
        self.results.begin_run(source_of(layer, source), data)
        return job

    def _labels_volume(self, image_layer, image):
        choice = self.labels_layer.value
        if choice is None or isinstance(choice, str):
            return None
        if choice not in self.viewer.layers:
            raise ValueError(f"labels layer {choice.name!r} was deleted")
        shape = tuple(np.shape(choice.data))
        if shape != tuple(np.shape(image_layer.data)):
            raise ValueError(
                f"labels layer {choice.name!r} has shape {shape} but image layer "
                f"{image_layer.name!r} has shape {tuple(np.shape(image_layer.data))}; choose "
                f"labels on the image's grid or '{USE_PREDICTION}'"
            )
        if not (
            np.allclose(choice.scale, image_layer.scale)
            and np.allclose(choice.translate, image_layer.translate)
        ):
            raise ValueError(
                f"labels layer {choice.name!r} (scale {tuple(choice.scale)}) is not on the "
                f"grid of image layer {image_layer.name!r} (scale {tuple(image_layer.scale)})"
            )
        values = np.asarray(choice.data)
        return image.with_array(np.transpose(values, (2, 1, 0)).astype(np.float32))

    def _attack_options(self) -> dict[str, Any]:
        name = self.attack.value
        if name in ("vafa", "vafa2d"):
            q_min, q_max = (float(v) for v in self.q_range.value)
            block = int(self.block_size.value)
            options = {
                "steps": int(self.vafa_steps.value),
                "q_min": q_min,
                "q_max": q_max,
                "block_size": (block,) * (3 if name == "vafa" else 2),
                "normalize": self.normalize.value,
            }
            if name == "vafa":
                options["use_ssim_loss"] = bool(self.use_ssim.value)
                options["ssim_weight"] = float(self.ssim_weight.value)
            return options
        if name in ("pgd", "bim"):
            return {
                "eps": float(self.eps.value),
                "alpha": float(self.alpha.value),
                "steps": int(self.voxel_steps.value),
            }
        if name == "fgsm":
            return {"eps": float(self.eps.value)}
        return {"std": float(self.std.value)}

    def _start(self, job) -> None:
        from napari.qt.threading import create_worker

        from napari_vafa._progress import open_activity_progress
        from napari_vafa._worker import run_job

        self._cancel = threading.Event()
        self._started = time.perf_counter()
        self._ensure_plots_docked()
        label = dict((v, k) for k, v in ATTACKS)[job.attack]
        self.plots.start(f"{label} on {self.results.source.name}", job.options.get("steps"))
        self.status.value = f"loading {job.model.describe()}…"
        self._pbar = open_activity_progress(f"VAFA: {label}")
        worker = create_worker(
            run_job, job, self._cancel, self._cache, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True)
        worker.start()

    # ------------------------------------------------------------------ worker → GUI
    def _on_progress(self, p: Progress) -> None:
        if self._closed:
            return
        steps = max(p.total, 1)
        if self._pbar is not None:
            if self._pbar.total != steps * p.tiles:
                self._pbar.total = steps * p.tiles
            self._pbar.set_description(f"VAFA tile {p.tile}/{p.tiles}")
            self._pbar.update(1)
        self.plots.set_total(steps * p.tiles)
        self.plots.add_step((p.tile - 1) * steps + max(p.step, 1), p.loss, p.dice)
        text = f"tile {p.tile}/{p.tiles} · step {p.step}/{p.total} · loss {p.loss:.3f}"
        text += f" · Dice {p.dice:.3f}"
        if p.ssim is not None:
            text += f" · SSIM {p.ssim:.3f}"
        if self._cancel is not None and self._cancel.is_set():
            text = "cancelling after this step… " + text
        self.status.value = text
        if p.preview is not None:
            self.results.paste_preview(p.preview)

    def _on_returned(self, result) -> None:
        from napari_vafa._worker import JobCancelled, JobDone

        if self._closed:
            return
        if isinstance(result, JobDone):
            self.results.keep_preview()
            self._applying = list(LAYER_ORDER)
            self.status.value = "showing the result…"
            QTimer.singleShot(0, lambda: self._apply_next(result))
            return
        self.results.rollback_preview()
        if isinstance(result, JobCancelled):
            self.status.value = "cancelled before the attack started"
            return
        show_error(f"VAFA attack failed: {result.message}")
        self.status.value = f"failed: {result.message}"

    def _on_errored(self, err: BaseException) -> None:  # pragma: no cover - run_job never raises
        if self._closed:
            return
        self.results.rollback_preview()
        show_error(f"VAFA attack failed: {err}")
        self.status.value = f"failed: {err}"

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._closed:
            return
        if worker is not None and worker.abort_requested:
            self.results.rollback_preview()
            self.status.value = "stopped"
        if self._applying is None:
            self._finish_run()

    def _finish_run(self) -> None:
        try:
            self._set_running(False)
        except RuntimeError:  # the Qt widgets are gone (napari closed)
            self._closed = True

    def _on_destroyed(self, *_: Any) -> None:
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        if self._worker is not None:
            self._worker.quit()

    # ------------------------------------------------------------------ results
    def _apply_next(self, done: JobDone) -> None:
        """Create/update one result layer per event-loop turn (a new napari layer costs
        0.2–0.5 s on a small CPU: all at once would freeze the GUI for seconds)."""
        if self._closed or self._applying is None:
            self._applying = None
            return
        try:
            if self._applying:
                key = self._applying.pop(0)
                self.results.put(key, done.layers.get(key), done)
                QTimer.singleShot(0, lambda: self._apply_next(done))
                return
            self._applying = None
            self._show_summary(done)
        except Exception as err:  # a layer update failed: report, keep the widget usable
            self._applying = None
            show_error(f"VAFA attack: could not show the result: {err}")
            self.status.value = f"failed to show the result: {err}"
        if self._worker is None:
            self._finish_run()

    def _show_summary(self, done: JobDone) -> None:
        from napari_vafa._plots import summary_text

        outcome = done.outcome
        self.last_outcome = outcome
        self.last_result = done
        metrics = outcome.metrics
        self.plots.show_outcome(metrics)
        elapsed = time.perf_counter() - self._started
        head = "cancelled, best so far" if outcome.cancelled else f"done in {elapsed:.0f} s"
        tiles = f" · tiles {metrics.get('tiles_done')}/{metrics.get('tiles_total')}"
        self.status.value = f"{head}{tiles}\n{summary_text(metrics)}"
        for note in done.notes:
            show_info(f"VAFA attack: {note}")

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path | None = None) -> list[Path]:
        """Write the adversarial volume (and the checked extras) as NIfTI next to ``path``.

        Files: ``<name>.nii.gz`` (adversarial), ``<name>_perturbation.nii.gz``,
        ``<name>_clean_prediction.nii.gz``, ``<name>_adversarial_prediction.nii.gz``,
        ``<name>_q_table.nii.gz`` — in the source's units, affine and header
        (:mod:`napari_vafa._export`). Nothing is written when any of them would be an input.

        Args:
            path: the adversarial file; None asks with a file dialog.

        Returns:
            The written paths ([] when nothing was written).
        """
        from napari_vafa._export import export_targets, write_exports

        outcome = self.last_outcome
        if outcome is None:
            show_error("VAFA export: run an attack first")
            return []
        if path is None or isinstance(path, bool):
            path = self._ask_export_path()
            if not path:
                return []
        extras = [
            name
            for name in ("perturbation", "predictions", "q_table")
            if getattr(self, f"export_{name}").value
        ]
        targets = export_targets(Path(path), outcome, extras)
        source = self.results.source
        try:
            written = write_exports(outcome, targets, (*outcome.inputs, source and source.source))
        except (ValueError, TypeError, OSError) as err:
            show_error(f"VAFA export failed: {err}")
            return []
        show_info(f"VAFA export: wrote {', '.join(p.name for p in written)} to {written[0].parent}")
        self.status.value = f"exported {len(written)} file(s) to {written[0].parent}"
        return written

    def _ask_export_path(self) -> str:  # pragma: no cover - a modal dialog
        from qtpy.QtWidgets import QFileDialog

        src = self.results.source
        folder = Path(src.source).parent if src and src.source else Path.home()
        stem = (src.name if src else "volume").replace(" ", "_")
        path, _ = QFileDialog.getSaveFileName(
            self.native,
            "Export adversarial volume",
            str(folder / f"{stem}_adversarial.nii.gz"),
            "NIfTI (*.nii.gz *.nii)",
        )
        return path

    # ------------------------------------------------------------------ plots dock
    def _ensure_plots_docked(self) -> None:
        if self._closed:
            return
        try:
            window = self.viewer.window
            if self.plots in window.dock_widgets.values():
                return
            window.add_dock_widget(self.plots, name=METRICS_DOCK, area="right")
        except (AttributeError, RuntimeError):  # the viewer was closed meanwhile
            pass
