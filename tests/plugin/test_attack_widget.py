"""The "VAFA attack" widget: the worker generator (headless) and the widget in a real viewer.

GUI tests open the bundled sample through the manifest, dock the widget through the manifest,
set values and click like a user, and run the bundled demo model on CPU with 1–2 steps.
Set ``NAPARI_VAFA_SCREENSHOT=docs/screenshot_attack_widget.png`` to refresh the README picture.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from unittest.mock import patch

import nibabel as nib
import numpy as np
import pytest
import torch
from factories import (
    ct_phantom,
    demo_cache,
    drain,
    file_digest,
    phantom_affine,
    phantom_card,
    run_and_wait,
    shown,
)

from napari_vafa._gc import IDLE_UNFREEZE_MS
from napari_vafa._worker import (
    RESULT_LAYERS,
    AttackJob,
    JobDone,
    JobFailed,
    ModelCache,
    ModelSpec,
    run_job,
)
from vafa.io.models import build_model
from vafa.io.volume import Volume

PLUGIN, WIDGET = "napari-vafa", "VAFA attack"
RUN_TIMEOUT_MS = 600_000  # the demo model at 128³ on a loaded 2-core machine


# ----------------------------------------------------------------------------- helpers
def _attack_job(
    attack="vafa", steps=2, interval=0.0, shape=(40, 36, 20), **options
) -> tuple[AttackJob, ModelCache]:
    """A job on the CT phantom (3 mm) with the tiny phantom model (32³ tiles) in the cache."""
    spec, cache = demo_cache(phantom_card(roi=32))
    if attack in ("vafa", "vafa2d"):
        options = {"steps": steps, "block_size": (8,) * (3 if attack == "vafa" else 2), **options}
    elif attack in ("pgd", "bim"):
        options = {"steps": steps, **options}
    image = Volume(ct_phantom(shape)[0], phantom_affine())
    job = AttackJob(image, None, spec, attack, options, seed=0, preview_interval=interval)
    return job, cache


# ----------------------------------------------------------------------------- library helper
@pytest.mark.parametrize("block", [(8, 8, 8), (8, 8)])
def test_zeroed_layout_matches_per_tile_quantized_to_zero(block):
    from vafa.ops.frequency import block_dct, from_blocks, padded_shape
    from vafa.ops.metrics import quantized_to_zero
    from vafa.run.tiles import crop_tile, extract_tile, tile_grid
    from vafa.run.tiling import q_table_layout, quantized_to_zero_layout

    torch.manual_seed(0)
    shape, roi = (20, 18, 12), (16, 16, 16)
    x = torch.rand(1, 1, *shape)
    tiles = tile_grid(shape, roi)
    n_blocks = block_dct(torch.zeros(1, 1, *roi), block).shape[2]
    tables = [torch.rand(1, n_blocks, *block) * 40 + 1 for _ in tiles]
    layout = q_table_layout(tables, tiles, shape, block, roi)
    mask = quantized_to_zero_layout(x, layout, block, roi)
    expected = torch.zeros_like(mask)
    for q, sl in zip(tables, tiles, strict=True):  # raster order: the later tile wins
        zero = quantized_to_zero(extract_tile(x, sl, roi), q[None], block)  # block layout
        zero = from_blocks(zero.float(), block, padded_shape(roi, block))[
            ..., : roi[0], : roi[1], : roi[2]
        ]
        expected[(slice(None), slice(None), *sl)] = crop_tile(zero, sl, roi) > 0
    assert len(tiles) == 4 and 0.0 < mask.float().mean() < 1.0
    assert torch.equal(mask, expected)
    empty = quantized_to_zero_layout(x, torch.zeros_like(layout), block, roi)
    assert not empty.any()  # tiles without a table (after a cancel) are not "zeroed"


# ----------------------------------------------------------------------------- worker
def test_run_job_yields_every_step_with_previews_and_returns_all_layers():
    job, cache = _attack_job(steps=2, interval=0.0)
    events, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    tiles = events[0].tiles
    assert tiles == 4 and len(events) == 2 * tiles  # 40×36×20 in 32³ tiles
    assert [(e.tile, e.step) for e in events[:3]] == [(1, 1), (1, 2), (2, 1)]
    kji = job.image.shape[::-1]
    for event in events:  # interval 0: every step brings its tile, in (k, j, i) and HU
        region = event.preview.region
        assert event.preview.data.shape == tuple(s.stop - s.start for s in region)
        assert all(s.stop <= n for s, n in zip(region, kji, strict=True))
    assert set(done.layers) == set(RESULT_LAYERS)
    for key, data in done.layers.items():
        assert data.shape == kji, key
    assert done.layers["clean_prediction"].dtype == np.uint8
    assert done.layers["zeroed"].max() == 1 and done.block_size == (8, 8, 8)
    np.testing.assert_array_equal(
        done.layers["adversarial"], np.transpose(done.outcome.adversarial.array, (2, 1, 0))
    )


def test_run_job_through_the_sliding_window_previews_the_whole_volume():
    job, cache = _attack_job(steps=2, interval=0.0)
    job.through = "sliding-window"
    events, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    assert done.outcome.settings["attack"]["through"] == "sliding-window"
    assert [(e.tile, e.tiles, e.step) for e in events] == [(1, 1, 1), (1, 1, 2)]
    kji = job.image.shape[::-1]
    assert all(event.preview.data.shape == kji for event in events)  # the one piece
    np.testing.assert_array_equal(
        done.layers["adversarial"], np.transpose(done.outcome.adversarial.array, (2, 1, 0))
    )


@pytest.mark.parametrize("attack", ["vafa", "vafa2d"])
def test_run_job_with_blocks_larger_than_tile_and_volume(attack):
    dims = 3 if attack == "vafa" else 2
    # one 32³ tile (the 24×20×12 volume is padded to it), 48-voxel blocks: padded again
    job, cache = _attack_job(attack, steps=1, shape=(24, 20, 12), block_size=(48,) * dims)
    _, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    assert done.block_size == (48,) * dims
    kji = job.image.shape[::-1]
    assert done.layers["dct_clean"].shape == done.layers["zeroed"].shape == kji
    assert done.layers["q_table"].min() >= 5 and done.layers["q_table"].max() <= 20


def test_run_job_previews_paste_into_the_final_volume():
    job, cache = _attack_job("gn", std=8.0)  # one event per tile, carrying the tile's final result
    events, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone) and [e.step for e in events] == [0, 0, 0, 0]
    pasted = np.ascontiguousarray(np.transpose(job.image.array, (2, 1, 0)))
    for event in events:  # what the GUI does, in tile order
        pasted[event.preview.region] = event.preview.data
    assert not np.array_equal(pasted, np.transpose(job.image.array, (2, 1, 0)))
    np.testing.assert_allclose(pasted, done.layers["adversarial"], atol=0.05)


def test_run_job_throttles_previews_and_voxel_attacks_have_no_q_table():
    job, cache = _attack_job("pgd", steps=3, interval=3600.0)
    events, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone)
    assert len(events) == 3 * 4
    assert [e.preview is not None for e in events] == [True] + [False] * 11
    assert "q_table" not in done.layers and "zeroed" not in done.layers
    assert done.block_size == (32, 32, 32)  # DCT pictures of voxel attacks


def test_run_job_cancel_returns_the_best_result_so_far():
    job, cache = _attack_job(steps=5)
    cancel = threading.Event()
    events, done = drain(run_job(job, cancel, cache), on_event=lambda e: cancel.set())
    assert len(events) == 1
    assert isinstance(done, JobDone) and done.outcome.cancelled
    assert done.outcome.metrics.tiles_done == 0


def test_run_job_reports_failures_instead_of_raising(tmp_path):
    from vafa.io.checkpoints import save_model

    job, _ = _attack_job()
    job.model = ModelSpec("file", weights=tmp_path / "missing.safetensors", device="cpu")
    events, failed = drain(run_job(job, threading.Event()))
    assert events == [] and isinstance(failed, JobFailed)
    assert "missing.safetensors" in failed.message and "Traceback" in failed.traceback
    card = phantom_card(roi=32, in_channels=2)
    weights = save_model(build_model(card), card, tmp_path / "two.safetensors")
    job.model = ModelSpec("file", weights=weights, device="cpu")
    events, failed = drain(run_job(job, threading.Event()))
    assert isinstance(failed, JobFailed) and "the model takes 2 channels" in failed.message


def test_plugin_import_stays_light():
    code = (
        "import sys, napari_vafa, napari_vafa._tooltips\n"
        "assert 'torch' not in sys.modules and 'vafa' not in sys.modules, 'heavy import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- GUI
def _viewer_with_sample(make_napari_viewer, **kwargs):
    viewer = make_napari_viewer(**kwargs)
    ct, seg = viewer.open_sample(PLUGIN, "abdominal_ct")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.live.value = False  # these tests are about full runs (the lens: test_live_lens.py)
    return viewer, widget, ct, seg


@pytest.mark.gui
def test_attack_widget_runs_updates_in_place_and_exports(
    make_napari_viewer, qtbot, tmp_path, errors
):
    from napari_vafa._attack_widget import USE_PREDICTION
    from napari_vafa._layers import META_AFFINE
    from napari_vafa._tooltips import ATTACK_WIDGET
    from vafa.io.data import sample_paths

    viewer, widget, ct, seg = _viewer_with_sample(make_napari_viewer, show=True)
    for name in ATTACK_WIDGET:
        assert getattr(widget, name).tooltip == ATTACK_WIDGET[name], name
    assert widget.image_layer.value is ct
    assert widget.labels_layer.value is seg  # the organ labels on the image's grid by default
    widget.attack.value = "pgd"
    assert shown(widget.eps) and shown(widget.alpha) and not shown(widget.q_range)
    widget.attack.value = "gn"
    assert shown(widget.std) and not shown(widget.eps)
    widget.attack.value = "vafa"
    assert shown(widget.q_range) and shown(widget.use_ssim_loss) and not shown(widget.eps)
    assert not shown(widget.weights)

    widget.labels_layer.value = USE_PREDICTION
    widget.steps.value = 2
    widget.block_size.value = 32
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS)
    assert errors == []
    layers = dict(widget.result_layers)
    assert [layer.name for layer in widget.image_layer.choices] == [ct.name]  # not ours
    assert [getattr(c, "name", c) for c in widget.labels_layer.choices] == [
        seg.name,
        USE_PREDICTION,
    ]
    assert [layers[k].name for k in RESULT_LAYERS] == list(RESULT_LAYERS.values())
    for key, layer in layers.items():
        assert layer in viewer.layers
        assert layer.data.shape == ct.data.shape, key
        assert tuple(layer.scale) == tuple(ct.scale), key
        np.testing.assert_array_equal(layer.metadata[META_AFFINE], ct.metadata[META_AFFINE])
    assert layers["adversarial"].data.dtype == np.float32
    assert tuple(layers["adversarial"].contrast_limits) == tuple(ct.contrast_limits)
    low, high = layers["perturbation"].contrast_limits
    assert low == -high and high > 0
    assert np.issubdtype(layers["adversarial_prediction"].data.dtype, np.integer)
    kinds = {key: type(viewer.layers[layer.name]).__name__ for key, layer in layers.items()}
    assert (
        kinds["zeroed"] == kinds["clean_prediction"] == "Labels" == kinds["adversarial_prediction"]
    )
    assert kinds["adversarial"] == kinds["q_table"] == "Image"
    assert layers["zeroed"].data.max() == 1
    metrics = widget.last_outcome.metrics
    assert metrics.dice.adversarial < metrics.dice.clean
    assert widget.plots.steps == [1, 2] and "SSIM" in widget.plots.summary
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.export_button.enabled
    # the layers' insertions held the main window's repaints one turn each, and gave them back
    assert widget._main_window() is viewer.window._qt_window
    assert viewer.window._qt_window.updatesEnabled()

    # re-run against the organ labels: the same layer objects, new data
    widget.labels_layer.value = seg
    widget.steps.value = 1
    before = {k: (layer, layer.data) for k, layer in layers.items()}
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS)
    assert errors == []
    assert widget.last_outcome.metrics.reference == "labels"
    for key, (layer, data) in before.items():
        assert widget.result_layers[key] is layer, key
        assert layer.data is not data, key
    assert len([layer for layer in viewer.layers if layer.name == "adversarial"]) == 1
    _screenshot(viewer, layers["adversarial_prediction"], tmp_path)

    # export: adversarial + predictions, on the source's grid; never over the source
    widget.export_predictions.value = True
    written = widget.export(tmp_path / "attacked.nii.gz")
    assert [p.name for p in written] == [
        "attacked.nii.gz",
        "attacked_clean_prediction.nii.gz",
        "attacked_adversarial_prediction.nii.gz",
    ]
    source = nib.load(sample_paths()[0])
    adversarial = nib.load(written[0])
    np.testing.assert_array_equal(adversarial.affine, source.affine)
    assert adversarial.shape == source.shape
    np.testing.assert_allclose(
        adversarial.get_fdata(), np.transpose(layers["adversarial"].data, (2, 1, 0)), atol=1e-3
    )
    digest = file_digest(sample_paths()[0])
    assert widget.export(sample_paths()[0]) == []
    assert errors and "refusing" in errors[-1]
    assert file_digest(sample_paths()[0]) == digest


def _screenshot(viewer, prediction, tmp_path) -> None:
    organs = (np.asarray(prediction.data) > 0).sum(axis=(1, 2))
    viewer.dims.set_current_step(0, int(np.argmax(organs)))  # the axial slice with most organ
    viewer.window.resize(1500, 950)
    image = viewer.screenshot(canvas_only=False, flash=False)
    assert image.ndim == 3 and float(image[..., :3].std()) > 0
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert float(canvas[..., :3].std()) > 5  # the layers are drawn, not a blank canvas
    import imageio.v3 as iio

    target = os.environ.get("NAPARI_VAFA_SCREENSHOT") or tmp_path / "screenshot.png"
    iio.imwrite(target, image)


@pytest.mark.gui
def test_cancel_keeps_best_result_and_layer_deletion_is_harmless(make_napari_viewer, qtbot, errors):
    viewer, widget, ct, _ = _viewer_with_sample(make_napari_viewer)
    shape, scale = ct.data.shape, tuple(ct.scale)
    widget.steps.value = 20
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: len(widget.plots.steps) >= 1, timeout=RUN_TIMEOUT_MS)
    assert gc.get_freeze_count() > 0  # old objects frozen while the job runs (napari_vafa._gc)
    viewer.layers.remove(ct)  # the source goes away mid-run
    widget.cancel_button.native.click()
    assert not widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert errors == []
    assert gc.get_freeze_count() > 0  # still frozen while the result shows, then idle:
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=IDLE_UNFREEZE_MS + 10_000)
    outcome = widget.last_outcome
    assert outcome.cancelled and outcome.metrics.steps_run < 20
    assert "cancelled" in widget.status.value
    adversarial = widget.result_layers["adversarial"]
    assert adversarial in viewer.layers
    assert adversarial.data.shape == shape and tuple(adversarial.scale) == scale
    assert widget.run_button.enabled and not widget.cancel_button.enabled


@pytest.mark.gui
def test_bad_inputs_notify_and_leave_the_widget_usable(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_vafa._model_picker import WEIGHTS_FILE

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert not widget.run() and "no image layer" in errors[-1]

    viewer.add_image(np.zeros((16, 16), np.float32), name="flat")
    widget.image_layer.value = viewer.layers["flat"]
    assert not widget.run() and "2D" in errors[-1]
    viewer.add_image(np.zeros((8, 8, 8, 3), np.uint8), name="colour", rgb=True)
    widget.image_layer.value = viewer.layers["colour"]
    assert not widget.run() and "RGB" in errors[-1]

    ct, _ = viewer.open_sample(PLUGIN, "abdominal_ct")
    widget.image_layer.value = ct
    widget.labels_layer.value = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="other")
    assert not widget.run() and "shape" in errors[-1]
    widget.labels_layer.value = widget.labels_layer.choices[0]

    widget.model_source.value = "file"
    assert widget.model_source.current_choice == WEIGHTS_FILE
    assert shown(widget.weights) and shown(widget.card_file)
    widget.weights.value = tmp_path / "nowhere.safetensors"
    assert not widget.run() and "not found" in errors[-1]

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    widget.weights.value = junk
    count = len(errors)
    run_and_wait(qtbot, widget, 60_000)
    assert len(errors) == count + 1 and "failed" in errors[-1]
    assert widget.result_layers == {} and widget.last_outcome is None
    assert [layer.name for layer in viewer.layers][-1] == "other"  # no half-made layer
    assert widget.run_button.enabled and widget.image_layer.enabled
    assert widget.export() == [] and "run an attack first" in errors[-1]


@pytest.mark.gui
def test_main_opens_sample_and_closing_napari_stops_the_worker(
    make_napari_viewer, qtbot, monkeypatch
):
    import napari

    from napari_vafa import __main__ as entry

    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda: None)
    assert entry.main([]) == 0
    assert [layer.name for layer in viewer.layers] == [
        "abdominal CT",
        "organ labels (TotalSegmentator)",
    ]
    widget = next(w for w in viewer.window.dock_widgets.values() if hasattr(w, "run_button"))
    widget.steps.value = 20
    widget.run_button.native.click()
    worker = widget._worker
    qtbot.waitUntil(lambda: len(widget.plots.steps) >= 1, timeout=RUN_TIMEOUT_MS)
    with patch.object(viewer.window._qt_window, "_save_current_window_settings"):
        viewer.close()  # as the make_napari_viewer fixture does: keep the user's settings
    qtbot.waitUntil(lambda: not worker.is_running, timeout=RUN_TIMEOUT_MS)
    assert len(widget.plots.steps) < 20  # stopped within a step or two
    qtbot.waitUntil(
        lambda: gc.get_freeze_count() == 0, timeout=IDLE_UNFREEZE_MS + 5000
    )  # closed too


def test_gc_freeze_nests_across_jobs_and_unfreezes_once_idle(monkeypatch):
    import napari_vafa._gc as module
    from napari_vafa._gc import IDLE_UNFREEZE_MS, freeze_old_objects, unfreeze_old_objects

    calls: list[str] = []
    for name in ("freeze", "unfreeze", "collect"):  # the real calls, counted (the frozen
        real = getattr(gc, name)  # count itself drops whenever a frozen object is freed)
        monkeypatch.setattr(module.gc, name, lambda _r=real, _n=name: calls.append(_n) or _r())
    waiting: list = []  # the idle timer: (ms, call)
    monkeypatch.setattr(module, "_later", lambda ms, call: waiting.append((ms, call)))
    assert gc.get_freeze_count() == 0
    freeze_old_objects()
    assert gc.get_freeze_count() > 0 and calls == ["freeze"]
    freeze_old_objects()  # a second job (e.g. VAFT beside an attack) does not re-freeze
    unfreeze_old_objects()
    assert calls == ["freeze"] and waiting == []  # one job still runs
    unfreeze_old_objects()
    assert calls == ["freeze"] and gc.get_freeze_count() > 0  # still frozen: results showing
    assert [ms for ms, _ in waiting] == [IDLE_UNFREEZE_MS]
    freeze_old_objects()  # the next job (a lens) starts before the GUI was idle
    waiting.pop()[1]()  # the old timer fires: nothing happens
    assert calls == ["freeze", "freeze"] and gc.get_freeze_count() > 0
    unfreeze_old_objects()
    unfreeze_old_objects()  # an extra call is harmless
    waiting.pop()[1]()  # idle: unfrozen, and the full collection runs now
    assert calls == ["freeze", "freeze", "unfreeze", "collect"] and gc.get_freeze_count() == 0
    assert waiting == []


@pytest.mark.gui
def test_compare_attacks_fills_table_and_bars_and_cancels(make_napari_viewer, qtbot, errors):
    from napari_vafa._layers import layer_to_volume
    from vafa.report import GridEntry
    from vafa.run.pipeline import evaluate

    grid = [
        GridEntry("table1", "clean", {}, ""),
        GridEntry("table1", "pgd", {"eps": 4, "alpha": 0.01, "steps": 2}, "ε=4"),
        GridEntry("table1", "vafa", {"q_max": 20, "steps": 2}, "q_max=20"),
    ]
    _, widget, ct, seg = _viewer_with_sample(make_napari_viewer)
    widget.labels_layer.value = seg
    widget.compare_grid = grid
    widget.compare_button.native.click()
    assert widget.is_running and not widget.compare_button.enabled
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert errors == []
    done = widget.last_comparison
    assert [row["label"] for row in done.rows] == ["clean", "PGD ε=4", "VAFA q_max=20"]
    assert all(row["status"] == "ok" for row in done.rows)
    clean, pgd, vafa_row = done.rows
    model, card = widget._cache.get(widget.model_picker.spec())
    image, labels = (layer_to_volume(np.asarray(layer.data, np.float32), layer.metadata)
                     for layer in (ct, seg))  # fmt: skip
    reference = evaluate(model, card, image, labels).dice_fg.clean
    assert clean["dice_fg"] == pytest.approx(reference, abs=1e-6)
    assert pgd["dice_fg"] < clean["dice_fg"] and vafa_row["ssim"] < 1.0
    table = widget.plots.table
    # the attacks, the worst case of the two members (PGD ε 4, VAFA q_max 20), and per class
    # the member that brought it lowest (compared with the outcomes' per-class Dice)
    winner = min((pgd, vafa_row), key=lambda row: row["dice_fg"])
    classes = [c for c in card.class_names[1:] if any(
        done.per_class[row["key"]].get(c) is not None for row in (pgd, vafa_row))]  # fmt: skip
    assert not table.isHidden() and table.rowCount() == 4 + len(classes)
    assert table.item(1, 0).text() == "PGD ε=4"
    assert float(table.item(1, 1).text()) == pytest.approx(pgd["dice_fg"], abs=5e-4)
    assert table.item(3, 0).text() == f"worst case: {winner['label']}"
    assert float(table.item(3, 1).text()) == pytest.approx(winner["dice_fg"], abs=5e-4)
    for r, name in enumerate(classes, start=4):
        lowest = min((pgd, vafa_row), key=lambda row: done.per_class[row["key"]][name])
        assert table.item(r, 0).text() == f"  {name}: {lowest['label']}"
    heights = [bar.get_height() for bar in widget.plots.ax_bars.patches]
    assert heights == pytest.approx([r["dice_fg"] for r in done.rows] + [winner["dice_fg"]])
    assert "comparison done" in widget.status.value and widget.run_button.enabled

    widget.compare_button.native.click()  # cancel during the second entry: rows so far kept
    qtbot.waitUntil(lambda: len(widget._comparison_rows) >= 1, timeout=RUN_TIMEOUT_MS)
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert widget.last_comparison.cancelled and len(widget.last_comparison.rows) < 3
    assert "cancelled" in widget.status.value and widget.compare_button.enabled


@pytest.mark.gui
def test_metrics_curve_shows_steps_without_full_redraws(qtbot):
    """Live steps are drawn into the canvas buffer (no full redraw per step) and painted."""
    from napari_vafa._plots import ADVERSARIAL_COLOR, LOSS_COLOR, MetricsPlot

    plots = MetricsPlot()
    qtbot.addWidget(plots)
    plots.resize(400, 500)
    plots.show()
    plots.start("test", 10)
    qtbot.waitUntil(lambda: plots.full_redraws >= 1, timeout=5000)

    def pixels(hex_color):
        image = plots.canvas.grab().toImage().convertToFormat(image_format())
        ptr = image.constBits()
        ptr.setsize(image.height() * image.bytesPerLine())
        rgba = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgba[..., :3].astype(int) - rgb).max(-1) <= 24).sum())

    before = pixels(LOSS_COLOR), pixels(ADVERSARIAL_COLOR)  # the axis labels' colours
    redraws = plots.full_redraws
    for step, (loss, dice) in enumerate([(1.0, 0.9), (0.5, 0.7), (0.2, 0.5), (0.1, 0.4)], 1):
        plots.add_step(step, loss, dice)
        qtbot.wait(30)
    assert plots.full_redraws == redraws  # blitted into the buffer, not redrawn
    qtbot.wait(100)
    assert pixels(LOSS_COLOR) > before[0] + 40 and pixels(ADVERSARIAL_COLOR) > before[1] + 40


def image_format():
    from qtpy.QtGui import QImage

    return QImage.Format.Format_RGBA8888


def test_attack_controls_make_the_library_options(qtbot):
    """The controls both widgets share are generated from the schemas and turn into the
    options of vafa.attacks, per attack."""
    from napari_vafa._attack_controls import AttackControls
    from vafa.attacks import build_attack
    from vafa.attacks.options import BLOCK_SIZES

    controls = AttackControls(["vafa", "vafa2d", "pgd", "fgsm", "bim", "gn"])
    c = controls.controls
    assert controls.shown("pgd") == {"steps", "eps", "alpha"} == controls.shown("bim")
    assert controls.shown("fgsm") == {"eps"} and controls.shown("gn") == {"std"}
    assert {"q_range", "block_size", "paper", "use_ssim_loss"} <= controls.shown("vafa")
    assert controls.shown(None) == set()
    assert list(c["block_size"].choices) == list(BLOCK_SIZES)
    assert (c["q_range"].label, c["eps"].label) == ("q_min – q_max", "ε (/255)")
    assert "[0, 255] units" in c["eps"].tooltip and c["steps"].tooltip
    c["q_range"].value = (7, 30)
    c["steps"].value = 12
    c["eps"].value = 8.0
    c["alpha"].value = 0.02
    c["std"].value = 2.5
    vafa = controls.options("vafa")
    assert {k: vafa[k] for k in ("steps", "q_min", "q_max", "block_size")} == {
        "steps": 12, "q_min": 7.0, "q_max": 30.0, "block_size": 32,
    }  # fmt: skip
    assert vafa["use_ssim_loss"] is True and vafa["paper"] is False
    assert controls.options("pgd") == {"steps": 12, "eps": 8.0, "alpha": 0.02}
    assert controls.options("fgsm") == {"eps": 8.0} and controls.options("gn") == {"std": 2.5}
    model = torch.nn.Conv3d(1, 2, 1)
    for name in ("vafa", "vafa2d", "pgd", "fgsm", "bim", "gn"):  # the library takes them all
        build_attack(name, model, **controls.options(name))
    controls.switch("vafa")
    controls.switch("vafa2d")  # 2D: the SSIM term is off by default, as published
    assert controls.options("vafa2d")["use_ssim_loss"] is False
    controls.switch("pgd")
    controls.switch("vafa")  # back in 3D (through PGD, which has no SSIM term): on again
    assert controls.options("vafa")["use_ssim_loss"] is True

    training = AttackControls(["vafa", "pgd"], training=True, defaults={"steps": 5})
    assert set(training.names) == {"steps", "q_range", "block_size", "eps", "alpha"}
    assert training.options("vafa") == {"steps": 5, "q_min": 5.0, "q_max": 20.0, "block_size": 32}


def test_a_new_attack_with_a_schema_gets_controls(qtbot, monkeypatch):
    """Adding an attack = its module and schema: the GUI offers its options unchanged."""
    from napari_vafa._attack_controls import AttackControls
    from vafa import attacks
    from vafa.attacks.options import Option

    class Blur(attacks.GaussianNoise):
        name = label = "Blur"
        options = (
            Option("sigma", float, 1.5, "blur width", unit="voxels", label="σ (voxels)",
                   minimum=0.0, widget="spin", gui=(0.0, 5.0, 0.5)),
        )  # fmt: skip

    monkeypatch.setitem(attacks.ATTACKS, "blur", Blur)
    controls = AttackControls(["blur", "gn"])
    assert controls.shown("blur") == {"sigma"}
    assert controls.controls["sigma"].label == "σ (voxels)"
    assert controls.controls["sigma"].value == 1.5
    assert controls.options("blur") == {"sigma": 1.5}


@pytest.mark.gui
def test_compare_view_shows_the_run_side_by_side_and_restores_the_view(
    make_napari_viewer, qtbot, errors
):
    viewer, widget, ct, seg = _viewer_with_sample(make_napari_viewer)
    assert not widget.compare_view.enabled  # nothing to compare before a run
    widget.labels_layer.value = seg
    widget.steps.value = 1
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS)
    assert errors == [] and widget.compare_view.enabled
    viewer.dims.ndisplay = 3
    viewer.scene.camera.zoom = 1.7
    seg.visible = False
    before_order = [layer.name for layer in viewer.layers]
    before_visible = {layer.name: layer.visible for layer in viewer.layers}
    results = widget.result_layers
    perturbation = results["perturbation"]
    assert not perturbation.colorbar.visible

    widget.compare_changes.value = True
    widget.compare_view.native.click()  # as a user
    changed = results["changed"]  # the voxels whose label changed, made on demand
    compared = [ct, *(results[k] for k in ("clean_prediction", "adversarial",
                                           "adversarial_prediction", "perturbation")), changed]  # fmt: skip
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 2 and viewer.dims.ndisplay == 2
    assert [layer.name for layer in viewer.layers if layer.visible] == [c.name for c in compared]
    positions = [grid.position(viewer.layers.index(layer), viewer.layers) for layer in compared]
    # each image with its prediction over it, then the perturbation with the changes over it
    cells = positions[::2]
    assert positions[1::2] == cells and cells == sorted(set(cells)) and len(cells) == 3
    assert tuple(grid.shape) in ((1, 3), (3, 1))  # one row or one column: no empty cell
    assert perturbation.colorbar.visible and perturbation.colormap.name == "RdBu_r"
    clean_pred = results["clean_prediction"].data
    adv_pred = results["adversarial_prediction"].data
    assert np.array_equal(changed.data != 0, (adv_pred != clean_pred) & (adv_pred != 0))
    if os.environ.get("NAPARI_VAFA_COMPARE_SCREENSHOT"):
        viewer.window._qt_window.resize(1500, 700)
        qtbot.wait(200)
        viewer.screenshot(os.environ["NAPARI_VAFA_COMPARE_SCREENSHOT"], canvas_only=True)

    widget.compare_view.native.click()  # off: the previous view comes back
    assert not grid.enabled and viewer.dims.ndisplay == 3
    assert [layer.name for layer in viewer.layers] == before_order
    assert {layer.name: layer.visible for layer in viewer.layers} == before_visible
    assert viewer.scene.camera.zoom == pytest.approx(1.7)
    assert not perturbation.colorbar.visible
    assert errors == []


@pytest.mark.gui
def test_published_algorithm_checkbox_locks_its_settings_and_runs_them(
    make_napari_viewer, qtbot, errors
):
    _viewer, widget, _ct, seg = _viewer_with_sample(make_napari_viewer)
    widget.attack.value = "vafa2d"
    assert shown(widget.paper) and shown(widget.hard_round)
    assert shown(widget.use_ssim_loss) and not widget.use_ssim_loss.value  # 2D: off
    widget.attack.value = "pgd"
    assert not shown(widget.paper) and not shown(widget.hard_round)
    widget.attack.value = "vafa"
    widget.hard_round.value = True
    widget.normalize.value = "clip"
    widget.paper.native.click()  # as a user: tick "published algorithm"
    assert widget.paper.value
    assert widget.normalize.value == "slice" and not widget.hard_round.value
    locked = (widget.normalize, widget.hard_round, widget.use_ssim_loss, widget.ssim_weight)
    assert not any(control.enabled for control in locked)
    widget.labels_layer.value = seg
    widget.steps.value = 2
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS)
    assert errors == []
    settings = widget.last_outcome.settings["attack"]
    assert settings["paper"] and settings["normalize"] == "slice" and settings["keep"] == "last"
    assert {row["step"] for row in widget.last_outcome.history if row["returned"]} == {2}
    widget.paper.native.click()  # untick: the controls are the user's again
    assert all(control.enabled for control in locked)
    widget.hard_round.value = True
    options = widget._attack_options()
    assert options["hard_round"] is True and options["paper"] is False


def test_model_picker_offers_preset_cards_for_checkpoints_without_one(qtbot, tmp_path):
    from napari_vafa._model_picker import ModelPicker

    picker = ModelPicker(["cpu"])
    weights = tmp_path / "model_best.pt"
    weights.write_bytes(b"weights")
    picker.model_source.value = "file"
    picker.weights.value = weights
    assert picker.card_preset.value == "file" and shown(picker.card_file)
    assert picker.spec().card is None  # the card beside the weights
    picker.card_preset.value = "unetr-btcv"
    assert not shown(picker.card_file) and shown(picker.card_preset)
    assert picker.spec().card == "unetr-btcv"
    picker.use_weights(weights, tmp_path / "card.json")  # a hand-over resets to the file
    assert picker.card_preset.value == "file" and shown(picker.card_file)
