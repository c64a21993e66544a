"""MONAI bundles as models: a tiny bundle made here (laid out like the Model Zoo's), loaded by
vafa, gives what the bundle's own inference config gives when ``monai.bundle`` runs it; its
card comes from the bundle's description; bad bundles fail in one line naming the file."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from factories import write_noise_ct
from model_folders import CT_WINDOW, bundle_network, make_tiny_bundle, run_bundle, write_nifti

from vafa.cli import main
from vafa.io.checkpoints import load_model, save_model
from vafa.io.handle import ModelSource
from vafa.io.model_space import to_model_space
from vafa.io.volume import load_volume
from vafa.run.tiling import sliding_window_predict

SPACING = (1.5, 1.5, 2.0)


def _bundle_ct(tmp_path, shape=(40, 36, 24), seed=0):
    """A noisy CT-like volume in HU (RAS, at the bundle's spacing: no resampling)."""
    path = tmp_path / "data" / "case.nii.gz"
    noise = {"mean": 20.0, "std": 150.0, "dtype": np.float32, "air": 4}
    return write_noise_ct(path, shape, seed, spacing=SPACING, **noise)


def _our_probabilities(folder, image, **kwargs):
    model, card = load_model(folder, device="cpu", **kwargs)
    model_input = to_model_space(load_volume(image), card)
    assert not model_input.resampled
    logits = sliding_window_predict(model, model_input.tensor, card.roi_size)
    return torch.softmax(logits, 1)[0].numpy(), card


INTENSITIES = {
    "ct window": (CT_WINDOW, {"type": "ct_window", "a_min": -175.0, "a_max": 250.0}, (1, 0)),
    "to [-1, 1]": (
        {**CT_WINDOW, "b_min": -1.0, "b_max": 1.0},
        {"type": "ct_window", "a_min": -175.0, "a_max": 250.0},
        (2, -1),
    ),
    "z-score": (
        {"_target_": "NormalizeIntensityd", "keys": "image"},
        {"type": "zscore", "k": 5.0, "nonzero": False},
        (10, -5),
    ),
    "percentiles": (
        {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": 1,
         "upper": 99, "b_min": 0.0, "b_max": 1.0, "clip": True},
        {"type": "percentile", "p_low": 1.0, "p_high": 99.0},
        (1, 0),
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INTENSITIES))
def test_bundle_gives_what_monai_bundle_run_gives(name, tmp_path):
    transform, intensity, (scale, shift) = INTENSITIES[name]
    bundle = make_tiny_bundle(tmp_path, intensity=transform)
    image = _bundle_ct(tmp_path)
    if name == "z-score":  # within ±5 standard deviations: the [0, 1] window clips nothing
        image = write_nifti(image, np.random.default_rng(1).normal(0, 1, (40, 36, 24)), SPACING)
    theirs = run_bundle(bundle, image, tmp_path / "eval")
    ours, card = _our_probabilities(bundle, image)
    assert ours.shape == theirs.shape == (3, 40, 36, 24)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert card.intensity == intensity
    assert (card.kwargs["input_scale"], card.kwargs["input_shift"]) == (scale, shift)


def test_card_comes_from_the_bundle_description(tmp_path):
    bundle = make_tiny_bundle(tmp_path, roi=(16, 16, 8))
    source = ModelSource(bundle)
    assert source.kind == "monai-bundle" and source.path == bundle
    assert source.name == "tiny_bundle"
    model, card = source.load(device="cpu")
    assert card.architecture == "monai-bundle"
    assert card.spacing == (1.5, 1.5, 2.0) and card.orientation == "RAS"
    assert card.roi_size == (16, 16, 8)
    assert card.class_names == ["background", "spleen", "liver"]
    assert card.kwargs["network"]["_target_"] == "monai.networks.nets.unet.UNet"
    assert card.provenance["bundle"] == "tiny_bundle" and card.provenance["version"] == "0.1.0"
    assert not model.training and model(torch.rand(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)
    assert source.known_card() == card  # from the configs alone, no weights read


def test_known_card_needs_no_weights(tmp_path):
    """A bundled model's card, a preset given for a weights file, and a one-line refusal when a
    weights file has none beside it; the weights themselves are never read."""
    from vafa.io.checkpoints import load_card_or_preset

    demo = ModelSource("demo")
    assert demo.known_card() == demo.load(device="cpu")[1]
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not weights: never read")
    assert ModelSource(weights, card="unetr-btcv").known_card() == load_card_or_preset("unetr-btcv")
    with pytest.raises(ValueError, match="no model card found for checkpoint"):
        ModelSource(weights).known_card()


def test_fine_tuned_weights_go_back_as_safetensors_and_card(tmp_path):
    """What VAFT writes (save_model): safetensors + a card that rebuilds the bundle's network,
    loadable without the bundle."""
    bundle = make_tiny_bundle(tmp_path)
    model, card = load_model(bundle, device="cpu")
    with torch.no_grad():
        model.network.model[0].conv.unit0.conv.weight.mul_(1.5)  # "fine-tuned"
    out = save_model(model, card, tmp_path / "tuned.safetensors")
    shutil.rmtree(bundle)
    again, again_card = load_model(out, device="cpu")
    assert again_card == card
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    doc = json.loads((tmp_path / "tuned.safetensors.json").read_text())
    assert doc["architecture"] == "monai-bundle"


def test_expressions_need_trust(tmp_path):
    network = {**bundle_network(), "channels": "$[4, 8, 16]"}
    bundle = make_tiny_bundle(tmp_path, network={**network, "channels": [4, 8, 16]})
    config = bundle / "configs" / "inference.json"
    doc = json.loads(config.read_text())
    doc["network_def"]["channels"] = "$[4, 8, 16]"
    config.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"inference.json: network_def#channels is a Python exp"):
        load_model(bundle, device="cpu")
    _, card = load_model(bundle, device="cpu", trust=True)
    assert card.kwargs["network"]["channels"] == [4, 8, 16]


def _edit(bundle, key, value):
    config = bundle / "configs" / "inference.json"
    doc = json.loads(config.read_text())
    doc[key] = value
    config.write_text(json.dumps(doc))


BAD = {
    "custom network class": (
        lambda b: _edit(b, "network_def", {"_target_": "scripts.net.MyNet"}),
        r"inference.json: network_def cannot be built: _target_ 'scripts.net.MyNet' is not a "
        r"network of monai.networks.nets",
    ),
    "network that cannot be built": (
        lambda b: _edit(b, "network_def", {**bundle_network(), "strides": "two"}),
        r"inference.json: network_def cannot be built: UNet\(.*\) failed",
    ),
    "a 2D network": (
        lambda b: _edit(b, "network_def", {**bundle_network(), "spatial_dims": 2}),
        r"inference.json: network_def is 2D; vafa attacks volumes with 3D networks",
    ),
    "weights of another network": (
        lambda b: _edit(b, "network_def", bundle_network(out_channels=2)),
        r"weights .*model.pt does not match the card's network \(monai-bundle, 2 output classes",
    ),
    "no weights": (
        lambda b: (b / "models" / "model.pt").unlink(),
        r"models/model.pt: the bundle has no weights file",
    ),
    "no intensity transform": (
        lambda b: _edit(
            b,
            "preprocessing",
            {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged", "keys": "image"}]},
        ),
        r"inference.json: no intensity transform in preprocessing",
    ),
    "broken JSON": (
        lambda b: (b / "configs" / "inference.json").write_text("{not json"),
        r"inference.json: not a readable bundle config",
    ),
    "in_channels as text": (
        lambda b: _edit(b, "network_def", {**bundle_network(), "in_channels": "1"}),
        r"inference.json: network_def's in_channels must be an integer >= 1, got '1'",
    ),
    "a dangling reference": (
        lambda b: _edit(b, "network_def", "@nowhere"),
        r"inference.json: network_def refers to @nowhere, which is not defined",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bundles_fail_in_one_line_naming_the_file(name, tmp_path):
    spoil, message = BAD[name]
    bundle = make_tiny_bundle(tmp_path)
    spoil(bundle)
    with pytest.raises(ValueError, match=message) as info:
        load_model(bundle, device="cpu")
    assert "\n" not in str(info.value)


def test_a_folder_of_neither_kind_is_one_line_and_names_model_folders_inside(tmp_path):
    make_tiny_bundle(tmp_path / "zoo")
    with pytest.raises(ValueError, match=r"neither a MONAI bundle .* inside it: tiny_bundle"):
        ModelSource(tmp_path / "zoo").path  # noqa: B018
    with pytest.raises(ValueError, match="a card does not go with the model folder"):
        ModelSource(tmp_path / "zoo" / "tiny_bundle", card="unet").path  # noqa: B018
    with pytest.raises(ValueError, match="fold and checkpoint are for nnU-Net"):
        ModelSource(tmp_path / "zoo" / "tiny_bundle", fold=0).path  # noqa: B018


@pytest.mark.slow
def test_cli_attacks_evaluates_and_describes_a_bundle(tmp_path, capsys):
    bundle = make_tiny_bundle(tmp_path)
    image = _bundle_ct(tmp_path)
    out = tmp_path / "out" / "adv.nii.gz"
    argv = ["attack", str(image), "--model", str(bundle), "--out", str(out), "--steps", "2"]
    assert main([*argv, "--block-size", "8", "--quiet"]) == 0
    assert nib.load(out).shape == (40, 36, 24)
    doc = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    assert doc["settings"]["card"] == "monai-bundle"
    code = main(["evaluate", str(image), "--model", str(bundle), "--adversarial", str(out),
                 "--format", "json"])  # fmt: skip
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dice_fg"]["clean"] == pytest.approx(1.0)
    assert main(["info", str(bundle)]) == 0
    assert '"architecture": "monai-bundle"' in capsys.readouterr().out


def test_cli_refuses_a_bad_bundle_in_one_line_and_writes_nothing(tmp_path, capsys):
    bundle = make_tiny_bundle(tmp_path)
    _edit(bundle, "network_def", {"_target_": "scripts.net.MyNet"})
    image = _bundle_ct(tmp_path)
    out = tmp_path / "out" / "adv.nii.gz"
    assert main(["attack", str(image), "--model", str(bundle), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inference.json" in err and "scripts.net.MyNet" in err
    assert not (tmp_path / "out").exists()


def test_slicer_module_takes_a_bundle_folder(tmp_path, capsys):
    from vafa.slicer.run import main as slicer

    bundle = make_tiny_bundle(tmp_path)
    image = _bundle_ct(tmp_path, shape=(32, 32, 16))
    params = tmp_path / "ret.params"
    argv = ["VAFAEvaluate", "--model", "folder", "--model_folder", str(bundle), "--device", "cpu"]
    assert slicer([*argv, "--returnparameterfile", str(params), str(image)]) == 0
    returned = dict(line.split(" = ") for line in params.read_text().splitlines())
    assert float(returned["dice_fg"]) == pytest.approx(1.0)
    assert slicer([*argv[:3], "--model_folder", str(tmp_path), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither a MONAI bundle" in err
