"""The attack widget's live lens and step scrubber, driven as a user in a real viewer with the
bundled sample and demo model (few steps), checked against the library run directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import demo_cache, drain, grid_affine, noise_ct, tiny_card

from vafa.attacks import build_attack
from vafa.io.data import sample_paths
from vafa.io.model_space import labels_to_model_space, to_model_space
from vafa.io.volume import load_volume

PLUGIN, WIDGET = "napari-vafa", "VAFA attack"
TIMEOUT_MS = 120_000
HU_F16 = 425 * 2.0**-11 * 1.01  # float16 rounding of [0, 1] in the CT window's HU


def _viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    ct, _ = viewer.open_sample(PLUGIN, "abdominal_ct")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget, ct


def _q_slider(widget):
    from qtpy.QtWidgets import QAbstractSlider

    return widget.q_range.native.findChildren(QAbstractSlider)[0]


def _wait_lens(qtbot, widget, count):
    qtbot.waitUntil(lambda: widget.live_lens.shown >= count, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.live_lens.runner.busy, timeout=TIMEOUT_MS)


def _library_events(widget, options, seed):
    """The library's own iterates of the lens cube (attack run directly, no history)."""
    model, card = widget._cache.get(widget.model_picker.spec())
    image, labels = load_volume(sample_paths()[0]), load_volume(sample_paths()[1])
    model_input = to_model_space(image, card)
    y = labels_to_model_space(labels, model_input)
    region = widget.live_lens.last.result.region
    index = (slice(None), slice(None), *region)
    attack = build_attack("vafa", model, **options, seed=seed)
    gen = attack.iter_attack(model_input.tensor[index], y[index])
    events = []
    drain(gen, lambda event: events.append((event.adversarial.clone(), event.prediction.clone())))
    return events, model_input, region


@pytest.mark.gui
def test_slider_release_starts_a_lens_and_a_newer_one_cancels_it(make_napari_viewer, qtbot, errors):
    viewer, widget, ct = _viewer(make_napari_viewer)
    assert widget.live.value  # on by default with the bundled demo model
    widget.live.value = False
    widget.steps.value = 8
    widget.live.value = True  # ticking it asks for a lens
    qtbot.waitUntil(lambda: widget.live_lens.runner.started == 1, timeout=5_000)
    qtbot.waitUntil(lambda: widget.live_lens.runner.steps_seen >= 1, timeout=TIMEOUT_MS)  # running

    widget.q_range.value = (5.0, 35.0)  # as the user drags ...
    _q_slider(widget).sliderReleased.emit()  # ... and lets go
    assert widget.live_lens.runner.superseded == 1  # the running lens is cancelled at once
    _wait_lens(qtbot, widget, 1)
    assert (
        widget.live_lens.shown == 1 and widget.live_lens.runner.started == 2
    )  # only the newer shown
    lens = widget.live_lens.last
    assert lens.result.settings["q_max"] == 35.0 and not lens.result.cancelled
    assert "live lens" in widget.status.value and "Dice" in widget.status.value

    # in place: over the cube of the image, in HU, the perturbation is the difference
    layers = widget.live_lens.layers.layers
    start = lens.start_kji
    assert np.allclose(layers["adversarial"].translate, np.multiply(start, ct.scale))
    cube = tuple(
        slice(s, s + n) for s, n in zip(start, layers["adversarial"].data.shape, strict=True)
    )
    clean = np.asarray(ct.data[cube], dtype=np.float32)
    np.testing.assert_allclose(
        layers["adversarial"].data - clean, layers["perturbation"].data, atol=1e-3
    )
    assert layers["adversarial"].bounding_box.visible
    assert layers["adversarial_prediction"].visible and not layers["clean_prediction"].visible
    assert errors == []

    # moving to another place asks again; a small move does not
    started = widget.live_lens.runner.started
    viewer.dims.set_point(0, viewer.dims.point[0] + 1 * ct.scale[0])
    qtbot.wait(400)
    assert widget.live_lens.runner.started == started
    viewer.dims.set_point(0, viewer.dims.point[0] + 40 * ct.scale[0])
    qtbot.waitUntil(lambda: widget.live_lens.runner.started == started + 1, timeout=5_000)
    _wait_lens(qtbot, widget, 2)
    assert widget.live_lens.last.start_kji != start

    widget.live.value = False  # off: nothing more runs
    widget.seed.value = 3
    qtbot.wait(300)
    assert widget.live_lens.runner.started == started + 1 and errors == []


@pytest.mark.gui
def test_step_scrubber_shows_the_library_iterate_of_each_step(
    make_napari_viewer, qtbot, errors, monkeypatch
):
    _, widget, ct = _viewer(make_napari_viewer)
    widget.live.value = False
    widget.steps.value = 4
    widget.seed.value = 2
    widget.live.value = True
    _wait_lens(qtbot, widget, 1)
    done = widget.live_lens.last
    options = dict(widget.attack_controls.options("vafa"))
    options["steps"] = done.plan.steps
    events, model_input, region = _library_events(widget, options, seed=2)
    slider, layers = widget.step_slider, widget.live_lens.layers.layers
    assert slider.enabled and slider.max == done.plan.steps
    assert slider.value == done.result.returned_step  # the returned iterate first
    np.testing.assert_array_equal(layers["adversarial"].data, done.layers["adversarial"])

    source = model_input.source.array[region]
    mapping = model_input.mapping
    for k in range(1, done.plan.steps + 1):
        if k == done.result.returned_step:
            continue
        slider.value = k  # as the user drags
        x01, prediction = events[k - 1]
        expected = mapping.inverse(x01[0, 0].numpy(), source).transpose(2, 1, 0)
        np.testing.assert_allclose(layers["adversarial"].data, expected, atol=HU_F16, rtol=0)
        np.testing.assert_array_equal(
            layers["adversarial_prediction"].data, prediction[0, 0].numpy().transpose(2, 1, 0)
        )
        assert f"step {k}/" in widget.step_info.value and "SSIM" in widget.step_info.value
    slider.value = 0  # the clean cube
    np.testing.assert_allclose(layers["adversarial"].data, source.transpose(2, 1, 0), atol=HU_F16)
    assert np.abs(layers["perturbation"].data).max() <= HU_F16
    assert "clean image" in widget.step_info.value
    slider.value = done.result.returned_step  # back to the result, exactly
    np.testing.assert_array_equal(layers["adversarial"].data, done.layers["adversarial"])
    assert errors == []
    # a slow step (here: any, with the limit at 0) stops the slider tracking the drag for the
    # rest of this history; the next run's starts tracking again
    assert slider.tracking
    monkeypatch.setattr("napari_vafa._scrubber.TRACKING_LIMIT_S", 0.0)
    slider.value = 0
    assert not slider.tracking
    monkeypatch.setattr("napari_vafa._scrubber.TRACKING_LIMIT_S", 60.0)
    slider.value = done.result.returned_step
    assert not slider.tracking

    # a full run replaces the lens history by its own, freed when the next run starts
    widget.steps.value = 2
    widget.run_button.native.click()
    assert widget.scrubber.source is None and not slider.enabled  # freed at the start
    qtbot.waitUntil(lambda: not widget.is_running, timeout=600_000)
    assert errors == [] and widget.scrubber.source.name == "run" and slider.tracking
    result = widget.result_layers
    slider.value = 0
    clean = np.asarray(ct.data, dtype=np.float32)
    np.testing.assert_allclose(result["adversarial"].data, clean, atol=HU_F16 * 4)
    assert slider.max == 2 and widget.last_result.history.nbytes < 256 * 2**20
    slider.value = 1  # the run's curve marks the step shown
    marker = widget.plots._marker
    assert marker.get_visible() and list(marker.get_xdata()) == [1, 1]
    widget.run_button.native.click()  # a new run: no mark
    assert not marker.get_visible()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=600_000)


@pytest.mark.gui
def test_run_stops_the_lens_and_the_lens_waits_for_the_run(make_napari_viewer, qtbot, errors):
    _, widget, _ = _viewer(make_napari_viewer)
    widget.steps.value = 2
    assert widget.live_lens.request()
    widget.run_button.native.click()  # the lens stops within a step, the run gets the model
    assert widget.is_running and not widget.live_lens.request()  # no lens while a run runs
    qtbot.waitUntil(lambda: not widget.is_running, timeout=600_000)
    assert widget.last_outcome is not None and errors == []
    model, _ = widget._cache.get(widget.model_picker.spec())
    assert not model.training or all(p.requires_grad for p in model.parameters())


@pytest.mark.gui
def test_lens_on_an_image_off_the_models_grid_says_so_in_one_line(
    make_napari_viewer, qtbot, errors
):
    viewer, widget, ct = _viewer(make_napari_viewer)
    fine = viewer.add_image(np.asarray(ct.data)[::2, ::2, ::2].astype(np.float32), scale=(6, 6, 6))
    widget.image_layer.value = fine
    widget.labels_layer.value = "use model prediction"
    assert widget.live_lens.request()
    qtbot.waitUntil(lambda: "model's grid" in widget.status.value, timeout=TIMEOUT_MS)
    assert widget.status.value.count("\n") == 0 and widget.live_lens.shown == 0
    assert torch.get_num_threads() >= 1 and errors == []


def test_a_whole_volume_lens_covers_the_volume_when_the_budget_allows():
    """Size 0 (the default on a GPU): the whole volume, when the measured time fits."""
    import threading

    from napari_vafa._lens import LensDone, LensJob, LensPlanner, run_lens, whole_side
    from vafa.io.volume import Volume

    assert whole_side((122, 101, 112)) == 128 and whole_side((16, 8, 4)) == 16
    spec, cache = demo_cache(tiny_card(roi=16, spacing=(3.0, 3.0, 3.0), orientation="RAS"))
    hu = noise_ct((20, 18, 12), mean=0.0, std=200.0)
    image = Volume(hu, grid_affine((3.0, 3.0, 3.0)))
    job = LensJob(image, None, spec, "vafa", {"steps": 2, "block_size": (8, 8, 8)}, 0,
                  center=(0, 0, 0), size=0, budget=60.0)  # fmt: skip
    _, done = drain(run_lens(job, threading.Event(), cache, LensPlanner()))
    assert isinstance(done, LensDone), getattr(done, "message", done)
    assert [s.stop - s.start for s in done.result.region] == [20, 18, 12]
    assert done.layers["adversarial"].shape == (12, 18, 20) and done.plan.note == ""
    tight = LensJob(image, None, spec, "vafa", {"steps": 50, "block_size": (8, 8, 8)}, 0,
                    center=(0, 0, 0), size=0, budget=0.2)  # fmt: skip
    planner = LensPlanner()
    planner._pass[(spec, 32)] = planner._pass[(spec, 16)] = 0.05  # a slow machine
    plan = planner.plan(*cache.get(spec), tight, 50, whole_side(image.shape))
    assert plan.steps < 50 and "to answer within 0.2 s" in plan.note
