"""The model's own inference (issue 31): vafa's clean prediction of an nnU-Net result folder is
``nnUNetPredictor``'s with its default settings (Gaussian weights, tile step 0.5, mirroring
along the axes the trainer allows, fold ensembles), and a MONAI bundle's is ``monai.bundle
run``'s with the bundle's own inferer settings; the settings travel on the card; what vafa
cannot honour fails in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import write_noise_ct
from model_folders import (
    CT_WINDOW,
    assert_agrees_with_nnunet,
    make_tiny_bundle,
    make_tiny_nnunet,
    nnunet_plans,
    nnunet_predict,
    run_bundle,
    vafa_probabilities,
    write_nifti,
)

from vafa.cli import main
from vafa.io.checkpoints import load_model
from vafa.io.inference import Inference
from vafa.io.models import ModelCard
from vafa.run.windows import importance_map, window_starts, windowed_logits

BUNDLE_SPACING = (1.5, 1.5, 2.0)


# ------------------------------------------------------------------------------- nnU-Net
@pytest.fixture(scope="module")
def nnunet_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_inference")
    standard = make_tiny_nnunet(root / "standard", seed=0)
    assert make_tiny_nnunet(root / "standard", seed=1, fold=1) == standard
    no_mirroring = make_tiny_nnunet(root / "nomirror", seed=2, trainer="nnUNetTrainerNoMirroring")
    plans = nnunet_plans(scheme="ZScoreNormalization", transpose=(1, 2, 0))
    transposed = make_tiny_nnunet(root / "transposed", plans=plans, channel="T2", seed=3)
    return {"standard": standard, "NoMirroring": no_mirroring, "transposed": transposed}


NNUNET_CASES = {  # folder, folds, image (z, y, x) — not multiples of the patch (8, 16, 16)
    "one fold": ("standard", (0,), (13, 27, 21)),
    "two folds, padded": ("standard", (0, 1), (6, 27, 21)),
    "NoMirroring trainer": ("NoMirroring", (0,), (17, 33, 29)),
    "transposed axes": ("transposed", (0,), (21, 11, 27)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(NNUNET_CASES))
def test_clean_prediction_is_nnunet_predictors_with_its_defaults(case, nnunet_folders, tmp_path):
    name, folds, shape = NNUNET_CASES[case]
    folder = nnunet_folders[name]
    rng = np.random.default_rng(len(case))
    mean, std = (300, 50) if name == "transposed" else (20, 200)
    image = rng.normal(mean, std, size=shape).astype(np.float32)
    spacing = (1.0, 2.0, 1.0) if name == "transposed" else (2.0, 1.0, 1.0)  # no resampling
    theirs = nnunet_predict(folder, image, spacing, folds=folds, use_gaussian=True,
                            use_mirroring=True)  # fmt: skip
    model, card = load_model(folder, device="cpu", fold=",".join(map(str, folds)))
    path = write_nifti(tmp_path / "case.nii.gz", image.transpose(2, 1, 0), spacing[::-1])
    ours = vafa_probabilities(model, card, path).transpose(0, 3, 2, 1)  # → nnU-Net's (z, y, x)
    assert_agrees_with_nnunet(ours, theirs, card)
    # the comparison can fail: vafa's former window (MONAI's, constant, no mirroring) differs
    former = vafa_probabilities(model, card, path, Inference()).transpose(0, 3, 2, 1)
    assert np.abs(former - theirs).max() > 0.05


def test_card_states_nnunets_inference(nnunet_folders):
    _, card = load_model(nnunet_folders["standard"], device="cpu", fold="0,1")
    own = card.inference
    assert (own.windows, own.mode, own.overlap, own.sigma_scale) == (
        "nnunet",
        "gaussian",
        0.5,
        0.125,
    )
    assert own.mirror_axes == (0, 1, 2) and own.passes == 8 and own.sw_batch_size == 1
    assert own.cval == pytest.approx(0.475)  # nnU-Net pads with 0 = (HU 40 − 40)/80: x = 0.475
    assert card.kwargs["folds"] == 2 and card.provenance["folds"] == ["0", "1"]
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    _, card = load_model(nnunet_folders["NoMirroring"], device="cpu")
    assert card.inference.mirror_axes == () and card.inference.allowed_mirror_axes == ()
    assert "trainer allows none" in card.inference.summary()


def test_what_vafa_cannot_honour_fails_in_one_line(nnunet_folders):
    _, card = load_model(nnunet_folders["NoMirroring"], device="cpu")
    with pytest.raises(ValueError, match=r"trainer allows no test-time mirroring") as err:
        card.inference.changed_by_user(mirror_axes=(0, 1, 2))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"fold_3: no such fold \(folds here: 0, 1\)"):
        load_model(nnunet_folders["standard"], device="cpu", fold="0,3")
    with pytest.raises(ValueError, match="distinct folds"):
        load_model(nnunet_folders["standard"], device="cpu", fold="0,0")


def test_switching_mirroring_off_is_recorded(nnunet_folders):
    _, card = load_model(nnunet_folders["standard"], device="cpu")
    fast = card.inference.changed_by_user(mirror_axes=())
    assert fast.mirror_axes == () and fast.changed == ("mirror_axes",)
    assert "changed by the user: mirror_axes" in fast.summary()
    assert Inference.from_dict(fast.to_dict()) == fast
    assert card.inference.changed_by_user(mirror_axes=(0, 1, 2)).changed == ()  # no change


def test_cli_info_shows_the_inference_and_refuses_a_missing_fold(nnunet_folders, capsys):
    assert main(["info", str(nnunet_folders["standard"]), "--fold", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "inference: nnU-Net windows, Gaussian" in out and "mirroring over axes 0, 1, 2" in out
    assert "folds: 0, 1" in out
    assert main(["info", str(nnunet_folders["standard"]), "--fold", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fold_4: no such fold" in err and len(err.splitlines()) == 1


def test_evaluate_states_the_inference_and_what_the_user_switched_off(
    nnunet_folders, tmp_path, capsys
):
    image = np.random.default_rng(0).normal(20, 200, size=(21, 27, 13)).astype(np.float32)
    path = write_nifti(tmp_path / "case.nii.gz", image, (1.0, 1.0, 2.0))  # the plans' grid
    args = ["evaluate", str(path), "--model", str(nnunet_folders["standard"]), "--device", "cpu"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "prediction: nnU-Net windows, Gaussian (σ = 0.125 × window) weights" in table
    assert main([*args, "--mirroring", "off", "--json"]) == 0
    protocol = json.loads(capsys.readouterr().out)["protocol"]
    assert protocol["inference"]["mirror_axes"] == [] and protocol["mode"] == "gaussian"
    assert protocol["inference"]["changed"] == ["mirror_axes"]
    no_mirroring = ["info", str(nnunet_folders["NoMirroring"]), "--mirroring", "on"]
    assert main(no_mirroring) == 2
    err = capsys.readouterr().err.strip()
    assert "trainer allows no test-time mirroring" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------------- MONAI
BUNDLE_CASES = {  # inferer entries, image shape, intensity transform
    "gaussian": ({"mode": "gaussian", "sigma_scale": 0.2}, (40, 36, 24), CT_WINDOW),
    "overlap 0.25": ({"overlap": 0.25, "sw_batch_size": 3}, (40, 36, 24), CT_WINDOW),
    "replicate padding": ({"padding_mode": "replicate"}, (40, 36, 11), CT_WINDOW),
    "cval in network units": ({"cval": 0.5}, (40, 9, 24), {**CT_WINDOW, "b_min": -1.0}),
    "MONAI defaults": (None, (40, 36, 24), CT_WINDOW),  # an entry with roi_size only
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BUNDLE_CASES))
def test_clean_prediction_is_monai_bundle_runs_with_its_inferer(case, tmp_path):
    entries, shape, intensity = BUNDLE_CASES[case]
    bundle = make_tiny_bundle(tmp_path, intensity=intensity, inferer=entries)
    if entries is None:  # MONAI's defaults: overlap 0.25, one window per batch
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        config["inferer"] = {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]}
        (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    path = tmp_path / "data" / "case.nii.gz"
    noise = {"mean": 20.0, "std": 150.0, "dtype": np.float32, "air": 4}
    image = write_noise_ct(path, shape, 0, spacing=BUNDLE_SPACING, **noise)
    theirs = run_bundle(bundle, image, tmp_path / "eval")
    model, card = load_model(bundle, device="cpu")
    ours = vafa_probabilities(model, card, image)
    assert ours.shape == theirs.shape == (3, *shape)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    former = vafa_probabilities(model, card, image, Inference())
    assert np.abs(former - theirs).max() > 1e-3  # the former window differs


def test_bundle_card_states_its_inferer(tmp_path):
    entries = {"mode": "gaussian", "overlap": 0.25, "padding_mode": "replicate",
               "device": "$torch.device('cuda')", "progress": True}  # fmt: skip
    _, card = load_model(make_tiny_bundle(tmp_path, inferer=entries), device="cpu")
    own = card.inference  # the device expression is not read (nor evaluated)
    assert (own.windows, own.mode, own.overlap, own.padding_mode) == (
        "monai",
        "gaussian",
        0.25,
        "replicate",
    )
    assert own.sw_batch_size == 4 and own.sigma_scale == 0.125 and own.mirror_axes == ()


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"_target_": "SimpleInferer"}, r"inferer#_target_ 'SimpleInferer': .*sliding window"),
        ({"with_coord": True}, r"inferer#with_coord is true: the network would be given"),
        ({"roi_size": [16, -1, 16]}, r"inferer#roi_size \[16, -1, 16\]: entries <= 0"),
        ({"overlaps": 0.3}, r"inferer#overlaps: not a SlidingWindowInferer setting"),
        ({"mode": "gauss"}, r"inferer: mode must be one of \['constant', 'gaussian'\]"),
    ],
)
def test_bundle_inferer_vafa_cannot_honour_is_refused(entries, match, tmp_path):
    bundle = make_tiny_bundle(tmp_path, inferer=entries)
    with pytest.raises(ValueError, match=match) as err:
        load_model(bundle, device="cpu")
    assert "\n" not in str(err.value) and "inference.json" in str(err.value)


# ------------------------------------------------------------------------ the window itself
def test_window_positions_and_weights_are_the_frameworks():
    from monai.data.utils import compute_importance_map, dense_patch_slices
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    for roi, overlap in ((16, 0.5), (16, 0.25), (24, 0.7)):
        for size in range(roi, 120, 5):  # after padding: size >= roi
            steps = compute_steps_for_sliding_window((size,), (roi,), 1 - overlap)[0]
            assert window_starts(size, roi, overlap, "nnunet") == steps
            interval = max(int(roi * (1 - overlap)), 1) if size > roi else roi
            monai = [s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))]
            assert window_starts(size, roi, overlap, "monai") == monai
    for roi in ((8, 16, 16), (5, 7, 9), (24, 32, 20)):
        gaussian = Inference(mode="gaussian", windows="nnunet", sigma_scale=0.125)
        nnunet = compute_gaussian(roi, 1 / 8, 10, torch.float16, torch.device("cpu")).float()
        assert torch.equal(importance_map(roi, gaussian), nnunet)
        gaussian = Inference(mode="gaussian", sigma_scale=(0.1, 0.2, 0.3))
        monai = compute_importance_map(roi, "gaussian", (0.1, 0.2, 0.3))
        assert torch.equal(importance_map(roi, gaussian), monai)


def test_windowed_prediction_is_differentiable_like_monais_inferer():
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=1).eval()
    inference = Inference(overlap=0.25, mode="gaussian", padding_mode="replicate", sw_batch_size=2)
    x = torch.rand(1, 1, 20, 18, 9)
    weights = torch.rand(1, 3, 20, 18, 9)
    grads = []
    for predict in (
        lambda v: windowed_logits(net, v, (16, 16, 8), inference),
        lambda v: sliding_window_inference(
            v, (16, 16, 8), 2, net, overlap=0.25, mode="gaussian", padding_mode="replicate"
        ),
    ):
        leaf = x.clone().requires_grad_(True)
        (torch.as_tensor(predict(leaf)) * weights).sum().backward()
        grads.append(leaf.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cval", [(0.0, 1.0), (0.0, 1.0, 0.5, 0.2)])
def test_per_channel_padding_of_another_channel_count_is_refused_without_a_card(cval):
    """The card checks cval's count at load; an Inference given directly (no card) is checked
    where the padding happens, in one line naming it (not torch's conv error)."""
    from vafa.run.tiling import sliding_window_predict

    model = torch.nn.Conv3d(3, 2, 1)
    image = torch.rand(1, 3, 12, 12, 12)
    with pytest.raises(ValueError, match=r"inference.cval must be one number or one per input "
                                         r"channel \(in_channels=3\)"):  # fmt: skip
        sliding_window_predict(model, image, 16, Inference(cval=cval))
