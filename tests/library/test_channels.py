"""Multi-channel images (issue 27): loading a 4D file or one file per channel, checking them
against the model, per-channel normalisation, the round trip back to each channel's units, and
results written the way the input came. References: nibabel's own reading of the files, numpy
re-derivations of the windows, MONAI's resampling of each channel on its own."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.factories import (
    MRI_UNITS,
    grid_affine,
    mri_case,
    save_nifti,
    tiny_card,
    tiny_model,
    write_mri_case,
)
from vafa.io.channels import Channels, channel_paths, load_image, save_image
from vafa.io.model_space import from_model_space, labels_to_model_space, to_model_space
from vafa.io.models import ModelCard
from vafa.io.volume import Volume, load_volume, resample_to

NAMES = ["T1c", "T1", "T2", "FLAIR"]
PERCENTILE = {"type": "percentile", "p_low": 1.0, "p_high": 99.0}


def mri_card(channels: int = 4, **overrides) -> ModelCard:
    names = NAMES[:channels]
    fields = {"in_channels": channels, "channel_names": names, "intensity": PERCENTILE}
    return tiny_card(**{**fields, **overrides})


def test_a_4d_file_is_read_as_channels_on_its_last_axis(tmp_path):
    entry = write_mri_case(tmp_path, "case", 0, "4d")
    path = tmp_path / entry["image"]
    image = load_image(path, 4, NAMES)
    reference = nib.load(path).get_fdata(dtype=np.float32)
    assert isinstance(image, Channels) and image.layout == "4d" and image.names == tuple(NAMES)
    assert image.array.shape == (4, *reference.shape[:3])
    for c in range(4):
        np.testing.assert_array_equal(image.array[c], reference[..., c])
    np.testing.assert_allclose(image.affine, nib.load(path).affine)


def test_one_file_per_channel_keeps_the_given_order(tmp_path):
    entry = write_mri_case(tmp_path, "case", 1, "files")
    paths = [tmp_path / f for f in entry["image"]]
    image = load_image(paths[::-1], 4, NAMES)
    assert image.layout == "files" and image.sources == tuple(paths[::-1])
    for c, path in enumerate(paths[::-1]):
        np.testing.assert_array_equal(image.array[c], nib.load(path).get_fdata(dtype=np.float32))


def test_channels_off_the_grid_are_named_by_file_name_or_number():
    """In memory (no file): by the channel's name, else its number; the same shape and
    spacing elsewhere is "another position or orientation"."""
    arrays = [np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), np.float32)]
    moved = grid_affine(origin=(0.0, 0.0, 5.0))
    with pytest.raises(
        ValueError, match=r"T1 has the shape and spacing of T1c but another position or orientation"
    ):
        Channels((Volume(arrays[0], grid_affine()), Volume(arrays[1], moved)), ("T1c", "T1"))
    small = Volume(np.zeros((4, 4, 4), np.float32), grid_affine())
    with pytest.raises(
        ValueError, match=r"channel 1 has shape \(8, 8, 8\).*channel 2 has shape \(4, 4, 4\)"
    ):
        Channels((Volume(arrays[0], grid_affine()), small))


def test_a_one_channel_model_still_gets_a_volume(tmp_path):
    path = save_nifti(tmp_path / "ct.nii.gz", np.zeros((8, 8, 8), np.float32))
    assert isinstance(load_image(path), Volume)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        ("3d_for_4", r"one 3D volume but the model takes 4 channels \(T1c, T1, T2, FLAIR\)"),
        (
            "4d_with_3",
            r"read 3 channels on its last axis \(axis 4, shape .*\) but the model takes 4",
        ),
        ("two_files", r"got 2 channel files but the model takes 4 channels"),
        ("other_grid", r"channels on different grids: .*_0001.nii.gz has shape \(12, 12, 12\)"),
        ("time", r"header marks axis 4 \(4 volumes\) as time \(step 2.5 sec\), not channels"),
        ("time_no_unit", r"header marks axis 4 \(4 volumes\) as time \(step 2.5\), not channels"),
        ("4d_in_files", r"with one file per channel each must be 3D"),
    ],
)
def test_bad_channel_input_gets_one_line(tmp_path, make, pattern):
    arrays, _ = mri_case(0)
    if make == "3d_for_4":
        given = save_nifti(tmp_path / "t1.nii.gz", arrays[0])
    elif make == "4d_with_3":
        given = save_nifti(tmp_path / "x.nii.gz", np.stack(arrays[:3], -1))
    elif make.startswith("time"):  # a repetition time, with its unit or without
        img = nib.Nifti1Image(np.stack(arrays, -1), grid_affine())
        img.header.set_xyzt_units("mm", "sec" if make == "time" else "unknown")
        img.header["pixdim"][4] = 2.5
        given = tmp_path / "bold.nii.gz"
        nib.save(img, given)
    else:
        given = [save_nifti(tmp_path / f"c_{i:04d}.nii.gz", a) for i, a in enumerate(arrays)]
        if make == "two_files":
            given = given[:2]
        elif make == "other_grid":
            save_nifti(given[1], np.zeros((12, 12, 12), np.float32))
        elif make == "4d_in_files":
            save_nifti(given[2], np.stack(arrays[:2], -1))
    with pytest.raises(ValueError, match=pattern) as err:
        load_image(given, 4, NAMES)
    assert "\n" not in str(err.value)


def test_each_channel_is_normalised_on_its_own(tmp_path):
    arrays, _ = mri_case(2)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays), tuple(NAMES))
    model_input = to_model_space(image, mri_card())
    assert model_input.tensor.shape == (1, 4, *arrays[0].shape)
    for c, a in enumerate(arrays):  # numpy re-derivation of a percentile window per channel
        low, high = np.percentile(a, [1.0, 99.0])
        expected = np.clip((a - low) / (high - low), 0, 1)
        np.testing.assert_allclose(model_input.tensor[0, c].numpy(), expected, atol=1e-5)


def test_one_mapping_per_channel_from_the_card(tmp_path):
    arrays, _ = mri_case(3, channels=2)
    windows = [{"type": "ct_window", "a_min": 0.0, "a_max": 1000.0}, PERCENTILE]
    card = mri_card(2, intensity=windows)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays))
    tensor = to_model_space(image, card).tensor
    np.testing.assert_allclose(tensor[0, 0].numpy(), np.clip(arrays[0] / 1000.0, 0, 1), atol=1e-6)
    low, high = np.percentile(arrays[1], [1.0, 99.0])
    expected = np.clip((arrays[1] - low) / (high - low), 0, 1)
    np.testing.assert_allclose(tensor[0, 1].numpy(), expected, atol=1e-5)


def test_the_channel_count_must_match_the_card():
    arrays, _ = mri_case(0, channels=2)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays))
    with pytest.raises(
        ValueError, match=r"takes 4 channels \(T1c, T1, T2, FLAIR\), the image has 2"
    ):
        to_model_space(image, mri_card())
    with pytest.raises(ValueError, match=r"takes 1 channel \(image\), the image has 2"):
        to_model_space(image, tiny_card())


def test_the_round_trip_gives_each_channel_its_own_units_bit_for_bit():
    arrays, _ = mri_case(4)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays), layout="4d")
    model_input = to_model_space(image, mri_card())
    back = from_model_space(model_input.tensor, model_input)
    assert isinstance(back, Channels) and back.layout == "4d"
    np.testing.assert_array_equal(back.array, image.array)
    moved = model_input.tensor.clone()
    moved[0, 2, 3, 3, 3] = 0.5
    changed = from_model_space(moved, model_input).array
    low, high = np.percentile(arrays[2], [1.0, 99.0])
    assert changed[2, 3, 3, 3] == pytest.approx(low + 0.5 * (high - low), rel=1e-5)
    assert int(np.count_nonzero(changed != image.array)) == 1


def test_resampling_treats_every_channel_like_a_volume_of_its_own():
    arrays, seg = mri_case(5, channels=2)
    image = Channels(tuple(Volume(a, grid_affine((1.0, 1.0, 1.0))) for a in arrays))
    card = mri_card(2, spacing=(2.0, 2.0, 2.0), orientation="LPS")
    model_input = to_model_space(image, card)
    for c, a in enumerate(arrays):
        reference = resample_to(Volume(a, image.affine), (2.0, 2.0, 2.0), "LPS")
        np.testing.assert_array_equal(model_input.grid.array[c], reference.array)
    labels = labels_to_model_space(Volume(seg.astype(np.float32), image.affine), model_input)
    assert tuple(labels.shape[2:]) == model_input.grid.shape
    back = from_model_space(model_input.tensor, model_input, resample_back=True)
    np.testing.assert_allclose(back.array, image.array, atol=1e-3)


@pytest.mark.parametrize("layout", ["4d", "files"])
def test_results_are_written_the_way_the_input_came(tmp_path, layout):
    entry = write_mri_case(tmp_path, "in", 6, layout)
    if layout == "4d":
        (tmp_path / entry["image"]).rename(tmp_path / "in.nii.gz")
        entry["image"] = "in.nii.gz"
    given = entry["image"]
    given = [tmp_path / g for g in given] if layout == "files" else tmp_path / given
    image = load_image(given, 4, NAMES)
    shifted = image.with_array(image.array + 1.0)
    written = save_image(shifted, tmp_path / "adv.nii.gz")
    if layout == "4d":
        assert written == [tmp_path / "adv.nii.gz"]
        data = nib.load(written[0]).get_fdata(dtype=np.float32)
        np.testing.assert_array_equal(np.moveaxis(data, -1, 0), shifted.array)
    else:
        assert written == channel_paths(tmp_path / "adv.nii.gz", 4)
        assert [p.name for p in written] == [f"adv_{c:04d}.nii.gz" for c in range(4)]
        for c, path in enumerate(written):
            np.testing.assert_array_equal(load_volume(path).array, shifted.array[c])
    # "in.nii.gz" names the 4D input, or the inputs in_0000.nii.gz … of the files layout
    with pytest.raises(ValueError, match="input file"):
        save_image(shifted, tmp_path / "in.nii.gz", overwrite=True, protect=image.sources)


def test_a_slicer_vector_file_comes_back_as_a_vector_file(tmp_path):
    """3D Slicer hands a CLI module a vector volume as a 5D ``(I, J, K, 1, C)`` NIfTI with the
    vector intent and reads back only that form as one vector volume."""
    data = np.random.default_rng(0).random((6, 5, 4, 1, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, grid_affine((1.0, 1.0, 2.0)))
    img.header.set_intent("vector")
    nib.save(img, tmp_path / "vec.nii.gz")
    image = load_image(tmp_path / "vec.nii.gz", 3, ["a", "b", "c"])
    assert image.layout == "vector"
    np.testing.assert_array_equal(image.array, np.moveaxis(data[:, :, :, 0], -1, 0))
    [written] = save_image(image.with_array(image.array * 2), tmp_path / "out.nii.gz")
    back = nib.load(written)
    assert back.shape == (6, 5, 4, 1, 3) and back.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(back.get_fdata(), data * 2, rtol=1e-6)
    np.testing.assert_allclose(back.affine, img.affine)


def test_an_attack_on_four_channels_lowers_dice_and_writes_four_channels(tmp_path):
    from vafa.io.outcome_files import write_outcome
    from vafa.run.pipeline import run_attack

    entry = write_mri_case(tmp_path, "case", 7, "files")
    card = mri_card()
    image = load_image([tmp_path / f for f in entry["image"]], 4, NAMES)
    model = tiny_model(card).eval()
    options = {"steps": 4, "q_max": 40, "block_size": 8}
    outcome = run_attack(model, card, image, attack="vafa", options=options, seed=0)
    dice = outcome.metrics.dice_fg
    assert dice.adversarial < dice.clean
    assert isinstance(outcome.adversarial, Channels) and len(outcome.adversarial) == 4
    change = np.abs(outcome.perturbation.array).reshape(4, -1).max(axis=1)
    assert np.all(change > 0)  # every channel attacked, each in its own units
    assert outcome.q_table.array.shape == (4, *image.shape)
    # the model input's largest change in file units; clipped voxels moved inside change more
    assert 0 < outcome.metrics.linf_original_units <= max(change) * (1 + 1e-5)
    files = write_outcome(outcome, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"adversarial_{c:04d}.nii.gz" for c in range(4)]
        + [f"perturbation_{c:04d}.nii.gz" for c in range(4)]
        + [f"q_table_{c:04d}.nii.gz" for c in range(4)]
        + ["clean_prediction.nii.gz", "adversarial_prediction.nii.gz", "metrics.json"]
    )
    assert files["clean_prediction"].exists()
    for c in range(4):
        written = load_volume(tmp_path / "out" / f"adversarial_{c:04d}.nii.gz").array
        np.testing.assert_allclose(written, outcome.adversarial.array[c])
        scale = MRI_UNITS[c][0]
        assert np.abs(written - image.array[c]).max() < scale  # in that channel's units


@pytest.mark.parametrize(
    "attack", ["pgd", "fgsm", "bim", "gn", "segpgd", "cospgd", "sa2", "vafa2d"]
)
def test_every_attack_changes_every_channel(attack):
    from vafa.attacks import ATTACKS
    from vafa.run.pipeline import run_attack

    arrays, _ = mri_case(8, channels=2, size=16)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays))
    card = mri_card(2)
    options = {"steps": 2} if "steps" in ATTACKS[attack].options else {}
    outcome = run_attack(
        tiny_model(card).eval(), card, image, attack=attack, options=options, seed=0
    )
    change = np.abs(outcome.perturbation.array).reshape(2, -1).max(axis=1)
    assert np.all(change > 0), change


def test_band_energies_are_split_by_channel():
    from vafa.run.band_analysis import band_energies, channel_energies

    g = torch.Generator().manual_seed(0)
    delta = torch.randn(1, 3, 12, 10, 9, generator=g)
    delta[:, 1] = 0  # a channel the attack left alone
    per_channel = channel_energies(delta, 4)
    for band, values in per_channel.items():
        assert values[1] == 0
        for c in (0, 2):  # each channel alone, through the one-channel function
            alone = band_energies(delta[:, c : c + 1], 4)[band]
            assert values[c] == pytest.approx(alone, rel=1e-12)
        assert sum(values) == pytest.approx(band_energies(delta, 4)[band], rel=1e-12)


def test_band_analysis_of_sigmoid_regions_scores_the_regions():
    from tests.factories import BRATS, BRATS_NAMES, region_problem
    from vafa.ops.heads import Heads
    from vafa.run.band_analysis import analyse_bands

    model, x, labels = region_problem()
    heads = Heads.from_outputs({"activation": "sigmoid", "regions": BRATS}, BRATS_NAMES)
    g = torch.Generator().manual_seed(0)
    adversarial = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    analysis = analyse_bands(model, x, adversarial, labels, num_classes=3, roi_size=16,
                             block_size=8, heads=heads)  # fmt: skip
    assert analysis.dice_fg_clean == 1.0  # the labels are the model's own merged regions
    assert analysis.row("all").dice_fg < 1.0
    assert analysis.row("all").channel_energy == (pytest.approx(analysis.row("all").energy),)


def test_evaluating_several_adversarial_images_is_evaluating_each():
    from vafa.run.pipeline import evaluate, evaluate_each

    arrays, _ = mri_case(9, channels=2, size=16)
    image = Channels(tuple(Volume(a, grid_affine()) for a in arrays))
    card = mri_card(2)
    model = tiny_model(card).eval()
    adversarials = [
        image.with_array(image.array + s * np.abs(image.array).max()) for s in (0.01, 0.05)
    ]
    together = evaluate_each(model, card, image, None, [None, *adversarials])
    for metrics, adversarial in zip(together, [None, *adversarials], strict=True):
        assert metrics.to_dict() == evaluate(model, card, image, None, adversarial).to_dict()
