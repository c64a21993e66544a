"""MONAI's BraTS MRI segmentation bundle (issue 27) as a vafa model: the Model Zoo's
``brats_mri_segmentation`` configs as they are (SegResNet on 4 MRI channels T1c, T1, T2, FLAIR;
``NormalizeIntensityd(nonzero=True, channel_wise=True)``; 3 overlapping sigmoid outputs TC, WT,
ET thresholded at 0.5) with a tiny SegResNet. The card comes from the bundle's description;
vafa's clean prediction equals MONAI's own pipeline (``ConfigParser``: preprocessing →
inferer → post-processing) on the same 4 files; an attack lowers the regions' Dice; the CLI
describes it and writes the adversarial channels as the input came.

The tiny SegResNet is trained for a few Adam steps on the synthetic case (a random one predicts
nearly nothing, so its Dice would have nothing to lose): what an attack does to it then says
something. The case: :func:`tests.factories.write_mri_case`'s blobs as 4 channels, labelled in
BraTS values: edema (2), tumour cores whose rim enhances (4) around necrosis (1).

vafa maps a z-score bundle's images to [0, 1] with a window of ±5 standard deviations
(:data:`vafa.io.intensity.ZSCORE_K`): where MONAI's z-score lies beyond it, vafa's network input
is MONAI's clipped (:func:`test_beyond_five_deviations_vafa_clips`); the cases compared with
MONAI's predictions lie within it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.factories import BRATS, grid_affine, mri_case, run_cli, save_nifti, write_mri_case
from tests.model_folders import (
    BRATS_CHANNELS,
    BRATS_ROI,
    BRATS_ZSCORE,
    make_brats_bundle,
)
from vafa.io.bundles import bundle_card, load_bundle
from vafa.io.channels import Channels, load_image
from vafa.io.intensity import ZSCORE_K
from vafa.io.model_space import labels_to_model_space, to_model_space
from vafa.io.volume import load_volume
from vafa.run.pipeline import run_attack
from vafa.run.tiling import sliding_window_predict

#: The Model Zoo bundle's own post-processing: the sigmoid, back to the input grid, the
#: threshold, the merge into BraTS labels (a lambda: never evaluated by vafa), the file.
ZOO_POSTPROCESSING = {"_target_": "Compose", "transforms": [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
     "meta_keys": "pred_meta_dict", "nearest_interp": False, "to_tensor": True},
    {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
    {"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: torch.where(x[[2]] > 0, 4, "
     "torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
    {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "pred_meta_dict",
     "output_dir": "@output_dir", "output_postfix": "seg", "output_dtype": "uint8",
     "resample": False, "squeeze_end_dims": True},
]}  # fmt: skip


def brats_labels(seg: np.ndarray) -> np.ndarray:
    """BraTS labels of :func:`~tests.factories.mri_case`'s blobs: the faint blobs (1) are
    edema (2); in the bright ones (2) an enhancing rim (4, one voxel) around necrosis (1)."""
    labels = np.zeros(seg.shape, np.uint8)
    labels[seg == 1] = 2
    core = seg == 2
    necrosis = ndimage.binary_erosion(core, iterations=1)
    labels[core & ~necrosis] = 4
    labels[necrosis] = 1
    return labels


def write_brats_case(folder, seed: int = 0, *, on_model_grid: bool = False):
    """``(files, labels file)``: a synthetic BraTS case, one file per channel in the bundle's
    order, labelled by :func:`brats_labels`. Default: as :func:`~tests.factories.write_mri_case`
    writes it (1.5 × 1.5 × 2 mm: both pipelines resample); ``on_model_grid``: its channels
    rewritten at 1 mm and skull-stripped — each 0 outside a ball of its own radius (the nonzero
    voxels that the z-score measures differ per channel)."""
    entry = write_mri_case(folder, "case", seed, "files")
    files = [folder / f for f in entry["image"]]
    arrays, seg = mri_case(seed)
    affine = grid_affine((1.0, 1.0, 1.0)) if on_model_grid else None
    if on_model_grid:
        centre = np.indices(seg.shape) - (np.array(seg.shape)[:, None, None, None] - 1) / 2
        radius = np.sqrt((centre**2).sum(0))
        for c, (path, array) in enumerate(zip(files, arrays, strict=True)):
            array[radius > 11.0 + c * 0.5] = 0.0
            save_nifti(path, array, affine)
    return files, save_nifti(folder / entry["label"], brats_labels(seg), affine)


def _train(model, card, files, labels_file, steps: int = 60) -> dict[str, torch.Tensor]:
    """A few Adam steps of the bundle's network on the case (Dice + BCE of the regions)."""
    model_input = to_model_space(load_image(files, 4, BRATS_CHANNELS), card)
    heads = card.heads()
    target = heads.target(labels_to_model_space(load_volume(labels_file), model_input))
    even = (..., *(slice(0, n - n % 2) for n in target.shape[2:]))  # SegResNet halves once
    x, target = model_input.tensor[even], target[even]
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = heads.loss(model(x), target).mean()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """``(bundle, case files, labels file)``: the bundle with weights trained on a case on its
    grid (1 mm, 24³: one window)."""
    root = tmp_path_factory.mktemp("brats")
    files, labels = write_brats_case(root / "data", on_model_grid=True)
    bundle = make_brats_bundle(root / "untrained")
    model, card = load_bundle(bundle, device="cpu")
    state = _train(model, card, files, labels)
    return make_brats_bundle(root, state=state), files, labels


def test_card_reads_channels_regions_and_the_per_channel_zscore(tmp_path):
    card = bundle_card(make_brats_bundle(tmp_path))
    assert card.in_channels == 4 and card.channel_names == list(BRATS_CHANNELS)
    assert card.class_names == ["TC", "WT", "ET"] and card.out_channels == 3
    assert card.outputs == {"activation": "sigmoid", "threshold": 0.5, "regions": BRATS}
    heads = card.heads()
    assert heads.sigmoid and heads.region_dict() == BRATS
    assert card.intensity == {"type": "zscore", "k": 5.0, "nonzero": True}  # fitted per channel
    assert card.spacing == (1.0, 1.0, 1.0) and card.orientation == "RAS"
    assert card.roi_size == BRATS_ROI and card.inference.overlap == 0.5
    assert card.inference.sw_batch_size == 1
    assert card.kwargs["network"]["_target_"].endswith("SegResNet")
    assert any("ConvertToMultiChannelBasedOnBratsClasses" in n for n in card.provenance["notes"])
    again = type(card).from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card and again.heads().region_dict() == BRATS


@pytest.mark.parametrize(
    ("outputs", "regions"),
    [
        (("Tumor core", "Whole tumor", "Enhancing tumor"), [[1, 4], [1, 2, 4], [4]]),  # the Zoo's
        (("et", "tc", "wt"), [[4], [1, 4], [1, 2, 4]]),  # any order, any case
        (("edema", "core", "enhancing"), [[1], [2], [3]]),  # not BraTS's: Heads' default
    ],
)
def test_regions_follow_the_output_names(outputs, regions, tmp_path):
    card = bundle_card(make_brats_bundle(tmp_path, outputs=outputs))
    assert card.class_names == list(outputs)
    assert list(card.outputs["regions"].values()) == regions


def _activation(**kwargs):
    return {"_target_": "Activationsd", "keys": "pred", **kwargs}


def _discrete(**kwargs):
    return {"_target_": "AsDiscreted", "keys": "pred", **kwargs}


OUTPUTS = {
    "the Model Zoo's, with a lambda never evaluated": (ZOO_POSTPROCESSING["transforms"],
                                                       "sigmoid", 0.5),
    "another threshold": ([_activation(sigmoid=True), _discrete(threshold=0.3)], "sigmoid", 0.3),
    "probabilities kept": ([_activation(sigmoid=True)], "sigmoid", 0.5),
    "argmax of sigmoids": ([_activation(sigmoid=True), _discrete(argmax=True)], "softmax", None),
    "softmax and argmax": ([_activation(softmax=True), _discrete(argmax=True)], "softmax", None),
    "disabled sigmoid": ([{**_activation(sigmoid=True), "_disabled_": "true"}], "softmax", None),
    "none": ([], "softmax", None),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_outputs_follow_the_postprocessing(name, tmp_path):
    transforms, activation, threshold = OUTPUTS[name]
    post = {"_target_": "Compose", "transforms": transforms}
    card = bundle_card(make_brats_bundle(tmp_path, postprocessing=post))  # untrusted
    assert card.outputs["activation"] == activation
    assert card.outputs.get("threshold") == threshold
    if activation == "sigmoid":
        assert card.outputs["regions"] == BRATS


BAD = {
    "joint z-score": (
        {"intensity": {**BRATS_ZSCORE, "channel_wise": False}},
        r"inference.json: NormalizeIntensityd with channel_wise=false measures the 4 input "
        r"channels jointly; vafa fits the intensity mapping on each channel on its own",
    ),
    "joint percentiles (MONAI's default)": (
        {"intensity": {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image",
                       "lower": 1, "upper": 99, "b_min": 0.0, "b_max": 1.0}},
        r"ScaleIntensityRangePercentilesd with channel_wise=false measures the 4 input channels",
    ),
    "a threshold outside (0, 1)": (
        {"postprocessing": {"_target_": "Compose", "transforms": [
            _activation(sigmoid=True), _discrete(threshold=1.5)]}},
        r"postprocessing#transforms#1#threshold 1.5: vafa needs a sigmoid probability threshold "
        r"in \(0, 1\)",
    ),
    "another activation": (
        {"postprocessing": {"_target_": "Compose", "transforms": [
            _activation(other="$torch.tanh")]}},
        r"postprocessing#transforms#0#other: vafa reads sigmoid or softmax outputs",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_what_vafa_cannot_honour_is_one_line(name, tmp_path):
    edits, message = BAD[name]
    bundle = make_brats_bundle(tmp_path, **edits)
    with pytest.raises(ValueError, match=message) as info:
        bundle_card(bundle)
    assert "\n" not in str(info.value)


def _parser(bundle):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    return parser


def _preprocessed(parser, files):
    """MONAI's preprocessing of a case: ``{"image": [4, …] MetaTensor}`` on the model grid."""
    return parser.get_parsed_content("preprocessing")({"image": [str(f) for f in files]})


def monai_pipeline(bundle, files):
    """MONAI's own inference of the bundle on one case, every part built by its
    ``ConfigParser`` from the config (preprocessing → ``network_def`` with ``models/model.pt``
    → inferer → post-processing): ``(network input [4, …], logits [3, …], masks [3, …])`` on
    the model grid."""
    parser = _parser(bundle)
    data = _preprocessed(parser, files)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(data["image"][None], network.eval())[0]
    masks = parser.get_parsed_content("postprocessing")({**data, "pred": logits.clone()})["pred"]
    return data["image"], logits, masks


@pytest.mark.slow
@pytest.mark.parametrize("on_model_grid", [False, True], ids=["resampled", "skull-stripped"])
def test_clean_prediction_is_monais_pipeline(on_model_grid, brats, tmp_path):
    """On write_mri_case's grid (both resample with MONAI's Spacing) and on the model's grid
    with zero backgrounds of their own per channel (the z-score's nonzero voxels differ)."""
    bundle = brats[0]
    files, _ = write_brats_case(tmp_path, 2, on_model_grid=on_model_grid)
    their_input, their_logits, their_masks = monai_pipeline(bundle, files)
    model, card = load_bundle(bundle, device="cpu")
    model_input = to_model_space(load_image(files, 4, BRATS_CHANNELS), card)
    assert isinstance(model_input.grid, Channels) and model_input.resampled != on_model_grid
    scale, shift = card.kwargs["input_scale"], card.kwargs["input_shift"]
    network_input = model_input.tensor[0] * scale + shift  # vafa's [0, 1] image, first layer
    assert float(their_input.abs().max()) < ZSCORE_K  # within vafa's window: nothing clipped
    np.testing.assert_allclose(network_input.numpy(), their_input.numpy(), atol=1e-5)
    np.testing.assert_allclose(model_input.grid.affine, their_input.affine.numpy(), atol=1e-6)
    logits = sliding_window_predict(model, model_input.tensor, card.roi_size, card.inference)
    np.testing.assert_allclose(torch.sigmoid(logits[0]).numpy(), torch.sigmoid(their_logits),
                               atol=1e-5)  # fmt: skip
    masks = card.heads().predict(logits)[0]
    assert masks.shape == their_masks.shape == (3, *model_input.grid.shape)
    assert np.array_equal(masks.numpy(), their_masks.numpy().astype(np.uint8))


@pytest.mark.slow
def test_beyond_five_deviations_vafa_clips(brats, tmp_path):
    """A case with little tumour (seed 1): its cores lie up to 8 standard deviations above the
    mean; vafa's network input is MONAI's z-score clipped to ±5, equal elsewhere."""
    bundle = brats[0]
    files, _ = write_brats_case(tmp_path, 1)
    theirs = _preprocessed(_parser(bundle), files)["image"].numpy()
    card = bundle_card(bundle)
    tensor = to_model_space(load_image(files, 4, BRATS_CHANNELS), card).tensor[0].numpy()
    ours = tensor * card.kwargs["input_scale"] + card.kwargs["input_shift"]
    assert (np.abs(theirs) > ZSCORE_K).any()
    np.testing.assert_allclose(ours, np.clip(theirs, -ZSCORE_K, ZSCORE_K), atol=1e-5)


@pytest.mark.slow
def test_pgd_lowers_the_regions_dice(brats):
    """PGD at ε = 16/255 of vafa's ±5σ window (0.63σ; at 8/255, 5 steps, this tiny model's mean
    region Dice falls only from 0.73 to 0.71), 10 steps, against the labels."""
    bundle, files, labels = brats
    model, card = load_bundle(bundle, device="cpu")
    image = load_image(files, 4, BRATS_CHANNELS)
    outcome = run_attack(model, card, image, load_volume(labels), attack="pgd",
                         options={"eps": 16, "steps": 10}, seed=0)  # fmt: skip
    m = outcome.metrics
    assert list(m.dice_per_class.clean) == ["TC", "WT", "ET"]
    assert list(m.dice_per_label.clean) == ["1", "2", "4"]
    assert m.dice_fg.clean > 0.5  # the trained tiny SegResNet segments its case
    assert m.dice_fg.adversarial < m.dice_fg.clean - 0.1 and m.flip_rate > 0
    assert set(np.unique(outcome.clean_prediction.array)) <= {0, 1, 2, 4}


@pytest.mark.slow
def test_cli_describes_the_bundle_and_writes_the_channels_as_they_came(brats, tmp_path, capsys):
    bundle, files, _ = brats
    code, out, err = run_cli(["info", bundle], capsys)
    assert code == 0, err
    assert "channels: 4 (T1c, T1, T2, FLAIR): one file each, in this order" in out
    assert "outputs: sigmoid regions TC = labels 1, 4; WT = labels 1, 2, 4; ET = label 4 " \
           "(threshold 0.5)" in out  # fmt: skip
    adv = tmp_path / "adv.nii.gz"
    argv = ["attack", *files, "--model", bundle, "--out", adv, "--steps", "2", "--block-size",
            "8", "--seed", "0", "--quiet"]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    written = sorted(p.name for p in tmp_path.glob("adv*"))
    assert written == sorted([*(f"adv_{c:04d}.nii.gz" for c in range(4)), "adv.json"])
    for c, path in enumerate(files):  # each channel in its own units, on its input's grid
        original, result = nib.load(path), nib.load(tmp_path / f"adv_{c:04d}.nii.gz")
        np.testing.assert_allclose(result.affine, original.affine)
        assert np.abs(result.get_fdata() - original.get_fdata()).max() > 0
