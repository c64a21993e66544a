"""The "VAFT fine-tuning" widget's training settings come from the training schema
(vafa.training.settings): one control per GUI setting, starting at the quick demo profile shown
in a *profile* combo, tooltips from the schema; "defaults" gives the library's values."""

from __future__ import annotations

import pytest

from vafa.attacks.options import STEPS
from vafa.training.settings import DEFAULTS, QUICK_DEMO, SETTINGS

PLUGIN, WIDGET = "napari-vafa", "VAFT fine-tuning"
GUI = [s for s in SETTINGS if s.widget]


@pytest.fixture
def widget(make_napari_viewer):
    _, widget = make_napari_viewer().window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def _values(widget) -> dict:
    return {s.name: getattr(widget, s.name).value for s in GUI}


@pytest.mark.gui
def test_every_gui_setting_is_a_control_starting_at_the_quick_demo_profile(widget):
    assert widget.profile.value == QUICK_DEMO.name
    assert widget.profile.native.currentText() == QUICK_DEMO.title  # what the user sees
    assert set(widget.setting_controls.names) == {s.name for s in GUI}  # none missing or added
    expected = {s.name: s.to_face(QUICK_DEMO.value(s.name)) for s in GUI}
    assert _values(widget) == pytest.approx(expected)
    assert widget.steps.value == QUICK_DEMO.attack["steps"]
    for s in GUI:
        assert s.help[1:40] in getattr(widget, s.name).tooltip, s.name
    assert QUICK_DEMO.reason in widget.profile.tooltip


@pytest.mark.gui
def test_the_defaults_profile_gives_the_librarys_values_and_back(widget):
    from vafa.training import TrainingConfig

    widget.profile.value = DEFAULTS.name
    assert _values(widget) == {s.name: s.to_face(s.default) for s in GUI}
    assert widget.steps.value == STEPS.default
    config = TrainingConfig.from_settings(widget.setting_controls.values())
    library = TrainingConfig()
    for s in GUI:
        if s.home == "config":
            assert getattr(config, s.name) == getattr(library, s.name), s.name
    widget.profile.value = QUICK_DEMO.name
    assert widget.lr.value == pytest.approx(QUICK_DEMO.settings["lr"])
    assert widget.steps.value == QUICK_DEMO.attack["steps"]


@pytest.mark.gui
def test_the_job_carries_the_settings(widget, tmp_path):
    widget.model_source.value = "demo"
    widget.data_source.value = "datalist"
    datalist = tmp_path / "data.json"
    datalist.write_text('{"training": []}')
    widget.datalist.value = datalist
    widget.out_dir.value = tmp_path / "run"
    widget.seed.value, widget.validation_steps.value, widget.patch.value = 7, 0, 0
    job = widget._make_job()
    assert job.config.seed == 7 and job.config.validation_steps is None and job.roi is None
    assert job.config.lr == pytest.approx(QUICK_DEMO.settings["lr"])
    assert job.config.validation[1]["steps"] == QUICK_DEMO.attack["steps"]  # the training's
