"""nnU-Net v2 result folders as models: a tiny result folder whose checkpoint nnU-Net's own
trainer writes, loaded by vafa, gives the probabilities of nnU-Net's own predictor (sliding
window, mirroring off); the checkpoint is read without unpickling anything foreign; bad
folders fail in one line naming the file."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from model_folders import make_tiny_nnunet, nnunet_plans, nnunet_predict, write_nifti

from vafa.cli import main
from vafa.io.checkpoints import load_model, save_model
from vafa.io.handle import ModelSource
from vafa.io.model_space import to_model_space
from vafa.io.models import build_model
from vafa.io.nnunet_checkpoint import read_nnunet_checkpoint
from vafa.io.state_dicts import load_state_strict
from vafa.io.volume import Volume, load_volume
from vafa.run.tiling import sliding_window_predict

#: nnU-Net adds its sliding-window logits up in float16 (predicted_logits is torch.half), so
#: its probabilities differ from a float32 computation by a few 1e-4 (5.5e-4 measured here).
ATOL = 2e-3


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    return make_tiny_nnunet(root, checkpoints=("checkpoint_final.pth", "checkpoint_best.pth"))


def _nifti_of_zyx(tmp_path: Path, image_zyx: np.ndarray, spacing_zyx) -> Path:
    """The NIfTI file whose SimpleITK reading is ``image_zyx`` (nibabel order is reversed)."""
    return write_nifti(tmp_path / "case.nii.gz", image_zyx.transpose(2, 1, 0), spacing_zyx[::-1])


def _ours(model, card, path: Path) -> np.ndarray:
    """Our probabilities in nnU-Net's ``[K, z, y, x]`` order."""
    model_input = to_model_space(load_volume(path), card)
    assert not model_input.resampled
    logits = sliding_window_predict(model, model_input.tensor, card.roi_size)
    return torch.softmax(logits, 1)[0].numpy().transpose(0, 3, 2, 1)


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=ATOL)
    assert (ours.argmax(0) == theirs.argmax(0)).mean() > 0.999


@pytest.mark.slow
def test_ct_model_gives_the_probabilities_of_nnunets_predictor(ct_folder, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(20, 200, size=(16, 32, 32)).astype(np.float32)  # beyond the percentiles
    spacing = (2.0, 1.0, 1.0)  # the plans' spacing: neither side resamples
    theirs = nnunet_predict(ct_folder, image, spacing)
    model, card = load_model(ct_folder, device="cpu")
    ours = _ours(model, card, _nifti_of_zyx(tmp_path, image, spacing))
    _agree(ours, theirs)
    # the comparison can fail: the same weights fed in our axis order are another model
    wrong = replace(card, kwargs={**card.kwargs, "axes": [0, 1, 2]}, roi_size=(8, 16, 16))
    unpermuted = build_model(wrong)
    load_state_strict(unpermuted, model.state_dict(), wrong, "the same weights")
    other = _ours(unpermuted.eval(), wrong, tmp_path / "case.nii.gz")
    assert np.abs(other - theirs).max() > 0.05


@pytest.mark.slow
def test_zscore_model_with_transposed_axes_gives_nnunets_probabilities(tmp_path):
    plans = nnunet_plans(scheme="ZScoreNormalization", transpose=(1, 2, 0))
    folder = make_tiny_nnunet(tmp_path / "mri", plans=plans, channel="T2", seed=1)
    # network axes are (y, x, z) of nnU-Net's (z, y, x): sizes (16, 32, 32), spacing (2, 1, 1)
    image = np.random.default_rng(2).normal(300, 50, size=(32, 16, 32)).astype(np.float32)
    spacing = (1.0, 2.0, 1.0)
    theirs = nnunet_predict(folder, image, spacing)
    model, card = load_model(folder, device="cpu")
    assert card.intensity == {"type": "zscore", "k": 5.0, "nonzero": False}
    # network axis n is nnU-Net's axis transpose[n], i.e. our axis 2 - transpose[n]
    assert card.kwargs["axes"] == [1, 0, 2]
    assert card.spacing == (1.0, 2.0, 1.0) and card.roi_size == (16, 8, 16)
    _agree(_ours(model, card, _nifti_of_zyx(tmp_path, image, spacing)), theirs)


def test_card_comes_from_plans_and_dataset(ct_folder):
    source = ModelSource(ct_folder)
    assert source.kind == "nnunet" and source.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    model, card = source.load(device="cpu")
    assert card.architecture == "nnunet" and card.class_names == ["background", "liver", "spleen"]
    assert card.spacing == (1.0, 1.0, 2.0)  # plans (z, y, x) = (2, 1, 1), ours (x, y, z)
    assert card.roi_size == (16, 16, 8) and card.orientation is None
    assert card.intensity == {"type": "ct_window", "a_min": -150.0, "a_max": 250.0}
    # clip to [-150, 250] then (HU - 40) / 80: x ∈ [0, 1] → (-150 + 400 x - 40) / 80
    assert card.kwargs["input_scale"] == 5.0 and card.kwargs["input_shift"] == -2.375
    assert card.kwargs["axes"] == [2, 1, 0]
    prov = card.provenance
    assert prov["configuration"] == "3d_fullres" and prov["trainer"] == "nnUNetTrainer"
    assert prov["checkpoint"] == "fold_0/checkpoint_final.pth"
    assert {"optimizer_state", "logging"} <= set(prov["checkpoint_unused"])
    assert any("numpy" in name for name in prov["checkpoint_refused"])
    assert model(torch.rand(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)


def test_checkpoint_is_read_without_unpickling_foreign_objects(ct_folder, tmp_path):
    path = ct_folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(path, weights_only=True)  # plain weights-only loading refuses the file
    ckpt = read_nnunet_checkpoint(path)
    assert ckpt.configuration == "3d_fullres" and ckpt.plans["plans_name"] == "nnUNetPlans"
    assert all(isinstance(v, torch.Tensor) for v in ckpt.weights.values())

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = torch.load(path, weights_only=False)
    checkpoint["logging"] = {"note": Fraction(1, 3)}  # a foreign but harmless global
    torch.save(checkpoint, tmp_path / "foreign.pth")
    ckpt = read_nnunet_checkpoint(tmp_path / "foreign.pth")
    assert ckpt.refused["fractions.Fraction"] == 1  # kept as an inert placeholder
    checkpoint["logging"] = Payload()  # code that would run on unpickling
    torch.save(checkpoint, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil.pth names posix.system, which could run code"):
        read_nnunet_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_fold_and_checkpoint_choose_the_file(ct_folder):
    _, card = load_model(ct_folder, device="cpu", fold="0", checkpoint="best")
    assert card.provenance["checkpoint"] == "fold_0/checkpoint_best.pth"
    with pytest.raises(ValueError, match=r"fold_3: no such fold \(folds here: 0\)"):
        load_model(ct_folder, fold=3)
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        load_model(ct_folder, checkpoint="latest")


def _spoiled(ct_folder, tmp_path, name):
    folder = tmp_path / ct_folder.name
    shutil.copytree(ct_folder, folder)
    if name == "plans disagree":
        plans = nnunet_plans(features=(4, 8, 32))
        (folder / "plans.json").write_text(json.dumps(plans))
    elif name == "dataset disagrees":
        doc = json.loads((folder / "dataset.json").read_text())
        doc["labels"]["kidney"] = 3
        (folder / "dataset.json").write_text(json.dumps(doc))
    elif name == "no checkpoint":
        (folder / "fold_0" / "checkpoint_final.pth").unlink()
        (folder / "fold_0" / "checkpoint_best.pth").unlink()
    elif name == "broken checkpoint":
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a zip")
    elif name == "two channels":
        doc = json.loads((folder / "dataset.json").read_text())
        doc["channel_names"] = {"0": "T1", "1": "T2"}
        (folder / "dataset.json").write_text(json.dumps(doc))
    elif name == "2d":
        plans = nnunet_plans()
        plans["configurations"]["3d_fullres"]["patch_size"] = [16, 16]
        (folder / "plans.json").write_text(json.dumps(plans))
    elif name == "broken plans":
        (folder / "plans.json").write_text("{")
    return folder


BAD = {
    "plans disagree": r"checkpoint .*checkpoint_final.pth and .*plans.json disagree on the "
    r"configuration's architecture",
    "dataset disagrees": r"plans.json/dataset.json and the checkpoint disagree: checkpoint .* does "
    r"not match the card's network \(nnunet, 4 output classes\)",
    "no checkpoint": r"fold_0/checkpoint_final.pth: no such checkpoint \(in fold_0: none\)",
    "broken checkpoint": r"checkpoint .*checkpoint_final.pth is not a readable PyTorch file",
    "two channels": r"plans.json: the configuration normalises 1 channel\(s\) \(CTNormalization\) "
    r"but dataset.json lists 2 \(T1, T2\)",
    "2d": r"plans.json: configuration '3d_fullres' is not 3D",
    "broken plans": r"nnU-Net plans .*plans.json must be valid JSON",
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_folders_fail_in_one_line_naming_the_file(name, ct_folder, tmp_path):
    folder = _spoiled(ct_folder, tmp_path, name)
    with pytest.raises(ValueError, match=BAD[name]) as info:
        load_model(folder, device="cpu")
    assert "\n" not in str(info.value)


def test_vaft_writes_back_safetensors_and_a_card_that_loads_alone(ct_folder, tmp_path):
    from vafa.training import TrainingConfig, train
    from vafa.training.data import Augmentation

    model, card = load_model(ct_folder, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(3)
    image = Volume(rng.normal(20, 200, (32, 32, 16)).astype(np.float32), np.diag([1, 1, 2, 1.0]))
    labels = image.with_array((image.array > 100).astype(np.float32))
    config = TrainingConfig(
        mode="vafa-fr", epochs=1, iterations_per_epoch=1, batch_size=1,
        attack_options={"steps": 1, "block_size": 8},
        augmentation=Augmentation(rotate_degrees=0, scale_intensity=0, shift_intensity=0),
    )  # fmt: skip
    result = train(model, card, [(image, labels)], None, out_dir=tmp_path / "run",
                   config=config, device="cpu")  # fmt: skip
    tuned, tuned_card = load_model(result.latest, device="cpu")
    assert tuned_card.architecture == "nnunet" and tuned_card.kwargs == card.kwargs
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    again = save_model(tuned, tuned_card, tmp_path / "tuned.safetensors")
    assert load_model(again, device="cpu")[1] == tuned_card


@pytest.mark.slow
def test_cli_attacks_and_evaluates_one_fold(ct_folder, tmp_path, capsys):
    image = write_nifti(
        tmp_path / "ct.nii.gz",
        np.random.default_rng(4).normal(20, 200, (32, 32, 16)),
        (1.0, 1.0, 2.0),
    )
    out = tmp_path / "adv.nii.gz"
    argv = ["attack", str(image), "--model", str(ct_folder), "--fold", "0", "--checkpoint", "best"]
    assert main([*argv, "--out", str(out), "--steps", "1", "--block-size", "8", "-q"]) == 0
    assert nib.load(out).shape == (32, 32, 16)
    doc = json.loads((tmp_path / "adv.json").read_text())
    assert doc["settings"]["card"] == "nnunet"
    argv = ["evaluate", str(image), "--model", str(ct_folder), "--adversarial", str(out)]
    assert main([*argv, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["dice_fg"]["clean"] == pytest.approx(1.0)
    assert main(["info", str(ct_folder), "--fold", "0"]) == 0
    assert '"architecture": "nnunet"' in capsys.readouterr().out


def test_cli_missing_fold_is_one_line_and_writes_nothing(ct_folder, tmp_path, capsys):
    image = write_nifti(tmp_path / "ct.nii.gz", np.zeros((32, 32, 16)), (1.0, 1.0, 2.0))
    out = tmp_path / "out" / "adv.nii.gz"
    argv = ["attack", str(image), "--model", str(ct_folder), "--fold", "3", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold_3: no such fold" in err
    assert not out.parent.exists()
    assert main(["info", str(image.parent / "ct.nii.gz"), "--fold", "0"]) == 2
    assert "fold and checkpoint are for nnU-Net result folders" in capsys.readouterr().err


def test_slicer_module_takes_a_fold_and_checkpoint(ct_folder, tmp_path, capsys):
    from vafa.slicer.run import main as slicer

    image = write_nifti(
        tmp_path / "ct.nii.gz", np.random.default_rng(5).normal(20, 200, (32, 32, 16)), (1, 1, 2)
    )
    params = tmp_path / "ret.params"
    argv = ["VAFAEvaluate", "--model", "folder", "--model_folder", str(ct_folder)]
    argv += ["--fold", "0", "--checkpoint", "best", "--device", "cpu"]
    assert slicer([*argv, "--returnparameterfile", str(params), str(image)]) == 0
    assert "dice_fg = 1" in params.read_text()
    assert slicer([*argv[:5], "--fold", "3", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold_3: no such fold" in err
