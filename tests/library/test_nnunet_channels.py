"""nnU-Net v2 result folders of multi-channel datasets (issue 27): a PET + CT style folder
written by nnU-Net's own trainer, with the normalisation schemes nnU-Net's planner gives those
channel names. The card carries nnU-Net's channel names and one intensity window per channel,
the first layer maps each channel back to nnU-Net's units, vafa's clean prediction of a case
given as nnU-Net's ``case_0000``/``case_0001`` files is ``nnUNetPredictor``'s, and an attack
lowers Dice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from model_folders import (
    CT_PROPERTIES,
    PET_PROPERTIES,
    assert_agrees_with_nnunet,
    make_tiny_nnunet,
    nnunet_plans,
    nnunet_predict,
    vafa_probabilities,
    write_nifti,
)

from vafa.io.channels import Channels, load_image
from vafa.io.checkpoints import load_model
from vafa.io.models import ModelCard
from vafa.io.nnunet_intensity import first_layer
from vafa.io.wrapped import NormalizedInput

CHANNELS = ("CT", "PET")
SPACING_ZYX = (2.0, 1.0, 1.0)  # the plans' spacing: neither side resamples


def planner_schemes(names) -> tuple[str, ...]:
    """The normalisation scheme nnU-Net's planner gives each channel name."""
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import (
        get_normalization_scheme,
    )

    return tuple(get_normalization_scheme(n).__name__ for n in names)


@pytest.fixture(scope="module")
def pet_ct_folder(tmp_path_factory):
    plans = nnunet_plans(scheme=planner_schemes(CHANNELS))
    return make_tiny_nnunet(tmp_path_factory.mktemp("pet_ct"), plans=plans, channel=CHANNELS,
                            seed=4)  # fmt: skip


def pet_ct_case(seed: int, shape_zyx) -> np.ndarray:
    """``[2, z, y, x]``: CT in HU (beyond the CT percentiles) and a PET channel in SUV-like
    units, every value within 5 standard deviations of its mean (vafa's z-score window)."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(20, 200, size=shape_zyx)
    pet = np.clip(rng.normal(3.0, 1.0, size=shape_zyx), 0.05, None)
    return np.stack([ct, pet]).astype(np.float32)


def write_channel_files(folder, image_zyx: np.ndarray) -> list:
    """nnU-Net's file convention: ``case_0000.nii.gz``, ``case_0001.nii.gz``, on our axes."""
    return [
        write_nifti(folder / f"case_{c:04d}.nii.gz", a.transpose(2, 1, 0), SPACING_ZYX[::-1])
        for c, a in enumerate(image_zyx)
    ]


def test_planner_gives_ct_and_zscore():
    assert planner_schemes(CHANNELS) == ("CTNormalization", "ZScoreNormalization")


def test_card_has_the_channels_and_their_normalisation(pet_ct_folder):
    model, card = load_model(pet_ct_folder, device="cpu")
    assert card.in_channels == 2 and card.channel_names == ["CT", "PET"]
    ct, pet = CT_PROPERTIES, PET_PROPERTIES
    assert card.intensity == [
        {"type": "ct_window", "a_min": ct["percentile_00_5"], "a_max": ct["percentile_99_5"]},
        {"type": "zscore", "k": 5.0, "nonzero": False},
    ]
    assert pet["std"] != 1.0  # a z-scored channel uses the image's own statistics, not these
    # CT: clip to [-150, 250], then (HU - 40) / 80: x ∈ [0, 1] → (-150 + 400 x - 40) / 80
    assert card.kwargs["input_scale"] == [5.0, 10.0]
    assert card.kwargs["input_shift"] == [-2.375, -5.0]
    assert isinstance(model, NormalizedInput) and model.scale == (5.0, 10.0)
    layer = card.provenance["input_layer"]
    assert layer.startswith("CT: ((-150 + x·400) − 40) / 80") and "PET: (2x − 1)·5" in layer
    # nnU-Net pads each channel with its own 0: CT (0 HU → 0.475), PET (z = 0 → 0.5)
    assert card.inference.cval == pytest.approx((0.475, 0.5))
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card


def test_first_layer_maps_each_channel_to_nnunets_units(pet_ct_folder):
    model, _ = load_model(pet_ct_folder, device="cpu")
    seen = []
    hook = model.network.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.rand(1, 2, 16, 16, 8)
    with torch.no_grad():
        model(x)
    hook.remove()
    hu = -150 + 400 * x[:, 0]
    expected = torch.stack([(hu - 40) / 80, (2 * x[:, 1] - 1) * 5], 1).permute(0, 1, 4, 3, 2)
    torch.testing.assert_close(seen[0], expected, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match=r"first layer maps 2 channels, the input has 1"):
        model(x[:, :1])


def test_ensemble_members_share_the_first_layer_where_the_model_is():
    """A fold ensemble's members (made per sliding-window call) use the model's own per-channel
    scale and shift buffers, moved with it, instead of fresh CPU copies."""
    from vafa.io.wrapped import NetworkEnsemble

    nets = NetworkEnsemble([torch.nn.Conv3d(2, 3, 1), torch.nn.Conv3d(2, 3, 1)])
    model = NormalizedInput(nets, (1.0, 2.0), (0.0, 1.0)).to(torch.float64)
    x = torch.rand(1, 2, 4, 4, 4, dtype=torch.float64)
    for member, net in zip(model.members(), nets.members, strict=True):
        assert member._scales is model._scales and member._shifts is model._shifts
        torch.testing.assert_close(member(x), net(x * model._scales + model._shifts))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(13, 27, 21), (6, 27, 12)], ids=["larger", "shorter"])
def test_clean_prediction_of_two_files_is_nnunet_predictors(pet_ct_folder, tmp_path, shape):
    # larger: not multiples of the patch (8, 16, 16); shorter: two axes padded, each channel
    # with its own 0
    image = pet_ct_case(0, shape)
    theirs = nnunet_predict(pet_ct_folder, image, SPACING_ZYX, use_gaussian=True,
                            use_mirroring=True)  # fmt: skip
    model, card = load_model(pet_ct_folder, device="cpu")
    paths = write_channel_files(tmp_path, image)
    ours = vafa_probabilities(model, card, paths).transpose(0, 3, 2, 1)  # → (z, y, x)
    assert_agrees_with_nnunet(ours, theirs, card)
    # the comparison can fail: the channels given in the other order are another input
    swapped = vafa_probabilities(model, card, paths[::-1]).transpose(0, 3, 2, 1)
    assert np.abs(swapped - theirs).max() > 0.05


def test_wrong_channel_count_names_nnunets_channels(pet_ct_folder, tmp_path):
    _, card = load_model(pet_ct_folder, device="cpu")
    paths = write_channel_files(tmp_path, pet_ct_case(1, (8, 16, 16)))
    with pytest.raises(
        ValueError, match=r"one 3D volume but the model takes 2 channels \(CT, PET\)"
    ):
        load_image(paths[:1], card.in_channels, card.channel_names)
    image = load_image(paths, card.in_channels, card.channel_names)
    assert isinstance(image, Channels) and image.names == ("CT", "PET")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"1": None, "2": "PET"}, r"dataset.json: 'channel_names' must be numbered 0, 1, … "),
        ({"1": " CT"}, r"dataset.json: 'channel_names' names channels 0 and 1 alike: 'CT'$"),
        ({"2": "MR"}, r"configuration normalises 2 channel\(s\) \(CTNormalization, "
                      r"ZScoreNormalization\) but dataset.json lists 3 \(CT, PET, MR\)"),
    ],
)  # fmt: skip
def test_channels_that_disagree_with_the_plans_fail_in_one_line(
    pet_ct_folder, tmp_path, change, match
):
    folder = tmp_path / pet_ct_folder.name
    shutil.copytree(pet_ct_folder, folder)
    doc = json.loads((folder / "dataset.json").read_text())
    doc["channel_names"].update(change)
    doc["channel_names"] = {k: v for k, v in doc["channel_names"].items() if v is not None}
    (folder / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=match) as err:
        load_model(folder, device="cpu")
    assert "\n" not in str(err.value)


def test_a_scheme_vafa_does_not_reproduce_is_refused_naming_the_channel(tmp_path):
    plans = nnunet_plans(scheme=("CTNormalization", "MyPETNormalization"))
    config = plans["configurations"]["3d_fullres"]
    with pytest.raises(ValueError, match=r"channel 1 \(PET\) is normalised by "
                                         r"'MyPETNormalization', which vafa does not") as err:  # fmt: skip
        first_layer(plans, config, list(CHANNELS), tmp_path / "plans.json")
    assert "\n" not in str(err.value)
    del plans["foreground_intensity_properties_per_channel"]["0"]["std"]
    with pytest.raises(ValueError, match=r"CTNormalization needs .*'std' of channel 0 \(CT\)"):
        first_layer(plans, config, list(CHANNELS), tmp_path / "plans.json")


@pytest.mark.slow
def test_an_attack_on_pet_and_ct_lowers_dice(pet_ct_folder, tmp_path):
    from vafa.run.pipeline import run_attack

    model, card = load_model(pet_ct_folder, device="cpu")
    image = load_image(
        write_channel_files(tmp_path, pet_ct_case(2, (16, 32, 32))), 2, card.channel_names
    )
    options = {"eps": 8, "steps": 3}
    outcome = run_attack(model, card, image, attack="pgd", options=options, seed=0, device="cpu")
    dice = outcome.metrics.dice_fg
    assert dice.adversarial < dice.clean
    assert isinstance(outcome.adversarial, Channels) and outcome.adversarial.names == CHANNELS
    moved = (outcome.adversarial01 - outcome.model_input.tensor).abs().amax(dim=(0, 2, 3, 4))
    assert torch.all(moved > 0) and torch.all(moved <= 8 / 255 + 1e-6)  # ε on each [0, 1] channel
    # in file units: PET (no voxel beyond its ±5 std window) moves at most ε of that window;
    # CT voxels clipped by the window that the attack moves inside it change by more HU
    change = np.abs(outcome.perturbation.array).reshape(2, -1).max(axis=1)
    assert change[1] <= 8 / 255 * 10 * image.array[1].std(dtype=np.float64) * (1 + 1e-4)
    assert change[0] > 8 / 255 * 400 * 0.5


@pytest.mark.slow
def test_cli_attacks_nnunets_channel_files(pet_ct_folder, tmp_path, capsys):
    from vafa.cli import main

    paths = write_channel_files(tmp_path, pet_ct_case(3, (16, 32, 32)))
    out = tmp_path / "adv.nii.gz"
    argv = ["attack", *map(str, paths), "--model", str(pet_ct_folder), "--out", str(out),
            "--steps", "1", "--block-size", "8", "--mirroring", "off", "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dice_fg"]["clean"] == pytest.approx(1.0)
    written = sorted(p.name for p in tmp_path.glob("adv*"))
    assert written == ["adv.json", "adv_0000.nii.gz", "adv_0001.nii.gz"]
    for c, path in enumerate(paths):  # each channel in its own units, on its input's grid
        adv, original = load_image(tmp_path / f"adv_{c:04d}.nii.gz"), load_image(path)
        np.testing.assert_allclose(adv.affine, original.affine)
        assert 0 < np.abs(adv.array - original.array).max() < np.ptp(original.array)
