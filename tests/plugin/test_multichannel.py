"""napari: multi-channel images (issue 27). A 4D NIfTI with channels on its last axis opens as
one layer per channel (napari's own reader API), the attack widget offers one layer combo per
channel of a 4-channel model, attacks them together and shows one adversarial and one
perturbation layer per channel; channels on different grids are refused in one line; the live
lens attacks every channel of a cube and shows the first.

References: nibabel's own reading of the files; the library's run on the same Channels image.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from factories import (
    demo_cache,
    mri_case,
    run_and_wait,
    save_nifti,
    shown,
    tiny_card,
    write_mri_case,
)

from vafa.io.intensity import fit_windows

PLUGIN, WIDGET = "napari-vafa", "VAFA attack"
NAMES = ["T1c", "T1", "T2", "FLAIR"]
PERCENTILE = {"type": "percentile", "p_low": 1.0, "p_high": 99.0}
RUN_TIMEOUT_MS = 300_000
SCREENSHOT = "/tmp/napari_vafa_multichannel.png"
LENS_SCREENSHOT = "/tmp/napari_vafa_multichannel_lens.png"


def _widget_with_mri_model(viewer):
    """The attack widget with a tiny 4-channel model (T1c, T1, T2, FLAIR; percentile
    scaling per channel) in its model cache, chosen as a user would (model and device)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.live.value = False
    card = tiny_card(in_channels=4, channel_names=NAMES, intensity=PERCENTILE)
    spec, cache = demo_cache(card)
    widget._cache.put(spec, *cache.get(spec))
    widget.device.value = spec.device  # the picker now names the cached model
    return widget


@pytest.mark.gui
def test_a_4d_nifti_opens_as_channels_and_is_attacked_channel_by_channel(
    make_napari_viewer, qtbot, tmp_path, errors
):
    from napari_vafa._layers import META_AFFINE

    entry = write_mri_case(tmp_path, "case", 7, "4d")
    path = tmp_path / entry["image"]
    reference = nib.load(path)
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == [f"case_img [{c}]" for c in range(4)]
    for c, layer in enumerate(layers):  # one 3D layer per channel, on the file's grid
        expected = reference.get_fdata(dtype=np.float32)[..., c].T
        np.testing.assert_array_equal(layer.data, expected)
        np.testing.assert_allclose(layer.metadata[META_AFFINE], reference.affine)
        assert layer.scale == pytest.approx(reference.header.get_zooms()[:3][::-1])

    widget = _widget_with_mri_model(viewer)
    combos = widget.channel_picker.combos
    assert [combo.label for combo in combos] == NAMES
    assert shown(widget.channel_box) and not shown(widget.image_layer)
    for combo, layer in zip(combos, layers, strict=True):  # one layer per channel, in order
        combo.value = layer
    widget.attack.value = "vafa"
    widget.steps.value = 4
    widget.block_size.value = 8
    widget.q_range.value = (5.0, 40.0)
    run_and_wait(qtbot, widget, RUN_TIMEOUT_MS, locked=("channel_box",))
    assert errors == [], errors

    results = widget.result_layers
    keys = ["adversarial", "adversarial#1", "adversarial#2", "adversarial#3"]
    adversarial = [results[key] for key in keys]
    perturbation = [results[key.replace("adversarial", "perturbation")] for key in keys]
    assert [layer.name for layer in adversarial] == [f"adversarial {n}" for n in NAMES]
    assert [layer.name for layer in perturbation] == [f"perturbation {n}" for n in NAMES]
    for c, (adv, layer) in enumerate(zip(adversarial, layers, strict=True)):
        assert adv in viewer.layers and adv.data.shape == layer.data.shape
        assert not np.array_equal(adv.data, layer.data), c  # every channel attacked
        np.testing.assert_allclose(adv.metadata[META_AFFINE], layer.metadata[META_AFFINE])
        assert tuple(adv.scale) == tuple(layer.scale)
        np.testing.assert_allclose(perturbation[c].data, adv.data - layer.data, atol=1e-3)
        low, high = perturbation[c].contrast_limits  # each channel in its own units
        assert low == -high and 0 < high <= np.abs(perturbation[c].data).max() + 1e-6
    assert type(results["adversarial_prediction"]).__name__ == "Labels"
    assert "adversarial_prediction#1" not in results  # predictions: one layer each
    metrics = widget.last_outcome.metrics
    assert metrics.dice_fg.adversarial < metrics.dice_fg.clean
    assert "Dice" in widget.status.value and "done" in widget.status.value

    # the step scrubber replays every channel: a step from the run's history (kept in
    # float16), each channel through its own window (the library's, fitted per channel) over
    # nibabel's reading of the file; the returned step gives the result layers back
    scrubber = widget.scrubber
    assert scrubber.slider.enabled and scrubber.slider.max == 4
    returned = {key: results[key].data.copy() for key in keys}
    files = reference.get_fdata(dtype=np.float32).transpose(3, 0, 1, 2)  # [C, i, j, k]
    windows = fit_windows(to_card(widget).intensity, files, True).windows
    f16 = [(w.a_max - w.a_min) * 2.0**-10 for w in windows]  # float16 of [0, 1], in its units
    step = next(s for s in (1, 2, 3, 4) if s != scrubber.source.returned)
    kept = scrubber.source.history.at(step)
    scrubber.slider.value = step
    for c, key in enumerate(keys):
        expected = windows[c].inverse(kept.adversarial[c], files[c]).T
        np.testing.assert_allclose(results[key].data, expected, atol=f16[c])
        assert not np.allclose(results[key].data, returned[key]), c  # not the returned step
        np.testing.assert_allclose(
            results[key.replace("adversarial", "perturbation")].data, expected - files[c].T,
            atol=f16[c],
        )  # fmt: skip
        q_key = key.replace("adversarial", "q_table")  # each channel's own table
        np.testing.assert_array_equal(results[q_key].data, kept.q_table[c].T)
    assert f"run step {step}/4" in scrubber.info.value
    scrubber.slider.value = 0  # the clean image: the history starts from each channel's input
    for c, key in enumerate(keys):
        np.testing.assert_allclose(results[key].data, files[c].T, atol=f16[c])
    scrubber.slider.value = scrubber.source.returned
    history = scrubber.source.history.at(scrubber.source.returned)
    for c, key in enumerate(keys):  # the result layers back, and the history's channel order
        np.testing.assert_array_equal(results[key].data, returned[key])
        np.testing.assert_allclose(
            windows[c].inverse(history.adversarial[c], files[c]).T, returned[key], atol=f16[c]
        )

    # the compare view: channel 0 (the source and its adversarial), then the view back
    assert widget.compare_view.enabled
    widget.compare_view.native.click()
    assert viewer.canvas.grid.enabled
    assert [layer.name for layer in viewer.layers if layer.visible][:3] == [
        layers[0].name, "clean prediction", "adversarial T1c"
    ]  # fmt: skip
    widget.compare_view.native.click()
    assert not viewer.canvas.grid.enabled and errors == []

    # the export is one 4D file, as the input came
    written = widget.export(tmp_path / "attacked.nii.gz")
    assert [p.name for p in written] == ["attacked.nii.gz"]
    out = nib.load(written[0])
    assert out.shape == reference.shape
    np.testing.assert_array_equal(out.affine, reference.affine)
    for c, adv in enumerate(adversarial):
        np.testing.assert_allclose(out.get_fdata()[..., c], adv.data.T, atol=1e-3)

    viewer.reset_view()
    viewer.dims.set_current_step(0, layers[0].data.shape[0] // 2)
    viewer.window.resize(1500, 950)
    image = viewer.screenshot(canvas_only=False, flash=False)
    assert float(image[..., :3].std()) > 0
    import imageio.v3 as iio

    iio.imwrite(SCREENSHOT, image)


@pytest.mark.gui
def test_channels_on_different_grids_are_refused_in_one_line(
    make_napari_viewer, qtbot, tmp_path, errors
):
    entry = write_mri_case(tmp_path, "case", 3, "files")
    paths = [tmp_path / name for name in entry["image"]]
    save_nifti(paths[2], np.zeros((12, 12, 12), np.float32))  # T2 on another grid
    viewer = make_napari_viewer()
    layers = [viewer.open(str(p), plugin=PLUGIN)[0] for p in paths]
    widget = _widget_with_mri_model(viewer)
    for combo, layer in zip(widget.channel_picker.combos, layers, strict=True):
        combo.value = layer
    assert widget.run() is False
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "channel layers on different grids" in errors[0] and "case_0002" in errors[0]
    assert "(T2) has shape (12, 12, 12)" in errors[0]
    assert widget.status.value.startswith("not started: channel layers on different grids")
    assert not widget.is_running and widget.run_button.enabled and widget.channel_box.enabled
    qtbot.wait(50)  # the GUI still answers
    # the same layer twice, and the live lens: one line each
    widget.channel_picker.combos[2].value = layers[1]
    assert widget.run() is False and "same layer" in errors[-1] and "\n" not in errors[-1]
    # one 4D layer holding the channels first: the other combos hide, labels on its grid
    arrays, seg = mri_case(3)
    stacked = viewer.add_image(np.stack([a.T for a in arrays]), name="stacked",
                               scale=(1.0, 2.0, 1.5, 1.5))  # fmt: skip
    labels = viewer.add_labels(seg.T.astype(np.uint8), name="seg", scale=(2.0, 1.5, 1.5))
    widget.channel_picker.combos[0].value = stacked
    assert [shown(combo) for combo in widget.channel_picker.combos] == [True] + [False] * 3
    widget.labels_layer.value = labels
    layer, image, data, picked_labels = widget._inputs()
    assert layer is stacked and image.layout == "4d" and image.names == tuple(NAMES)
    np.testing.assert_array_equal(image.array, np.stack(arrays))
    assert image.spacing == pytest.approx((1.5, 1.5, 2.0)) and data.shape == (24, 24, 24)
    np.testing.assert_array_equal(picked_labels.array, seg)


@pytest.mark.gui
def test_the_live_lens_attacks_every_channel_and_shows_the_first(
    make_napari_viewer, qtbot, tmp_path, errors
):
    """A lens on a 4-channel model: the cube of every channel is attacked together; its layers
    are channel 0's (in channel 0's units, over channel 0's layer), and the step scrubber
    replays channel 0. Reference: the library's own window of channel 0 (CTWindow.inverse) and
    the file data as nibabel reads it."""
    entry = write_mri_case(tmp_path, "case", 5, "files")
    paths = [tmp_path / name for name in entry["image"]]
    viewer = make_napari_viewer(show=True)
    layers = [viewer.open(str(p), plugin=PLUGIN)[0] for p in paths]
    widget = _widget_with_mri_model(viewer)
    for combo, layer in zip(widget.channel_picker.combos, layers, strict=True):
        combo.value = layer
    widget.attack.value = "vafa"
    widget.steps.value = 3
    widget.block_size.value = 8
    widget.q_range.value = (5.0, 40.0)
    widget.lens_size.value = 32  # the whole 24³ case
    widget.live.value = True
    assert widget.live_lens.request(), widget.status.value
    qtbot.waitUntil(lambda: widget.live_lens.shown >= 1, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.live_lens.runner.busy, timeout=RUN_TIMEOUT_MS)
    assert errors == [], errors
    done = widget.live_lens.last
    result = done.result
    clean01, adversarial01 = result.clean01, result.adversarial01
    assert clean01.shape[0] == adversarial01.shape[0] == 4  # the model's four channels
    for c in range(4):  # each channel of the cube was attacked
        assert np.abs(adversarial01[c] - clean01[c]).max() > 1e-3, c
    region = result.region
    t1c = nib.load(paths[0]).get_fdata(dtype=np.float32)[region]  # channel 0, file units
    np.testing.assert_array_equal(done.clean_units, t1c)
    _, image, _, _ = widget._inputs()
    window = to_model_window(image, widget)
    expected = window.inverse(adversarial01[0], t1c).astype(np.float32)
    lens = widget.live_lens.layers.layers
    np.testing.assert_allclose(lens["adversarial"].data, expected.T, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(lens["perturbation"].data, (expected - t1c).T, atol=1e-4)
    assert lens["adversarial"].scale == pytest.approx(layers[0].scale)
    # the scrubber replays channel 0: step 1's frame from the history (kept in float16), in
    # T1c's units
    frames = widget.scrubber.frames(1)
    assert frames["adversarial"].shape == lens["adversarial"].data.shape
    kept = result.history.at(1)
    f16 = (window.a_max - window.a_min) * 2.0**-10  # float16 rounding of [0, 1], in T1c units
    np.testing.assert_allclose(
        frames["adversarial"], window.inverse(kept.adversarial[0], t1c).T, atol=f16
    )

    viewer.window.resize(1500, 950)
    viewer.reset_view()
    qtbot.wait(300)  # the dock's layout settles (the status line wraps to its final width)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert float(shot[..., :3].std()) > 0
    import imageio.v3 as iio

    iio.imwrite(LENS_SCREENSHOT, shot)


def to_card(widget):
    """The card of the widget's cached model."""
    return widget._cache.get(widget.model_picker.spec())[1]


def to_model_window(image, widget):
    """Channel 0's fitted window, as the library fits the card's intensity per channel."""
    return fit_windows(to_card(widget).intensity, image.array, True).windows[0]
