"""The plugin's model picker takes a model folder (a MONAI bundle here), and the attack worker
runs the model it describes."""

from __future__ import annotations

import threading

import pytest
from factories import drain, noise_volume, shown
from model_folders import make_tiny_bundle

from napari_vafa._worker import AttackJob, JobDone, ModelSpec, run_job


def test_picker_takes_a_bundle_folder(qtbot, tmp_path):
    from napari_vafa._model_picker import MODEL_FOLDER, ModelPicker

    bundle = make_tiny_bundle(tmp_path)
    picker = ModelPicker(["cpu"])
    picker.model_source.value = "folder"
    assert picker.model_source.current_choice == MODEL_FOLDER
    assert shown(picker.weights) and str(picker.weights.mode.value) == "d"
    assert not shown(picker.card_preset) and not shown(picker.card_file)
    picker.weights.value = bundle
    spec = picker.spec()
    assert spec == ModelSpec("file", weights=bundle, device="cpu")
    assert spec.handle().kind == "monai-bundle"
    picker.weights.value = tmp_path  # holds a bundle but is none itself
    with pytest.raises(ValueError, match=r"neither a MONAI bundle .* inside it: tiny_bundle"):
        picker.spec()
    picker.model_source.value = "file"  # a folder typed as the weights counts as a folder too
    picker.weights.value = bundle
    assert picker.spec().weights == bundle and str(picker.weights.mode.value) == "r"


def test_attack_worker_runs_a_bundle(tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    image = noise_volume((32, 32, 16), mean=20.0, std=150.0)
    spec = ModelSpec("file", weights=bundle, device="cpu")
    job = AttackJob(image, None, spec, "vafa", {"steps": 1, "block_size": (8, 8, 8)}, seed=0)
    _, done = drain(run_job(job, threading.Event()))
    assert isinstance(done, JobDone), getattr(done, "traceback", done)
    assert done.outcome.adversarial.shape == (32, 32, 16)
    assert done.outcome.settings["card"] == "monai-bundle"
