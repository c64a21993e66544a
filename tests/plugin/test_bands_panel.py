"""The band-analysis panel of the metrics dock: driven through the attack widget like a user
(an image layer, a weights file, Run), its four bars checked against the library's analysis.

Set ``NAPARI_VAFA_BANDS_SCREENSHOT=path.png`` to keep the panel's picture.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from factories import ct_phantom, save_tiny_model, tiny_card

PLUGIN, WIDGET = "napari-vafa", "VAFA attack"


@pytest.mark.gui
def test_attack_widget_shows_the_band_analysis_of_its_run(
    make_napari_viewer, qtbot, tmp_path, errors
):
    from vafa.io.checkpoints import load_model
    from vafa.run.band_analysis import ANALYSIS_BANDS, analyse_outcome

    torch.manual_seed(0)
    weights = save_tiny_model(tmp_path / "tiny.safetensors", 0, card=tiny_card(roi=32))
    viewer = make_napari_viewer(show=True)
    hu, _ = ct_phantom(bone_hu=300.0)  # a bright core
    viewer.add_image(np.ascontiguousarray(hu.transpose(2, 1, 0)), name="ct", scale=(3, 3, 3))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = widget.bands_panel
    assert panel.isVisibleTo(widget.plots) and panel.block_size() is None  # opt-in
    assert panel.bars == {} and "band analysis follows" in panel.message
    assert not panel.block.isEnabled()
    panel.enabled.setChecked(True)  # the user ticks the box
    assert panel.block.isEnabled() and panel.block_size() == 32

    # the user picks the weights file, PGD ε 16 with 2 steps, 8³ analysis blocks, Run
    widget.model_source.value = "file"
    widget.weights.value = weights
    widget.attack.value = "pgd"
    widget.eps.value = 16
    widget.steps.value = 2
    panel.block.setCurrentIndex(panel.block.findData(8))
    widget.run_button.native.click()
    assert "runs after the attack" in panel.message
    qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)
    assert errors == []

    analysis = panel.analysis
    assert analysis is not None and analysis.block_size == (8, 8, 8)
    assert list(panel.bars) == list(ANALYSIS_BANDS) and len(panel.ax.patches) == 4
    # the same analysis, made again by the library from the widget's outcome
    model, _ = load_model(weights, device="cpu")
    expected = analyse_outcome(model, widget.last_outcome, block_size=8)
    for band in ANALYSIS_BANDS:  # bar = fg Dice lost with that band alone
        assert panel.bars[band].get_height() == pytest.approx(expected.row(band).dice_fg_drop)
    metrics = widget.last_outcome.metrics
    assert panel.bars["all"].get_height() == pytest.approx(
        metrics.dice_fg.clean - metrics.dice_fg.adversarial
    )
    texts = [t.get_text() for t in panel.ax.texts]
    for band in ANALYSIS_BANDS:
        row = expected.row(band)
        assert f"Dice {row.dice_fg:.3f}\n{100 * row.energy_fraction:.0f} % energy" in texts
    assert "clean Dice 1.000" in panel.ax.get_title() and panel.message.startswith("alone, the ")

    # switched off: the next run shows no bars and runs no analysis
    panel.enabled.setChecked(False)
    assert panel.block_size() is None and not panel.block.isEnabled()
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)
    assert panel.analysis is None and panel.bars == {} and panel.message == "band analysis off"
    assert errors == []

    panel.enabled.setChecked(True)
    panel.show_analysis(expected)
    target = os.environ.get("NAPARI_VAFA_BANDS_SCREENSHOT") or tmp_path / "bands_panel.png"
    panel.canvas.draw()
    assert panel.grab().save(str(target))
