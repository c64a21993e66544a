"""The "VAFT fine-tuning" widget: the worker generator (headless) and the widget in a viewer.

A tiny UNet (3 classes, 16³ patches) saved as safetensors + card, and a small synthetic CT with
its labels added as layers the way the reader does (grid in the metadata); every run is one
epoch of 1–2 iterations with 1-step attacks. GUI tests dock the widget through the manifest
and click like a user. Set ``NAPARI_VAFA_TRAIN_SCREENSHOT=path.png`` to save a picture of the
docked widget after a run.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from factories import (
    ct_phantom,
    drain,
    file_digest,
    phantom_affine,
    phantom_card,
    run_and_wait,
    shown,
)

from napari_vafa._train_worker import TrainDone, TrainJob, TrainProgress, run_training
from napari_vafa._worker import JobCancelled, JobFailed, ModelSpec
from vafa.io.checkpoints import card_path_for
from vafa.io.volume import Volume
from vafa.training.files import BEST, LATEST, LOG, PLOT, STATE, TRAINING_FILES

PLUGIN, WIDGET, ATTACK = "napari-vafa", "VAFT fine-tuning", "VAFA attack"
RUN_TIMEOUT_MS = 120_000
SHAPE = (24, 20, 16)


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny untrained UNet as safetensors + card (``base.safetensors[.json]``)."""
    import torch

    from vafa.io.checkpoints import save_model
    from vafa.io.models import build_model

    card = phantom_card()
    torch.manual_seed(0)
    return save_model(
        build_model(card), card, tmp_path_factory.mktemp("model") / "base.safetensors"
    )


def _tiny_pair(shape=SHAPE, extra_class: int | None = None) -> tuple[Volume, Volume]:
    """The CT phantom (HU) with a small body, so that random 16³ patches also find
    background, and its labels (0 air, 1 tissue, 2 bone)."""
    hu, labels = ct_phantom(shape, noise=30.0, body=0.4, bone=0.2)
    if extra_class is not None:
        labels[0, 0, 0] = extra_class
    affine = phantom_affine()
    return Volume(hu, affine), Volume(labels, affine, original_dtype=np.dtype(np.uint8))


def _config(mode="vafa-fr", iterations=2, epochs=1):
    from vafa.training import Augmentation, TrainingConfig

    options = {"vafa-fr": {"steps": 1, "block_size": 8}, "clean": {}}[mode]
    return TrainingConfig(
        mode=mode,
        epochs=epochs,
        iterations_per_epoch=iterations,
        batch_size=1,
        attack_options=options,
        augmentation=Augmentation(rotate_degrees=0, scale_intensity=0, shift_intensity=0),
    )


def _job(weights, out_dir, pairs=None, interval=0.0, **config) -> TrainJob:
    pairs = pairs or [_tiny_pair()]
    return TrainJob(
        model=ModelSpec("file", weights=weights, device="cpu"),
        train_data=pairs,
        val_data=pairs,
        out_dir=out_dir,
        config=_config(**config),
        interval=interval,
    )


def _write_datalist(folder: Path, missing: bool = False) -> Path:
    import nibabel as nib

    image, labels = _tiny_pair()
    nib.save(nib.Nifti1Image(image.array, image.affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels.array.astype(np.uint8), labels.affine), folder / "seg.nii.gz")
    cases = [{"image": "ct.nii.gz", "label": "seg.nii.gz"}]
    if missing:
        cases.append({"image": "gone_ct.nii.gz", "label": "gone_seg.nii.gz"})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": cases, "validation": cases[:1]}))
    return path


# ----------------------------------------------------------------------------- worker
def test_run_training_yields_curve_points_and_returns_the_checkpoints(weights, tmp_path):
    digest = file_digest(weights)
    records, done = drain(run_training(_job(weights, tmp_path / "run"), threading.Event()))
    assert isinstance(done, TrainDone), getattr(done, "traceback", done)
    assert all(isinstance(r, TrainProgress) for r in records)
    assert {r.stage for r in records} == {"attack", "train", "validation"}
    losses = [point for r in records for point in r.losses]
    assert [i for i, _ in losses] == [1, 2]
    assert set(losses[0][1]) == {"loss", "clean", "adv", "fr"}  # the terms of Eq. 3
    validations = [v for r in records for v in r.validations]
    assert len(validations) == 1 and validations[0][0] == 2
    assert 0.0 <= validations[0][1]["dice_fg_adv"] <= 1.0
    assert records[-1].total == 2 and records[-1].epochs == 1
    assert not done.result.cancelled and done.result.iterations == 2 and done.tail is None
    assert done.checkpoint == done.result.best == tmp_path / "run" / BEST
    for name in TRAINING_FILES:
        assert (tmp_path / "run" / name).is_file(), name
    assert file_digest(weights) == digest  # the base weights are only read


def test_run_training_throttles_records_and_keeps_the_rest_for_the_end(weights, tmp_path):
    job = _job(weights, tmp_path / "run", interval=3600.0, iterations=3)
    records, done = drain(run_training(job, threading.Event()))
    assert isinstance(done, TrainDone), getattr(done, "traceback", done)
    # the first event, then only the finished validation round (sent at once)
    assert len(records) == 2 and records[-1].validations
    sent = [i for r in records for i, _ in r.losses]
    tail = [i for i, _ in done.tail.losses] if done.tail else []
    assert sorted(sent + tail) == [1, 2, 3]


def test_run_training_cancel_saves_latest_and_stops(weights, tmp_path):
    cancel = threading.Event()
    job = _job(weights, tmp_path / "run", iterations=50, epochs=10)
    records, done = drain(run_training(job, cancel), on_event=lambda r: cancel.set())
    assert len(records) == 1  # nothing is yielded after a cancel
    assert isinstance(done, TrainDone) and done.result.cancelled
    assert done.result.iterations < 2 and done.checkpoint == tmp_path / "run" / LATEST
    assert (tmp_path / "run" / STATE).is_file()

    early = threading.Event()
    early.set()  # cancelled while the model loads: nothing is checked or written
    records, done = drain(run_training(_job(weights, tmp_path / "never"), early))
    assert records == [] and isinstance(done, JobCancelled)
    assert not (tmp_path / "never").exists()


def test_run_training_reports_bad_data_instead_of_raising(weights, tmp_path):
    pairs = [_tiny_pair(extra_class=5)]
    records, failed = drain(run_training(_job(weights, tmp_path / "a", pairs), threading.Event()))
    assert records == [] and isinstance(failed, JobFailed)
    assert "class 5" in failed.message and "Traceback" in failed.traceback

    job = _job(weights, tmp_path / "b")
    job.train_data, job.val_data = _write_datalist(tmp_path, missing=True), None
    records, failed = drain(run_training(job, threading.Event()))
    assert isinstance(failed, JobFailed) and "missing" in failed.message
    assert "gone_ct.nii.gz" in failed.message
    for folder in (tmp_path / "a", tmp_path / "b"):
        assert not [n for n in TRAINING_FILES if (folder / n).exists()]


# ----------------------------------------------------------------------------- GUI
def _add_layers(viewer, pair=None):
    from napari_vafa._layers import layer_kwargs, volume_to_layer_data

    image, labels = pair or _tiny_pair()
    ct = viewer.add_image(volume_to_layer_data(image), **layer_kwargs(image, "tiny CT"))
    data = volume_to_layer_data(labels).astype(np.uint8)
    seg = viewer.add_labels(data, **layer_kwargs(labels, "tiny labels"))
    return ct, seg


def _docked(make_napari_viewer, weights, tmp_path, layers=True, **kwargs):
    viewer = make_napari_viewer(**kwargs)
    layer_pair = _add_layers(viewer) if layers else None
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.model_picker.use_weights(weights, card_path_for(weights))
    widget.device.value = "cpu"
    widget.epochs.value = 1
    widget.iterations_per_epoch.value = 2
    widget.batch_size.value = 1
    widget.steps.value = 1
    widget.validation_steps.value = 1
    widget.block_size.value = 8
    widget.out_dir.value = tmp_path / "run"
    return viewer, widget, layer_pair


def _usable(widget) -> bool:
    return (
        widget.run_button.enabled
        and not widget.cancel_button.enabled
        and widget.mode.enabled
        and not widget.is_running
    )


@pytest.mark.gui
def test_train_widget_runs_plots_and_hands_the_model_to_the_attack_widget(
    make_napari_viewer, qtbot, tmp_path, errors
):
    from napari_vafa._tooltips import TRAIN_WIDGET
    from vafa.training.files import read_log

    shot = os.environ.get("NAPARI_VAFA_TRAIN_SCREENSHOT")
    viewer, widget, (ct, seg) = _docked(
        make_napari_viewer, weights_path(tmp_path), tmp_path, show=bool(shot)
    )
    for name in TRAIN_WIDGET:
        assert getattr(widget, name).tooltip == TRAIN_WIDGET[name], name
    assert widget.image_layer.value is ct and widget.labels_layer.value is seg
    assert shown(widget.image_layer) and not shown(widget.datalist)
    widget.data_source.value = "datalist"
    assert shown(widget.datalist) and not shown(widget.image_layer)
    widget.data_source.value = "layers"
    widget.mode.value = "pgd"
    assert shown(widget.eps) and shown(widget.steps) and not shown(widget.q_range)
    widget.mode.value = "gn"
    assert shown(widget.std) and not shown(widget.eps)
    widget.mode.value = "clean"
    assert not any(shown(getattr(widget, n)) for n in ("eps", "std", "lambda_fr"))
    assert shown(widget.q_range)  # a clean run is validated under VAFA, with these settings
    widget.mode.value = "vafa-fr"
    assert shown(widget.q_range) and shown(widget.lambda_fr) and not shown(widget.eps)
    assert not widget.use_button.enabled

    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS, locked=("mode", "out_dir"))
    assert errors == []
    out = tmp_path / "run"
    for name in (LATEST, f"{LATEST}.json", BEST, f"{BEST}.json", LOG, PLOT, STATE):
        assert (out / name).is_file(), name
    rows = read_log(out / LOG)
    assert [r["stage"] for r in rows] == ["train", "train", "validation"]
    card = json.loads((out / f"{BEST}.json").read_text())
    assert card["training"]["mode"] == "vafa-fr" and card["training"]["iterations_done"] == 2
    plots = widget.plots
    assert plots.iterations == [1, 2] and set(plots.losses[0]) == {"loss", "clean", "adv", "fr"}
    assert plots.val_iterations == [2] and 0.0 <= plots.dice_adv[0] <= 1.0
    assert plots.redraws >= 1
    assert "done" in widget.status.value and "best.safetensors" in widget.status.value
    assert _usable(widget) and widget.use_button.enabled
    assert widget.last_result.result.best == out / BEST
    if shot:  # the viewer with the widget and its curves, and the widget alone
        viewer.window.resize(1500, 1000)
        qtbot.wait(300)
        import imageio.v3 as iio

        iio.imwrite(shot, viewer.screenshot(canvas_only=False, flash=False))
        widget.native.grab().save(str(Path(shot).with_suffix(".widget.png")))

    widget.use_button.native.click()
    docks = viewer.window.dock_widgets
    attack = next(w for w in docks.values() if hasattr(w, "model_picker") and w is not widget)
    assert attack.model_source.value == "file"
    assert Path(attack.weights.value) == out / BEST
    assert Path(attack.card_file.value) == out / f"{BEST}.json"
    assert widget.use_in_attack_widget() is attack  # the docked one is reused

    # an earlier run without "overwrite": refused, nothing touched
    before = {name: file_digest(out / name) for name in (LATEST, BEST, LOG)}
    assert not widget.run() and "already holds" in errors[-1]
    assert {name: file_digest(out / name) for name in before} == before
    assert _usable(widget)


def weights_path(tmp_path) -> Path:
    """A fresh copy of the tiny model in ``tmp_path`` (each GUI test owns its files)."""
    import torch

    from vafa.io.checkpoints import save_model
    from vafa.io.models import build_model

    card = phantom_card()
    torch.manual_seed(0)
    return save_model(build_model(card), card, tmp_path / "base.safetensors")


@pytest.mark.gui
def test_validation_attack_takes_its_own_steps_and_vafa_for_a_clean_run(
    make_napari_viewer, tmp_path
):
    _, widget, _ = _docked(make_napari_viewer, weights_path(tmp_path), tmp_path)
    assert shown(widget.validation_steps)
    widget.steps.value, widget.validation_steps.value = 2, 7
    widget.q_range.value = (4.0, 12.0)
    expected_vafa = {**widget.attack_controls.options("vafa"), "steps": 7}
    for mode, attack in (("vafa-fr", "vafa"), ("clean", "vafa"), ("pgd", "pgd")):
        widget.mode.value = mode
        config = widget._make_job().config
        name, options = config.validation
        assert name == attack, mode
        assert options["steps"] == 7, mode
        assert (config.attack_options or {}).get("steps") == (None if mode == "clean" else 2)
        if attack == "vafa":
            assert expected_vafa.items() <= options.items() and options["q_max"] == 12.0, mode
        else:
            assert options["eps"] == widget.eps.value, mode


@pytest.mark.gui
def test_cancel_saves_latest_and_layer_deletion_is_harmless(
    make_napari_viewer, qtbot, tmp_path, errors
):
    viewer, widget, (ct, seg) = _docked(make_napari_viewer, weights_path(tmp_path), tmp_path)
    widget.epochs.value = 20
    widget.iterations_per_epoch.value = 50
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: "epoch" in widget.status.value, timeout=RUN_TIMEOUT_MS)
    viewer.layers.remove(ct)  # the training data go away mid-run: the run has its own copy
    viewer.layers.remove(seg)
    widget.cancel_button.native.click()
    assert not widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert errors == []
    done = widget.last_result
    assert done.result.cancelled and done.result.iterations < 20 * 50
    assert done.checkpoint == tmp_path / "run" / LATEST and done.checkpoint.is_file()
    assert "cancelled" in widget.status.value
    assert _usable(widget) and widget.use_button.enabled
    assert widget.image_layer.choices == ()


@pytest.mark.gui
def test_bad_inputs_notify_and_leave_the_widget_usable(make_napari_viewer, qtbot, tmp_path, errors):
    viewer, widget, _ = _docked(make_napari_viewer, weights_path(tmp_path), tmp_path, layers=False)
    assert not widget.run() and "no image layer" in errors[-1]
    image, labels = _tiny_pair()
    from napari_vafa._layers import layer_kwargs, volume_to_layer_data

    viewer.add_image(volume_to_layer_data(image), **layer_kwargs(image, "tiny CT"))
    assert not widget.run() and "no labels layer" in errors[-1]
    other = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="other")
    widget.labels_layer.value = other
    assert not widget.run() and "shape" in errors[-1]

    data = volume_to_layer_data(labels).astype(np.uint8)
    data[0, 0, 0] = 7  # a class the 3-class model cannot predict
    widget.labels_layer.value = viewer.add_labels(data, **layer_kwargs(labels, "too many"))
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    widget.out_dir.value = blocker / "run"
    assert not widget.run() and "not writable" in errors[-1]
    widget.out_dir.line_edit.value = ""  # cleared (FileEdit.value = "" would give the cwd)
    assert not widget.run() and "output folder" in errors[-1]

    out = tmp_path / "run"
    widget.out_dir.value = out
    count = len(errors)
    # checked by the trainer, before any file is written
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS, locked=("mode", "out_dir"))
    assert len(errors) == count + 1 and "failed" in errors[-1] and "class 7" in errors[-1]
    assert not [name for name in TRAINING_FILES if (out / name).exists()]
    assert _usable(widget) and widget.last_result is None and not widget.use_button.enabled

    widget.data_source.value = "datalist"
    assert not widget.run() and "choose a datalist" in errors[-1]
    widget.datalist.value = tmp_path / "nowhere.json"
    assert not widget.run() and "not found" in errors[-1]
    widget.datalist.value = _write_datalist(tmp_path, missing=True)
    count = len(errors)
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS, locked=("mode", "out_dir"))
    assert len(errors) == count + 1 and "missing" in errors[-1] and "gone_ct" in errors[-1]
    assert not [name for name in TRAINING_FILES if (out / name).exists()]
    assert _usable(widget)

    # an earlier run in the folder: refused without "overwrite", its files untouched
    (out / LATEST).write_bytes(b"an earlier run")
    widget.datalist.value = _write_datalist(tmp_path)
    assert not widget.run() and "overwrite" in errors[-1]
    assert (out / LATEST).read_bytes() == b"an earlier run"
    widget.model_picker.use_weights(out / LATEST, card_path_for(weights_path(tmp_path)))
    widget.overwrite.value = True
    assert not widget.run() and "replaces" in errors[-1]  # the base model is in the run
    assert (out / LATEST).read_bytes() == b"an earlier run"
    assert _usable(widget)


@pytest.mark.gui
def test_closing_napari_while_training_stops_the_worker(make_napari_viewer, qtbot, tmp_path):
    from unittest.mock import patch

    viewer, widget, _ = _docked(make_napari_viewer, weights_path(tmp_path), tmp_path)
    widget.epochs.value = 20
    widget.iterations_per_epoch.value = 50
    widget.run_button.native.click()
    worker = widget._worker
    qtbot.waitUntil(lambda: "epoch" in widget.status.value, timeout=RUN_TIMEOUT_MS)
    with patch.object(viewer.window._qt_window, "_save_current_window_settings"):
        viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=RUN_TIMEOUT_MS)
    assert widget._closed and not worker.abort_requested
    assert (tmp_path / "run" / LATEST).is_file()  # the cancel saved before stopping
