"""The napari model picker offers what the library declares: the bundled models installed and
the checkpoint suffixes it reads (vafa.io.data, vafa.io.state_dicts)."""

from __future__ import annotations


def test_picker_offers_the_librarys_bundled_models_and_suffixes(qtbot):
    from napari_vafa._model_picker import ModelPicker
    from vafa.io.data import bundled_models
    from vafa.io.state_dicts import CHECKPOINT_SUFFIXES

    picker = ModelPicker(["cpu"])
    values = [picker.model_source.choices[i] for i in range(len(picker.model_source.choices))]
    assert values == [*bundled_models(), "file", "folder"]
    assert picker.weights.filter.split() == [f"*{s}" for s in CHECKPOINT_SUFFIXES]
