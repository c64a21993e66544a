"""The plugin's model picker takes a model folder (a MONAI bundle, an nnU-Net result folder with
its fold and checkpoint controls), and the attack worker runs the model it describes."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import torch
from factories import drain, noise_volume, save_tiny_model, shown
from model_folders import make_tiny_bundle, make_tiny_nnunet

from napari_vafa._worker import AttackJob, JobDone, ModelCache, ModelSpec, run_job


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


# ----------------------------------------------------------------------------- nnU-Net folds
@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """An nnU-Net result folder: fold 0 with both checkpoints, fold 1 (other weights) with
    checkpoint_final.pth only."""
    root = tmp_path_factory.mktemp("nnunet")
    make_tiny_nnunet(root, checkpoints=("checkpoint_final.pth", "checkpoint_best.pth"))
    return make_tiny_nnunet(root, seed=1, fold=1)


def _choices(combo) -> list[tuple[str, str]]:
    return [(combo.native.itemText(i), combo.choices[i]) for i in range(len(combo.choices))]


def test_picker_offers_the_folds_and_checkpoints_an_nnunet_folder_has(qtbot, tmp_path, two_folds):
    from napari_vafa._model_picker import ModelPicker
    from vafa.io.handle import SOURCE_HELP

    picker = ModelPicker(["cpu"])
    assert picker.fold.tooltip == SOURCE_HELP["fold"]
    assert picker.checkpoint.tooltip == SOURCE_HELP["checkpoint"]
    picker.model_source.value = "folder"
    assert not shown(picker.fold) and not shown(picker.checkpoint)  # no folder yet
    picker.weights.value = two_folds
    assert shown(picker.fold) and shown(picker.checkpoint)
    assert _choices(picker.fold) == [
        ("fold_0", "0"), ("fold_1", "1"), ("ensemble of all folds (0, 1)", "0,1"),
    ]  # fmt: skip
    assert picker.fold.value == "0"  # the CLI's default
    assert _choices(picker.checkpoint) == [
        ("checkpoint_final.pth", "final"), ("checkpoint_best.pth", "best"),
    ]  # fmt: skip
    assert picker.checkpoint.value == "final"
    picker.checkpoint.value = "best"
    assert picker.spec() == ModelSpec(
        "file", weights=two_folds, device="cpu", fold="0", checkpoint="best"
    )
    picker.fold.value = "1"  # only a final checkpoint there
    assert _choices(picker.checkpoint) == [("checkpoint_final.pth", "final")]
    assert picker.spec() == ModelSpec(
        "file", weights=two_folds, device="cpu", fold="1", checkpoint="final"
    )
    picker.fold.value = "0,1"
    assert _choices(picker.checkpoint) == [("checkpoint_final.pth", "final")]
    picker.weights.value = make_tiny_bundle(tmp_path)  # a bundle: no folds
    assert not shown(picker.fold) and not shown(picker.checkpoint)
    assert picker.spec().fold is None and picker.spec().checkpoint is None
    picker.use_weights(save_tiny_model(tmp_path / "tiny.safetensors"))  # a weights file
    assert not shown(picker.fold) and not shown(picker.checkpoint)
    picker.weights.value = two_folds  # a folder typed as the weights counts as a folder
    assert shown(picker.fold) and picker.fold.value == "0"
    picker.model_source.value = "demo"
    assert not shown(picker.fold) and picker.spec() == ModelSpec("demo", device="cpu")


def test_the_chosen_fold_is_the_model_the_library_loads(qtbot, two_folds):
    from napari_vafa._model_picker import ModelPicker
    from vafa.io.checkpoints import load_model

    picker = ModelPicker(["cpu"])
    picker.model_source.value = "folder"
    picker.weights.value = two_folds
    picker.fold.value = "1"
    model, card = ModelCache().get(picker.spec())  # how the workers load it
    expected, _ = load_model(two_folds, device="cpu", fold=1)
    fold0, _ = load_model(two_folds, device="cpu")
    assert card.provenance["checkpoint"] == "fold_1/checkpoint_final.pth"
    for name, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert any(not torch.equal(v, fold0.state_dict()[k]) for k, v in expected.state_dict().items())
    picker.fold.value = "0,1"
    _, card = picker.spec().handle().load(device="cpu")
    assert card.kwargs["folds"] == 2 and card.provenance["folds"] == ["0", "1"]


@pytest.mark.gui
def test_widgets_place_the_fold_controls_and_report_a_missing_checkpoint(
    make_napari_viewer, qtbot, tmp_path, two_folds, errors
):
    folder = tmp_path / two_folds.name
    shutil.copytree(two_folds, folder)
    viewer = make_napari_viewer(show=bool(os.environ.get("NAPARI_VAFA_FOLD_SCREENSHOT")))
    viewer.add_image(noise_volume((32, 32, 16)).array.transpose(2, 1, 0), name="ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-vafa", "VAFA attack")
    widget.live.value = False
    _, train = viewer.window.add_plugin_dock_widget("napari-vafa", "VAFT fine-tuning")
    for host in (widget, train):  # both forms list the picker's other controls by name
        at = next(i for i, w in enumerate(host) if w is host.weights)
        assert (host[at + 1], host[at + 2]) == (host.fold, host.checkpoint)  # beside it
        assert not shown(host.fold)
    widget.model_source.value = "folder"
    widget.weights.value = folder
    assert shown(widget.fold) and shown(widget.checkpoint)
    widget.checkpoint.value = "best"
    if os.environ.get("NAPARI_VAFA_FOLD_SCREENSHOT"):
        widget.native.grab().save(os.environ["NAPARI_VAFA_FOLD_SCREENSHOT"])
    (folder / "fold_0" / "checkpoint_best.pth").unlink()  # gone since it was chosen
    assert widget.run() is False  # refused at once, nothing started
    message = f"{folder}/fold_0/checkpoint_best.pth: no such checkpoint (in fold_0: "
    assert widget.status.value == f"not started: {message}checkpoint_final.pth)"
    assert errors == [f"VAFA attack: {message}checkpoint_final.pth)"]
    assert _choices(widget.checkpoint) == [("checkpoint_final.pth", "final")]  # what is there
