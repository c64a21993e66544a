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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox

from napari_vafa._attack_controls import AttackControls
from napari_vafa._channel_picker import ChannelPicker
from napari_vafa._compare_panel import CompareAttacks
from napari_vafa._compare_view import CompareView, run_cells
from napari_vafa._model_picker import ModelPicker
from napari_vafa._result_layers import LAYER_ORDER, ResultLayers, source_of
from napari_vafa._tooltips import ATTACK_WIDGET
from napari_vafa._worker_widget import (
    WorkerWidget,
    image_layer_volume,
    labels_on_image_grid,
    layer_choices,
    notify_error,
    notify_info,
)

if TYPE_CHECKING:
    import napari

    from napari_vafa._compare import CompareProgress
    from napari_vafa._worker import JobDone, Progress

__all__ = ["AttackWidget", "attack_choices"]

USE_PREDICTION = "use model prediction"
METRICS_DOCK = "VAFA metrics"
#: Least seconds between two live refreshes of the 3D "adversarial" layer.
PREVIEW_INTERVAL = 0.4
LENS_SIDES = (32, 48, 64, 96, 128)  #: the live lens's cube sides offered (model-grid voxels)
THROUGH_CHOICES = [("tiles (the paper)", "tiles"), ("sliding window (deployed)", "sliding-window")]


def _row(*widgets, label: str = "") -> Container:
    """Controls side by side, under one ``label``."""
    return Container(layout="horizontal", labels=False, label=label, widgets=list(widgets))


def attack_choices() -> tuple[tuple[str, str], ...]:
    """Attack combo entries ``(label, registry name)``, in the registry's order."""
    from vafa.attacks import ATTACKS

    return tuple((cls.label, name) for name, cls in ATTACKS.items())


class AttackWidget(CompareAttacks, WorkerWidget):
    """Dock widget running VAFA (and the voxel baselines) on an image layer.

    Args:
        napari_viewer: the viewer (injected by napari).

    Attributes:
        last_outcome: the :class:`vafa.run.pipeline.AttackOutcome` of the last finished run.
        results: the :class:`napari_vafa._result_layers.ResultLayers` of this widget.
        model_picker: the model and device controls (also reachable as ``model_source``,
            ``weights``, ``card_preset``, ``card_file``, ``device``).
        plots: the :class:`napari_vafa._plots.MetricsPlot` shown in the "VAFA metrics" dock.
    """

    TITLE = "VAFA attack"
    PLOTS_DOCK = METRICS_DOCK
    CANCEL_TEXT = "cancelling after this step…"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_vafa._bands_panel import BandsPanel
        from napari_vafa._live_lens import LiveLens
        from napari_vafa._plots import MetricsPlot
        from napari_vafa._scrubber import Scrubber
        from napari_vafa._worker import ModelCache
        from vafa.ops.devices import available_devices

        super().__init__(napari_viewer, MetricsPlot())
        self.bands_panel = BandsPanel()  # "which frequencies fooled the model?"
        self.plots.layout().addWidget(self.bands_panel, stretch=170)
        self.last_outcome = None
        self.last_result: JobDone | None = None
        self._comparison_rows: list[dict[str, Any]] = []  # "Compare attacks" (its mixin)
        self.results = ResultLayers(napari_viewer, self.reset_choices)
        self._cache = ModelCache()
        self._compare = CompareView(napari_viewer)
        self._source_layer = None
        self.scrubber = Scrubber(
            lambda message: notify_error(f"{self.TITLE}: {message}"), self.plots.mark_step
        )

        self._build_controls(available_devices())
        self.attack.changed.connect(self._update_visibility)
        self.image_layer.changed.connect(self._prefer_labels_on_grid)
        for control in self.model_picker.widgets:  # the model's channels: one combo each
            control.changed.connect(self._refresh_channels)
        self.paper.changed.connect(self._apply_paper)
        self.export_button.changed.connect(self.export)
        self.compare_button.changed.connect(self.compare)
        self.compare_view.changed.connect(self._toggle_compare_view)
        self._connect()
        #: the live lens: its layers, its jobs, its own GUI pieces (never delaying a Run)
        self.live_lens = LiveLens(self)
        self.viewer.layers.selection.events.active.connect(self._explain_layer)
        self._refresh_channels()

    # ------------------------------------------------------------------ construction
    def _build_controls(self, devices: list[str]) -> None:
        self.image_layer = ComboBox(label="image", choices=self._image_choices)
        self.channel_picker = ChannelPicker(self.viewer, self._ours, self._prefer_labels_on_grid)
        self.channel_box = self.channel_picker.box
        self.labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self.model_picker = ModelPicker(devices)
        for name, control in zip(ModelPicker.NAMES, self.model_picker.widgets, strict=True):
            setattr(self, name, control)
        choices = attack_choices()
        self.attack = ComboBox(label="attack", choices=choices, value="vafa")
        self.attack_controls = AttackControls([name for _, name in choices])
        for name, control in self.attack_controls.controls.items():
            setattr(self, name, control)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.through = ComboBox(label="through", choices=THROUGH_CHOICES, value="tiles")
        buttons = self._make_run_controls()
        self.export_perturbation = CheckBox(text="perturbation", value=False)
        self.export_predictions = CheckBox(text="predictions", value=False)
        self.export_q_table = CheckBox(text="q table", value=False)
        self.export_button = PushButton(text="Export NIfTI…", enabled=False)
        self.quick_compare = CheckBox(text="quick grid", value=True)
        self.compare_view = CheckBox(text="compare view", value=False, enabled=False)
        self.compare_changes = CheckBox(text="changed labels", value=False)
        self.compare_button = PushButton(text="Compare attacks")
        bundled = self.model_source.value not in ("file", "folder")  # demo, robust-demo
        self.live = CheckBox(text="live lens", value=bundled)
        self.lens_size = ComboBox(  # on a GPU the lens is the whole volume
            label="lens",
            choices=[*((f"{n}³ cube", n) for n in LENS_SIDES), ("whole volume", 0)],
            value=0 if "cuda" in devices else 64,
        )
        self.step_slider, self.step_info = self.scrubber.slider, self.scrubber.info
        self.layer_help = Label(value="")
        self.layer_help.native.setWordWrap(True)
        for name, text in ATTACK_WIDGET.items():  # the attack settings bring their own
            getattr(self, name).tooltip = text
        extras = _row(self.export_perturbation, self.export_predictions, self.export_q_table,
                      label="also export")  # fmt: skip
        export_row = _row(self.export_button, self.compare_view, self.compare_changes)
        live_row = _row(self.live, self.lens_size)
        comparison = _row(self.compare_button, self.quick_compare, label="Table 1")
        self.extend([
            self.image_layer, self.channel_box, self.labels_layer, *self.model_picker.widgets,
            self.attack,
            *self.attack_controls.widgets, self.seed, self.through, live_row, buttons, self.status,
            self.step_slider, self.step_info, extras, export_row, comparison, self.layer_help,
        ])  # fmt: skip

    def _input_names(self) -> tuple[str, ...]:
        """The inputs disabled while a job runs."""
        return (
            "image_layer", "channel_box", "labels_layer", *ModelPicker.NAMES, "attack", "seed", "through", "export_perturbation", "export_predictions",
            "export_q_table", "quick_compare", "compare_button", *self.attack_controls.names,
        )  # fmt: skip

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return layer_choices(self.viewer, "Image", self._ours)

    def _ours(self, layer) -> bool:
        """A result or lens layer of this widget."""
        lens = getattr(self, "live_lens", None)
        return self.results.is_result(layer) or (lens is not None and lens.layers.is_result(layer))

    def _labels_choices(self, _widget=None) -> list[tuple[str, Any]]:
        layers = layer_choices(self.viewer, "Labels", self._ours)
        image = self._grid_layer()
        shape = None if image is None else tuple(image.data.shape[-3:])
        on_grid = [choice for choice in layers if choice[1].data.shape == shape]
        others = [choice for choice in layers if choice[1].data.shape != shape]
        # labels on the image's grid come first, so that they are the default
        return [*on_grid, (USE_PREDICTION, USE_PREDICTION), *others]

    def _prefer_labels_on_grid(self, *_: Any) -> None:
        """A new image picks labels on its grid when the current choice does not fit it."""
        current = self.labels_layer.value
        self.labels_layer.reset_choices()
        image = self._grid_layer()
        fits = isinstance(current, str) or (
            current is not None and image is not None
            and current.data.shape == image.data.shape[-3:]
        )  # fmt: skip
        if not fits:
            self.labels_layer.value = self.labels_layer.choices[0]

    def _grid_layer(self):
        """The chosen image layer (a multi-channel model's: its first channel's)."""
        picker = self.channel_picker
        return picker.grid_layer() if picker.active else self.image_layer.value

    def _refresh_channels(self, *_: Any) -> None:
        """One layer combo per channel when the chosen model takes several (its card known)."""
        from napari_vafa._channels import known_card

        self.channel_picker.configure(known_card(self.model_picker, self._cache))
        self.image_layer.visible = not self.channel_picker.active

    @property
    def result_layers(self) -> dict[str, Any]:
        """The result layers by key (see :data:`napari_vafa._worker.RESULT_LAYERS`)."""
        return self.results.layers

    def _update_visibility(self, *_: Any) -> None:
        self.model_picker.update_visibility()
        attack = self.attack.value
        self.attack_controls.switch(attack)
        shown = self.attack_controls.shown(attack)
        for name in self.attack_controls.names:
            getattr(self, name).visible = name in shown
        self.export_q_table.enabled = attack in ("vafa", "vafa2d")
        self._apply_paper()

    def _apply_paper(self, *_: Any) -> None:
        """'published algorithm' shows the settings it fixes and locks them."""
        from vafa.attacks import attack_class

        cls = attack_class(self.attack.value)
        paper = "paper" in self.attack_controls.shown(self.attack.value) and bool(self.paper.value)
        for name, value in cls.published_settings().items():
            control = self.attack_controls.controls.get(name)
            if control is None:
                continue
            if paper:
                control.value = value
            control.enabled = not paper

    # ------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        """Whether an attack is running (or its result layers are still being shown)."""
        return self._worker is not None or self.pacer.busy

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self.export_button.enabled = not running and self.last_outcome is not None
        cells = run_cells(self.viewer, self._source_layer, self.results, self.last_result)
        self.compare_view.enabled = not running and bool(cells)

    def _explain_layer(self, *_: Any) -> None:
        """One or two sentences, for students, on the selected result or lens layer."""
        from napari_vafa._tooltips import layer_help

        groups = (self.results.layers, self.live_lens.layers.layers)
        self.layer_help.value = layer_help(self.viewer.layers.selection.active, groups)

    # ------------------------------------------------------------------ compare view
    def _toggle_compare_view(self, on: bool) -> None:
        """Show the last run side by side in napari's grid, or put the previous view back."""
        try:
            if on:
                self._compare.show_run(self._source_layer, self.results, self.last_result,
                                       bool(self.compare_changes.value))  # fmt: skip
            else:
                self._compare.restore()
                self.results.remove("changed")  # made for the compare view only
        except ValueError as err:
            notify_error(f"{self.TITLE}: {err}")
            self.compare_view.value = False

    # ------------------------------------------------------------------ run
    def _inputs(self):
        """``(layer, image, data, labels)`` of the chosen layers (``ValueError`` when bad); a
        multi-channel model's image is a :class:`~vafa.io.channels.Channels`."""
        from vafa.io.channels import channel_volumes

        if self.channel_picker.active:
            layer, image, data = self.channel_picker.image()
        else:
            layer = self.image_layer.value
            image, data = image_layer_volume(self.viewer, layer, "the attack")
        choice = self.labels_layer.value
        labels = None
        if choice is not None and not isinstance(choice, str):
            hint = f"choose labels on the image's grid or '{USE_PREDICTION}'"
            volume = channel_volumes(image)[0]
            labels = labels_on_image_grid(self.viewer, choice, layer, volume, hint)
        return layer, image, data, labels

    def _make_job(self):
        import torch

        from napari_vafa._worker import AttackJob

        layer, image, data, labels = self._inputs()
        self.live_lens.stop()  # within a step; the run waits for the model meanwhile
        self.scrubber.detach()
        job = AttackJob(
            image=image,
            labels=labels,
            model=self.model_picker.spec(),
            attack=self.attack.value,
            options=self._attack_options(),
            seed=int(self.seed.value),
            threads=torch.get_num_threads(),
            preview_interval=PREVIEW_INTERVAL,
            through=self.through.value,
        )
        source = None if image.source is None else str(image.source)
        if self.compare_view.value:
            self.compare_view.value = False  # the user's view back before layers change
        self._source_layer = layer
        self.results.set_channels(*self.channel_picker.sources(image))
        self.pacer.run(self.results.begin_run(source_of(layer, source), data))
        return job

    def _attack_options(self) -> dict[str, Any]:
        return self.attack_controls.options(self.attack.value)

    def _start(self, job) -> None:
        from napari_vafa._bands_panel import run_job_with_bands

        label = dict((v, k) for k, v in attack_choices())[job.attack]
        self.plots.start(f"{label} on {self.results.source.name}", job.options.get("steps"))
        self.bands_panel.start()
        self.status.value = f"loading {job.model.describe()}…"
        block = self.bands_panel.block_size()  # the band analysis runs in the worker too
        self._start_worker(run_job_with_bands, job, self._cache, block, progress=f"VAFA: {label}")

    # ------------------------------------------------------------------ worker → GUI
    def _on_progress(self, p: Progress | CompareProgress) -> None:
        from napari_vafa._compare import CompareProgress

        if self._closed:
            return
        if isinstance(p, CompareProgress):
            self._on_compare_progress(p)
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
        if self.cancelling:
            text = f"{self.CANCEL_TEXT} {text}"
        self.status.value = text
        if p.preview is not None:
            self.results.paste_preview(p.preview)

    def _on_returned(self, result) -> None:
        from napari_vafa._channels import result_keys
        from napari_vafa._compare import CompareDone
        from napari_vafa._worker import JobCancelled, JobDone

        if self._closed:
            return
        if isinstance(result, CompareDone):
            self._show_comparison(result)
            return
        if isinstance(result, JobDone):
            self.results.keep_preview()
            self.status.value = "showing the result…"
            keys = result_keys(LAYER_ORDER, result.layers, self.results.layers)
            pieces = [self._layer_piece(key, result) for key in keys]
            self.pacer.run([*pieces, *self._summary_pieces(result)])
            return
        self.results.rollback_preview()
        if isinstance(result, JobCancelled):
            self.status.value = "cancelled before the attack started"
            return
        notify_error(f"VAFA attack failed: {result.message}")
        self.status.value = f"failed: {result.message}"

    def _on_errored(self, err: BaseException) -> None:  # pragma: no cover - run_job never raises
        if not self._closed:
            self.results.rollback_preview()
        super()._on_errored(err)

    def _after_worker(self, worker) -> None:
        if worker is not None and worker.abort_requested:
            self.results.rollback_preview()
            self.status.value = "stopped"
        self._refresh_channels()  # the model has loaded: its channels are known
        if not self.pacer.busy:
            self._finish_run()

    # ------------------------------------------------------------------ results
    def _layer_piece(self, key: str, done: JobDone):
        """The first piece of showing result layer ``key`` (it returns the others)."""
        return lambda: self.results.put(key, done.layers.get(key), done)

    def _summary_pieces(self, done: JobDone) -> list:
        """The pieces that show the run's summary once its layers are in the viewer: the
        metrics (bars, text, status), the band analysis, then the controls back. Apart,
        because each redraws a plot canvas when the window paints. (A closing widget clears
        the pacer, so no piece runs after it.)"""

        def metrics() -> None:
            from napari_vafa._plots import summary_text

            outcome = done.outcome
            self.last_outcome = outcome
            self.last_result = done
            self._attach_run_history(done)
            self.plots.show_outcome(outcome.metrics)
            head = (
                "cancelled, best so far"
                if outcome.cancelled
                else f"done in {self._elapsed():.0f} s"
            )
            tiles = f" · tiles {outcome.metrics.tiles_done}/{outcome.metrics.tiles_total}"
            self.status.value = f"{head}{tiles}\n{summary_text(outcome.metrics)}"

        def finish() -> None:
            for note in done.notes:
                notify_info(f"VAFA attack: {note}")
            if self._worker is None:
                self._finish_run()

        from napari_vafa._pacer import paint_apart

        # each redraws a plot canvas (80-150 ms of Agg drawing under software OpenGL): in
        # repaints of their own
        bands = paint_apart(lambda: self.bands_panel.show_result(done))
        return [paint_apart(metrics), bands, finish]

    def _attach_run_history(self, done: JobDone) -> None:
        """The step scrubber replays the full run (when its history was kept)."""
        from napari_vafa._scrubber import run_source

        if done.history is not None:
            self.scrubber.attach(run_source(done, self.results.layers))

    def _on_destroyed(self, *_: Any) -> None:
        self.live_lens.close()
        super()._on_destroyed()

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path | None = None) -> list[Path]:
        """Write the adversarial volume (and the checked extras) as NIfTI next to ``path``.

        Files: ``<name>.nii.gz`` (adversarial), ``<name>_perturbation.nii.gz``,
        ``<name>_clean_prediction.nii.gz``, ``<name>_adversarial_prediction.nii.gz``,
        ``<name>_q_table.nii.gz`` — in the source's units, affine and header
        (:mod:`napari_vafa._export`); a multi-channel image the way it came: one 4D file, or
        ``<name>_0000.nii.gz`` … per channel. Nothing is written when any of them would be an
        input.

        Args:
            path: the adversarial file; None asks with a file dialog.

        Returns:
            The written paths ([] when nothing was written).
        """
        from napari_vafa._export import EXTRAS, ask_export_path, export_run

        outcome = self.last_outcome
        if outcome is None:
            notify_error("VAFA export: run an attack first")
            return []
        if path is None or isinstance(path, bool):
            path = ask_export_path(self.native, self.results.source)
            if not path:
                return []
        extras = [name for name in EXTRAS if getattr(self, f"export_{name}").value]
        try:
            written = export_run(outcome, Path(path), extras, self.results.source)
        except (ValueError, TypeError, OSError) as err:
            notify_error(f"VAFA export failed: {err}")
            return []
        notify_info(
            f"VAFA export: wrote {', '.join(p.name for p in written)} to {written[0].parent}"
        )
        self.status.value = f"exported {len(written)} file(s) to {written[0].parent}"
        return written
