"""The "VAFT fine-tuning" dock widget: adversarial training of a segmentation model in napari.

Fine-tunes a base model (a bundled model or a weights file, :class:`~napari_vafa._model_picker.
ModelPicker`) by VAFT (:mod:`vafa.training.config`) on an image + labels layer pair or on a datalist
file, in a napari generator worker (:func:`napari_vafa._train_worker.run_training`). The GUI
thread only receives small, throttled progress records: a status line, a progress bar in the
activity dock where it is cheap (:mod:`napari_vafa._progress`) and the live curves of the "VAFT training curves" dock
(:class:`napari_vafa._train_plots.TrainingPlot`). Cancel saves ``latest`` and stops within one
iteration; "Use in attack widget" hands the new checkpoint to the "VAFA attack" widget.

The training settings are generated from the training schema
(:class:`napari_vafa._train_controls.TrainingControls`, :mod:`vafa.training.settings`) and start
from its "quick demo" profile, which the *profile* combo shows and switches ("defaults": the
library's and ``vafa train``'s); the training attack's settings come from the attacks' schemas.

Every control is an attribute (``widget.mode.value = "pgd"``, ``widget.run_button.clicked()``)
so that tests drive it like a user. Inputs are checked on the GUI thread before anything runs
(layers, shapes, the output folder: writable, no earlier run unless "overwrite"); what only the
trainer can check (missing datalist files, label classes beyond the model's outputs) comes back
from the worker as an error notification before any file is written.

Heavy imports (torch, :mod:`vafa`) happen when the widget is built or a run starts, never at
plugin discovery.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, PushButton

from napari_vafa._attack_controls import AttackControls
from napari_vafa._model_picker import ModelPicker, path_or_none
from napari_vafa._tooltips import TRAIN_NOTES, tooltip
from napari_vafa._train_controls import TrainingControls
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

    from napari_vafa._train_worker import TrainDone, TrainJob, TrainProgress

__all__ = ["DATA_SOURCES", "TrainWidget", "mode_choices"]

PLUGIN = "napari-vafa"
ATTACK_WIDGET = "VAFA attack"
CURVES_DOCK = "VAFT training curves"
DATA_SOURCES = (("image + labels layers", "layers"), ("datalist file", "datalist"))
#: The attack a "clean" run is validated under (with the settings of its controls).
VALIDATION_ATTACK = "vafa"


def mode_choices() -> tuple[tuple[str, str], ...]:
    """Mode combo entries ``(label, mode)`` (:data:`vafa.training.MODE_TITLES`)."""
    from vafa.training import MODE_TITLES, MODES

    return tuple((MODE_TITLES[mode], mode) for mode in MODES)


#: Least seconds between two progress records from the worker (GUI updates ≤ 5 per second).
PROGRESS_INTERVAL = 0.2


class TrainWidget(WorkerWidget):
    """Dock widget fine-tuning a segmentation model by VAFT in the background.

    Args:
        napari_viewer: the viewer (injected by napari).

    Attributes:
        model_picker: the base model and device controls (also reachable as ``model_source``,
            ``weights``, ``card_preset``, ``card_file``, ``device``).
        plots: the :class:`napari_vafa._train_plots.TrainingPlot` of the curves dock.
        last_result: the :class:`napari_vafa._train_worker.TrainDone` of the last run that
            ended with a checkpoint (None before).
    """

    TITLE = "VAFT training"
    PLOTS_DOCK = CURVES_DOCK
    CANCEL_TEXT = "cancelling: saving the latest checkpoint…"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari_vafa._train_plots import TrainingPlot
        from vafa.ops.devices import available_devices

        super().__init__(napari_viewer, TrainingPlot())
        self.last_result: TrainDone | None = None
        self._last_loss = float("nan")

        self._build_controls(available_devices())
        self.data_source.changed.connect(self._update_visibility)
        self.mode.changed.connect(self._update_visibility)
        self.profile.changed.connect(self._apply_profile)
        self.use_button.changed.connect(self.use_in_attack_widget)
        self._connect()

    # ------------------------------------------------------------------ construction
    def _build_controls(self, devices: list[str]) -> None:
        self.data_source = ComboBox(label="data", choices=DATA_SOURCES, value="layers")
        self.image_layer = ComboBox(label="image", choices=self._image_choices)
        self.labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self.datalist = FileEdit(label="datalist", mode="r", filter="*.json")
        self.model_picker = ModelPicker(devices)
        for name, control in zip(ModelPicker.NAMES, self.model_picker.widgets, strict=True):
            setattr(self, name, control)
        self.model_source.label = "base model"
        # the training settings, from the schema, starting at the "quick demo" profile
        self.setting_controls = TrainingControls(notes=TRAIN_NOTES)
        self.profile = self.setting_controls.profile
        for name, control in self.setting_controls.controls.items():
            setattr(self, name, control)
        from vafa.training import MODE_ATTACKS

        attacks = list(dict.fromkeys(a for a in MODE_ATTACKS.values() if a))
        self.attack_controls = AttackControls(
            attacks, training=True, defaults=self.setting_controls.chosen.attack,
            labels={"steps": "attack steps"},
        )  # fmt: skip
        for name, control in self.attack_controls.controls.items():
            setattr(self, name, control)
        self.out_dir = FileEdit(label="output folder", mode="d")
        self.overwrite = CheckBox(text="overwrite an earlier run", value=False)
        buttons = self._make_run_controls()
        self.use_button = PushButton(text="Use in attack widget", enabled=False)
        # fold and checkpoint carry the CLI's help (the picker sets it)
        generated = {"profile", "fold", "checkpoint", *self.setting_controls.names}
        generated |= set(self.attack_controls.names)
        own = [n for n in self._input_names() if n not in generated]
        for name in (*own, "run_button", "cancel_button", "status", "use_button"):
            getattr(self, name).tooltip = tooltip("train", name)
        self.extend([
            self.data_source, self.image_layer, self.labels_layer, self.datalist,
            *self.model_picker.widgets,
            *self.setting_controls.widgets, *self.attack_controls.widgets,
            self.out_dir, self.overwrite,
            buttons, self.status, self.use_button,
        ])  # fmt: skip

    def _input_names(self) -> tuple[str, ...]:
        return (
            "data_source", "image_layer", "labels_layer", "datalist", *ModelPicker.NAMES,
            "profile", *self.setting_controls.names,
            *self.attack_controls.names, "out_dir", "overwrite",
        )  # fmt: skip

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return layer_choices(self.viewer, "Image")

    def _labels_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return layer_choices(self.viewer, "Labels")

    def _update_visibility(self, *_: Any) -> None:
        self.model_picker.update_visibility()
        from_layers = self.data_source.value == "layers"
        self.image_layer.visible = self.labels_layer.visible = from_layers
        self.datalist.visible = not from_layers
        mode = self.mode.value
        attack = self._shown_attack()
        self.attack_controls.switch(attack)  # e.g. SA²'s 8³ blocks where VAFA had 32³
        shown = self.attack_controls.shown(attack)
        for name in self.attack_controls.names:
            getattr(self, name).visible = name in shown
        self.lambda_fr.visible = mode == "vafa-fr"  # the weight of Eq. 3's frequency term

    # ------------------------------------------------------------------ state
    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        checkpoint = self.last_result.checkpoint if self.last_result is not None else None
        self.use_button.enabled = not running and checkpoint is not None

    # ------------------------------------------------------------------ run
    def _make_job(self) -> TrainJob:
        import torch

        from napari_vafa._train_worker import TrainJob
        from vafa.training import TrainingConfig

        out_dir = path_or_none(self.out_dir.value)
        if out_dir is None:
            raise ValueError("choose an output folder for the checkpoints and the log")
        model = self.model_picker.spec()
        if self.data_source.value == "layers":
            image, labels = self._layer_volumes()
            train_data: Any = [(image, labels)]
            val_data = [(image, labels)]  # one case: validated on itself (a demo, not a test)
        else:
            datalist = path_or_none(self.datalist.value)
            if datalist is None:
                raise ValueError("choose a datalist file (or train on layers)")
            if not datalist.is_file():
                raise ValueError(f"datalist file not found: {datalist}")
            train_data, val_data = datalist, None
        values = self.setting_controls.values()
        config = TrainingConfig.from_settings(
            values, attack_options=self._attack_options(), **self._validation_attack()
        )
        self._check_out_dir(out_dir, model)
        patch = values["patch"]
        return TrainJob(
            model=model,
            train_data=train_data,
            val_data=val_data,
            out_dir=out_dir,
            config=config,
            overwrite=bool(self.overwrite.value),
            roi=(patch,) * 3 if patch else None,
            threads=torch.get_num_threads(),
            interval=PROGRESS_INTERVAL,
        )

    def _layer_volumes(self):
        layer = self.image_layer.value
        image, _ = image_layer_volume(self.viewer, layer, "training")
        labels = self.labels_layer.value
        if labels is None:
            raise ValueError(
                "no labels layer: training needs ground-truth labels on the image's grid"
            )
        hint = "choose labels on the image's grid"
        return image, labels_on_image_grid(self.viewer, labels, layer, image, hint)

    def _attack_options(self) -> dict[str, Any]:
        from vafa.training import MODE_ATTACKS

        return self.attack_controls.options(MODE_ATTACKS[self.mode.value])

    def _validation_attack(self) -> dict[str, Any]:
        """Validation runs the training attack (VAFA for a clean run, so that its curve of Dice
        under attack compares with an adversarial run's) with the controls' settings; the
        config gives it "validation attack steps" steps."""
        attack = self._shown_attack()
        return {
            "validation_attack": attack,
            "validation_attack_options": self.attack_controls.options(attack),
        }

    def _shown_attack(self) -> str:
        """The attack whose settings the controls show: the mode's, or VAFA for a clean run."""
        from vafa.training import MODE_ATTACKS

        return MODE_ATTACKS[self.mode.value] or VALIDATION_ATTACK

    def _apply_profile(self, *_: Any) -> None:
        """The attack controls a profile names take its values (the others' the attack's)."""
        from vafa.attacks import ATTACKS
        from vafa.training.settings import PROFILES

        own = {o.name: o.default for o in ATTACKS[self._shown_attack()].options}
        for name in {n for p in PROFILES for n in p.attack}:
            if name in self.attack_controls.controls and name in own:
                value = self.setting_controls.chosen.attack.get(name, own[name])
                self.attack_controls.controls[name].value = value

    def _check_out_dir(self, out_dir: Path, model) -> None:
        """Writable (created if needed), and no earlier run there unless "overwrite"; the base
        weights must not be among the files a run replaces."""
        from vafa.training.files import TRAINING_FILES, check_out_dir

        overwrite = bool(self.overwrite.value)
        if model.weights is not None and any(
            _same(model.weights, out_dir / name) for name in TRAINING_FILES
        ):
            raise ValueError(
                f"the base model {model.weights} is a checkpoint of the run in {out_dir}, "
                "which training replaces: choose another output folder"
            )
        try:
            check_out_dir(out_dir, resume=False, overwrite=overwrite, writer=True)
        except FileExistsError:
            raise FileExistsError(
                f"output folder {out_dir} already holds a training run: tick 'overwrite an "
                "earlier run' to replace it, or choose another folder"
            ) from None

    def _start(self, job: TrainJob) -> None:
        from napari_vafa._train_worker import run_training

        self._last_loss = float("nan")
        label = dict((v, k) for k, v in mode_choices())[job.config.mode]
        total = (job.config.iterations_per_epoch or 0) * job.config.epochs
        base = job.model.weights.name if job.model.weights else job.model.source
        self.plots.start(f"VAFT {label} · {base}", total or None, job.config.mode)
        self.status.value = f"loading {job.model.describe()} and the data…"
        worker = self._start_worker(
            run_training, job, progress=f"VAFT: {label}", worker_class=_train_worker_class()
        )
        worker.cancel_event = self._cancel

    # ------------------------------------------------------------------ worker → GUI
    def _on_progress(self, p: TrainProgress) -> None:
        if self._closed:
            return
        self._add_points(p)
        if self._pbar is not None:
            if self._pbar.total != p.total:
                self._pbar.total = p.total
            self._pbar.set_description(f"VAFT epoch {p.epoch}/{p.epochs}")
            self._pbar.update(p.iteration - self._pbar.n)
        self.status.value = self._status_text(p)

    def _add_points(self, p: TrainProgress) -> None:
        self.plots.set_total(p.total)
        for iteration, losses in p.losses:
            self.plots.add_losses(iteration, losses)
        for iteration, validation in p.validations:
            self.plots.add_validation(iteration, validation)
        if p.losses:
            self._last_loss = p.loss

    def _status_text(self, p: TrainProgress) -> str:
        from vafa.training import validation_summary

        text = f"epoch {p.epoch}/{p.epochs} · iteration {p.iteration}/{p.total}"
        if np.isfinite(self._last_loss):
            text += f" · loss {self._last_loss:.4f}"
        if p.stage == "validation" and p.case is not None:
            text += f"\nvalidating case {p.case}/{p.cases}"
            if p.attack_step is not None:
                text += f" · attack step {p.attack_step}/{p.attack_steps}"
        elif p.stage == "attack" and p.attack_step is not None:
            text += f"\nattacking the batch: step {p.attack_step}/{p.attack_steps}"
        if p.validations:
            text += "\n" + validation_summary(p.validations[-1][1])
        if self.cancelling:
            text = f"{self.CANCEL_TEXT} {text}"
        return text

    def _on_returned(self, result) -> None:
        from napari_vafa._train_worker import TrainDone
        from napari_vafa._worker import JobCancelled

        if self._closed:
            return
        if isinstance(result, TrainDone):
            if result.tail is not None:
                self._add_points(result.tail)
            self.plots.flush()
            self._show_done(result)
            return
        if isinstance(result, JobCancelled):
            self.status.value = "cancelled before training started (nothing written)"
            return
        notify_error(f"VAFT training failed: {result.message}")
        self.status.value = f"failed: {result.message}"

    def _show_done(self, done: TrainDone) -> None:
        from vafa.training import validation_summary

        if done.checkpoint is not None:
            self.last_result = done
        result = done.result
        head = "cancelled after" if result.cancelled else f"done in {self._elapsed():.0f} s:"
        lines = [f"{head} {result.iterations} iterations, {result.epochs_done} epoch(s)"]
        if result.validation is not None:
            lines.append(validation_summary(result.validation))
        if done.checkpoint is not None:
            lines.append(f"saved {done.checkpoint.name} in {result.out_dir}")
            notify_info(f"VAFT training: saved {done.checkpoint}")
        self.status.value = "\n".join(lines)

    # ------------------------------------------------------------------ hand-over
    def use_in_attack_widget(self, *_: Any):
        """Select the last run's checkpoint (best, else latest) in the "VAFA attack" widget,
        docking that widget if needed.

        Returns:
            The attack widget, or None (no checkpoint yet, or it could not be docked).
        """
        from vafa.io.checkpoints import card_path_for

        path = self.last_result.checkpoint if self.last_result is not None else None
        if path is None:
            notify_error("VAFT training: no trained model yet; run a training first")
            return None
        try:
            _, attack = self.viewer.window.add_plugin_dock_widget(PLUGIN, ATTACK_WIDGET)
        except Exception as err:  # the viewer is closing, or the plugin is not registered
            notify_error(f"VAFT training: could not open the {ATTACK_WIDGET!r} widget: {err}")
            return None
        card = card_path_for(path)
        attack.model_picker.use_weights(path, card if card.is_file() else None)
        self.status.value = f"{path.name} selected in the {ATTACK_WIDGET!r} widget"
        return attack


@functools.cache
def _train_worker_class():
    """napari's generator worker, with ``quit()`` turned into a cancel.

    napari's ``quit()`` (also sent to every worker when the application quits) makes the worker
    stop calling the generator at its next yield: a training abandoned there would lose the
    ``latest`` checkpoint that a cancel saves. Here ``quit()`` sets the run's cancel event: the
    generator stops yielding, lets the trainer save within one iteration and returns, and the
    worker ends normally (napari waits for it when quitting).
    """
    from napari.qt.threading import GeneratorWorker

    class TrainWorker(GeneratorWorker):
        cancel_event: threading.Event | None = None

        def quit(self) -> None:
            if self.cancel_event is None:
                super().quit()
            else:
                self.cancel_event.set()

    return TrainWorker


def _same(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
