"""The activity-dock progress bar: forced on/off by the environment, automatic otherwise."""

import pytest

import napari_vafa._progress as progress_module


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("on", True), ("0", False), ("off", False), ("auto", None), (None, None)],
)
def test_setting_parses_the_environment_value(text, expected):
    assert progress_module._setting(text) is expected


@pytest.mark.gui
@pytest.mark.parametrize(("forced", "software", "shown"), [
    (True, True, True), (False, False, False), (None, True, False), (None, False, True),
])  # fmt: skip
def test_open_activity_progress_follows_setting_and_renderer(
    make_napari_viewer, monkeypatch, forced, software, shown
):
    make_napari_viewer()
    monkeypatch.setattr(progress_module, "ACTIVITY_PROGRESS", forced)
    monkeypatch.setattr(progress_module, "software_opengl", lambda: software)
    bar = progress_module.open_activity_progress("test")
    assert (bar is not None) is shown
    if bar is not None:
        assert bar.desc == "test"
        bar.close()


@pytest.mark.gui
def test_software_opengl_reads_the_renderer(make_napari_viewer):
    from napari._vispy.utils.gl import _opengl_context
    from vispy.gloo import gl

    make_napari_viewer()
    progress_module.software_opengl.cache_clear()
    with _opengl_context():
        renderer = str(gl.glGetParameter(gl.GL_RENDERER)).lower()
    expected = any(name in renderer for name in progress_module.SOFTWARE_RENDERERS)
    assert progress_module.software_opengl() is expected
