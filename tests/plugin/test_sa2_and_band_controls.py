"""SA² and band-limited VAFA in napari: the controls generated from their schemas (attack and
training widgets), the q table of a band-limited run (0 outside the band, drawn grey), and a
real run of both in the attack widget."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from factories import demo_cache, drain, grid_affine, noise_ct, tiny_card

from napari_vafa._worker import AttackJob, JobDone, ModelCache, run_job
from vafa.io.volume import Volume
from vafa.ops.bands import BANDS, band_mask

PLUGIN, WIDGET = "napari-vafa", "VAFA attack"


def test_attack_controls_offer_sa2_and_the_band(qtbot):
    from napari_vafa._attack_controls import AttackControls
    from napari_vafa._attack_widget import attack_choices
    from vafa.attacks import build_attack

    names = [name for _, name in attack_choices()]
    assert "sa2" in names
    controls = AttackControls(names)
    c = controls.controls
    assert controls.shown("sa2") == {"steps", "rho", "factor_step", "block_size", "bands"}
    assert "bands" in controls.shown("vafa") and "bands" in controls.shown("vafa2d")
    assert "bands" not in controls.shown("pgd")
    assert list(c["bands"].choices) == list(BANDS) and c["bands"].value == "all"
    assert c["rho"].label == "ρ (factor bound)" and "(0, 1)" in c["rho"].tooltip
    controls.switch("vafa")
    controls.switch("sa2")  # SA²'s own defaults for the shared controls: 10 steps, 8³ blocks
    assert controls.options("sa2") == {
        "steps": 10, "rho": 0.2, "factor_step": 0.1, "block_size": 8, "bands": "all",
    }  # fmt: skip
    c["rho"].value = 0.3
    c["bands"].value = "high"
    options = controls.options("sa2")
    assert (options["rho"], options["bands"]) == (0.3, "high")
    attack = build_attack("sa2", torch.nn.Conv3d(1, 2, 1), **options)
    assert (attack.rho, attack.bands, attack.block_size) == (0.3, "high", (8, 8, 8))
    controls.switch("vafa")  # back to VAFA: 32³ blocks and 20 steps again, the band kept
    vafa = controls.options("vafa")
    assert (vafa["block_size"], vafa["steps"], vafa["bands"]) == (32, 20, "high")

    training = AttackControls(["vafa", "sa2"], training=True)
    assert set(training.shown("sa2")) == {"steps", "rho", "block_size"}
    training.switch("sa2")
    assert training.options("sa2") == {"steps": 10, "rho": 0.2, "block_size": 8}


def test_training_widget_offers_the_sa2_mode(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "VAFT fine-tuning")
    assert "sa2" in widget.mode.choices
    widget.mode.value = "vafa"
    assert widget.block_size.value == 32
    widget.mode.value = "sa2"
    assert not widget.rho.native.isHidden() and widget.q_range.native.isHidden()
    assert widget._attack_options() == {"steps": 5, "rho": 0.2, "block_size": 8}
    widget.mode.value = "vafa-fr"  # VAFA's own block again
    assert widget._attack_options()["block_size"] == 32


def _tiny_job(attack: str, **options) -> tuple[AttackJob, ModelCache]:
    """A 16³ noise CT (3 mm) and the tiny model (16³ tiles, 3 mm, RAS) in the cache."""
    spec, cache = demo_cache(tiny_card(roi=16, spacing=(3.0, 3.0, 3.0), orientation="RAS"))
    image = Volume(noise_ct((16, 16, 16)), grid_affine((3.0, 3.0, 3.0)))
    return AttackJob(image, None, spec, attack, options, seed=0, preview_interval=0.0), cache


def test_band_limited_q_table_is_zero_outside_the_band_and_drawn_grey(qtbot):
    from napari_vafa._result_layers import UNQUANTIZED_GREY, q_table_colormap

    job, cache = _tiny_job("vafa", steps=1, block_size=8, bands="middle")
    _, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    q = done.layers["q_table"]  # (k, j, i): the 8³ band pattern repeats in every block
    inside = band_mask((8, 8, 8), "middle").numpy().transpose(2, 1, 0)
    tiled = np.tile(inside, (2, 2, 2))
    assert (q[~tiled] == 0).all() and (q[tiled] >= 5).all()
    assert any("middle" in note for note in done.notes)
    assert done.limits["q_table"][0] == 0
    colormap = q_table_colormap(done.limits["q_table"][0])
    np.testing.assert_allclose(np.asarray(colormap.low_color), UNQUANTIZED_GREY)
    assert q_table_colormap(5.0) == "viridis"  # every coefficient quantized: plain viridis
    assert done.layers["zeroed"][~tiled].max() == 0  # unquantized coefficients are not "zeroed"

    job, cache = _tiny_job("sa2", steps=2, bands="low")
    _, done = drain(run_job(job, threading.Event(), cache))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    assert "q_table" not in done.layers and done.block_size == (8, 8, 8)
    assert done.outcome.settings["attack"]["attack"] == "SA2"


@pytest.mark.gui
def test_attack_widget_offers_sa2_and_shows_the_band_of_a_band_limited_vafa(
    make_napari_viewer, qtbot, errors
):
    """SA²'s controls in the real widget, then one run of a band-limited VAFA: the q-table
    layer holds 0 outside the band and draws it grey. (SA² runs through the same worker:
    test_band_limited_q_table_is_zero_outside_the_band_and_drawn_grey.)"""
    from napari_vafa._attack_widget import USE_PREDICTION
    from napari_vafa._result_layers import UNQUANTIZED_GREY

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "abdominal_ct")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = getattr(widget, "bands_panel", None)  # the band analysis: four more predictions
    if panel is not None:
        panel.enabled.setChecked(False)
    widget.labels_layer.value = USE_PREDICTION
    widget.attack.value = "sa2"
    hidden = {
        name: getattr(widget, name).native.isHidden() for name in widget.attack_controls.names
    }
    assert not hidden["rho"] and not hidden["bands"] and not hidden["factor_step"]
    assert hidden["q_range"] and hidden["eps"] and not widget.export_q_table.enabled
    assert (widget.steps.value, widget.block_size.value) == (10, 8)
    widget.bands.value = "middle"
    widget.attack.value = "vafa"
    assert (widget.steps.value, widget.block_size.value) == (20, 32)  # VAFA's own again
    assert widget.bands.value == "middle" and widget.export_q_table.enabled  # the band is shared
    widget.steps.value = 1
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=600_000)
    assert errors == []
    assert widget.last_outcome.settings["attack"]["bands"] == "middle"
    layer = widget.result_layers["q_table"]
    assert layer.contrast_limits[0] == 0 and float(layer.data.min()) == 0
    assert float(layer.data.max()) == 20  # one step evaluated: the table still at q_max
    np.testing.assert_allclose(np.asarray(layer.colormap.low_color), UNQUANTIZED_GREY)
