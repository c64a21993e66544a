"""Model outputs (vafa.ops.heads): softmax classes as before, and overlapping sigmoid regions
(MONAI's BraTS bundle: TC, WT, ET) against MONAI's own transforms and losses and naive numpy
re-derivations; the card field; attacks on a tiny 3-region sigmoid model."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from tests.factories import BRATS, BRATS_NAMES, region_problem
from vafa.attacks import build_attack
from vafa.io.models import ModelCard
from vafa.ops.heads import SOFTMAX, Heads, check_outputs
from vafa.ops.losses import DiceCELoss
from vafa.ops.metrics import dice_per_class, hd95_of_masks, hd95_per_class, predict_labels
from vafa.run.outcome_metrics import OutcomeMetrics, segmentation_scores

NAMES = BRATS_NAMES
HEADS = Heads.from_outputs({"activation": "sigmoid", "regions": BRATS}, NAMES)


def _brats_labels(seed=0, shape=(2, 1, 6, 5, 4)) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.choice([0, 1, 2, 4], size=shape))


# --------------------------------------------------------------------------- the card field
def test_outputs_default_to_softmax_and_sigmoid_defaults_are_filled_in():
    assert check_outputs(None, ["bg", "a"]) == {"activation": "softmax"}
    assert check_outputs({"activation": "softmax"}, ["bg"]) == {"activation": "softmax"}
    assert check_outputs({"activation": "sigmoid"}, ["a", "b"]) == {
        "activation": "sigmoid", "threshold": 0.5, "regions": {"a": [1], "b": [2]}}  # fmt: skip
    given = {"activation": "sigmoid", "threshold": 0.4, "regions": {"WT": [4, 2, 1],
             "TC": [4, 1], "ET": [4]}}  # fmt: skip
    assert check_outputs(given, NAMES)["regions"] == {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"activation": "sigmoud"}, r"activation must be one of .* \(did you mean 'sigmoid'\?\)"),
        ({"activation": "sigmoid", "threshold": 1.0}, r"threshold must be a number in \(0, 1\)"),
        ({"activation": "sigmoid", "threshold": 0}, r"threshold must be a number in \(0, 1\)"),
        ({"activation": "sigmoid", "regions": {"TC": [1], "WT": [2]}}, "must name the output"),
        ({"activation": "sigmoid", "regions": {**BRATS, "ET": [0]}}, "region 'ET' must be"),
        ({"activation": "sigmoid", "regions": {**BRATS, "ET": []}}, "region 'ET' must be"),
        ({"activation": "sigmoid", "treshold": 0.5}, r"did you mean 'threshold'"),
        ({"activation": "softmax", "threshold": 0.5}, "unknown for softmax"),
    ],
)
def test_bad_outputs_get_one_line(outputs, message):
    with pytest.raises(ValueError, match=message) as err:
        check_outputs(outputs, NAMES)
    assert "\n" not in str(err.value)


def _card(**changes) -> ModelCard:
    fields = dict(architecture="unet", in_channels=1, out_channels=3, class_names=list(NAMES),
                  roi_size=(16, 16, 16), intensity={"type": "percentile"},
                  kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0})  # fmt: skip
    return ModelCard(**{**fields, **changes})


def test_card_outputs_round_trip_and_old_cards_are_softmax():
    card = _card(outputs={"activation": "sigmoid", "regions": BRATS})
    back = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert back == card and back.outputs["regions"] == BRATS and back.outputs["threshold"] == 0.5
    assert list(card.to_dict()).index("outputs") == list(card.to_dict()).index("class_names") + 1
    old = card.to_dict()
    del old["outputs"]
    assert ModelCard.from_dict(old).outputs == {"activation": "softmax"}
    assert not ModelCard.from_dict(old).heads().sigmoid and card.heads().regions == ((1, 4),
           (1, 2, 4), (4,))  # fmt: skip
    with pytest.raises(ValueError, match="model card: outputs activation must be one of"):
        ModelCard.from_dict({**old, "outputs": {"activation": "relu"}})


# --------------------------------------------------------------------------- sigmoid regions
def test_target_is_monais_brats_conversion():
    from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

    labels = _brats_labels()
    got = HEADS.target(labels)
    convert = ConvertToMultiChannelBasedOnBratsClasses()
    expected = torch.stack([torch.as_tensor(convert(labels[i])) for i in range(2)])
    assert got.dtype == torch.uint8 and got.shape == (2, 3, 6, 5, 4)
    assert torch.equal(got.bool(), expected.bool())


def test_labels_no_region_covers_are_refused():
    labels = _brats_labels()
    labels[0, 0, 0, 0, 0] = 3  # the MSD's ET value, not the bundle's
    with pytest.raises(ValueError, match=r"labels hold value\(s\) \[3\] that no output region"):
        HEADS.target(labels)


def test_predict_is_monais_sigmoid_then_threshold():
    from monai.transforms import Activations, AsDiscrete

    logits = torch.randn(2, 3, 5, 4, 3)
    logits[0, 0, 0, 0, 0] = 0.0  # exactly 0.5: MONAI's AsDiscrete keeps it (>=)
    expected = AsDiscrete(threshold=0.5)(Activations(sigmoid=True)(logits))
    assert torch.equal(HEADS.predict(logits), expected.to(torch.uint8))
    with pytest.raises(ValueError, match="returns 4 output channels but its outputs name 3"):
        HEADS.predict(torch.randn(1, 4, 2, 2, 2))


def test_dice_per_region_is_the_naive_one():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 2, size=(2, 3, 5, 4, 3))
    target = rng.integers(0, 2, size=(2, 3, 5, 4, 3))
    target[1, 2] = 0  # an empty region: nan
    got = HEADS.dice(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    for b, k in itertools.product(range(2), range(3)):
        p, t = pred[b, k].astype(bool), target[b, k].astype(bool)
        expected = np.nan if not t.any() else 2 * (p & t).sum() / (p.sum() + t.sum())
        np.testing.assert_allclose(got[b, k], expected)
    assert HEADS.foreground(torch.from_numpy(got)).shape == (2, 3)  # no background column


def test_loss_is_monais_dice_sigmoid_plus_bce_with_logits_per_sample():
    from monai.losses import DiceLoss

    logits = torch.randn(2, 3, 6, 5, 4, dtype=torch.float64)
    target = HEADS.target(_brats_labels())
    dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-6,
                    reduction="none")(logits, target.double())  # fmt: skip
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")(logits, target.double())
    expected = dice.flatten(1).mean(1) + bce.flatten(1).mean(1)
    torch.testing.assert_close(HEADS.loss(logits, target), expected)


def _naive_merge(active: tuple[int, ...], regions) -> int:
    """The documented rule, one voxel at a time."""
    if not any(active):
        return 0
    labels = sorted({v for r in regions for v in r})
    member = {v: tuple(int(v in r) for r in regions) for v in labels}
    exact = [v for v in labels if member[v] == active]
    if exact:
        return exact[0]
    on = [k for k, a in enumerate(active) if a]
    smallest = sorted(on, key=lambda k: (len(regions[k]), -k))[0]
    return sorted(regions[smallest], key=lambda v: (sum(member[v]), v))[0]


def test_merge_is_the_brats_post_processing_and_the_documented_rule():
    combos = torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.uint8)
    pred = combos.T.reshape(1, 3, 8, 1, 1)  # every combination of TC, WT, ET
    merged = HEADS.merge(pred)[0, 0, :, 0, 0].tolist()
    painted = []  # the usual BraTS post-processing: WT → 2, then TC → 1, then ET → 4
    for tc, wt, et in combos.tolist():
        painted.append(4 if et else 1 if tc else 2 if wt else 0)
    assert merged == painted
    assert merged == [_naive_merge(tuple(c), HEADS.regions) for c in combos.tolist()]
    labels = _brats_labels()
    assert torch.equal(HEADS.merge(HEADS.target(labels)), labels)


def test_merge_of_arbitrary_regions_is_the_naive_rule():
    regions = {"a": [1, 2], "b": [2, 3], "c": [3], "d": [5, 1]}
    heads = Heads.from_outputs({"activation": "sigmoid", "regions": regions}, list(regions))
    combos = list(itertools.product([0, 1], repeat=4))
    pred = torch.tensor(combos, dtype=torch.uint8).T.reshape(1, 4, len(combos), 1, 1)
    expected = [_naive_merge(c, heads.regions) for c in combos]
    assert heads.merge(pred)[0, 0, :, 0, 0].tolist() == expected


def test_hd95_of_masks_is_hd95_per_class_of_one_hot():
    rng = np.random.default_rng(5)
    pred = torch.from_numpy(rng.integers(0, 3, size=(1, 1, 8, 7, 6)))
    ref = torch.from_numpy(rng.integers(0, 3, size=(1, 1, 8, 7, 6)))
    onehot = [torch.cat([(m == c) for c in range(3)], 1).to(torch.uint8) for m in (pred, ref)]
    torch.testing.assert_close(
        hd95_of_masks(*onehot, (1.0, 2.0, 1.5)), hd95_per_class(pred, ref, 3, (1.0, 2.0, 1.5))
    )


def test_segmentation_scores_per_region_and_per_merged_label():
    labels = _brats_labels(shape=(1, 1, 9, 8, 7))
    reference = HEADS.target(labels)
    pred = reference.clone()
    pred[0, 2, :4] = 0  # ET partly missed
    scores = segmentation_scores(HEADS, pred, reference, NAMES, (1.0, 1.0, 1.0))
    naive = HEADS.dice(pred, reference)[0].tolist()
    assert list(scores.dice_per_class) == list(NAMES)
    assert list(scores.dice_per_class.values()) == pytest.approx(naive)
    assert scores.dice == scores.dice_fg == pytest.approx(np.mean(naive))
    merged, truth = HEADS.merge(pred).numpy(), labels.numpy()
    for value in (1, 2, 4):
        p, t = merged == value, truth == value
        expected = 2 * (p & t).sum() / (p.sum() + t.sum())
        assert scores.dice_per_label[str(value)] == pytest.approx(expected)
    metrics = OutcomeMetrics.from_scores(scores, scores, reference="labels",
                                         class_names=NAMES, protocol=None)  # fmt: skip
    assert OutcomeMetrics.from_dict(json.loads(json.dumps(metrics.to_dict()))) == metrics
    assert metrics.scores("adversarial") == scores


# --------------------------------------------------------------------------- softmax: as before
def test_softmax_heads_are_todays_numbers():
    logits = torch.randn(2, 4, 5, 4, 3)
    target = torch.randint(0, 4, (2, 1, 5, 4, 3))
    assert SOFTMAX == SOFTMAX and not SOFTMAX.sigmoid
    assert torch.equal(SOFTMAX.predict(logits), predict_labels(logits))
    pred = SOFTMAX.predict(logits)
    torch.testing.assert_close(
        SOFTMAX.dice(pred, target, 4), dice_per_class(pred, target, 4), equal_nan=True
    )
    assert torch.equal(SOFTMAX.loss(logits, target), DiceCELoss(reduction="none")(logits, target))
    assert torch.equal(SOFTMAX.merge(pred), pred)
    with pytest.raises(ValueError, match="labels hold class 4 but the model predicts 4"):
        SOFTMAX.target(target + 1, 4)
    metrics = OutcomeMetrics.from_scores(
        segmentation_scores(SOFTMAX, pred[:1], target[:1], ["a", "b", "c", "d"]), None,
        reference="labels", class_names=("a", "b", "c", "d"), protocol=None)  # fmt: skip
    assert metrics.dice_per_label is None and "dice_per_label" not in metrics.to_dict()


# --------------------------------------------------------------------------- SegPGD / CosPGD
def test_segpgd_and_cospgd_on_regions_are_per_voxel_and_region():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 3, 4, 4, 3))
    target = HEADS.target(_brats_labels(1, (2, 1, 4, 4, 3))).numpy().astype(float)
    p = 1 / (1 + np.exp(-logits))
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    wrong = (p >= 0.5) != target.astype(bool)
    p_y = np.where(target == 1, p, 1 - p)
    cosine = p_y / np.sqrt(p**2 + (1 - p) ** 2)
    z, t = torch.from_numpy(logits), torch.from_numpy(target).to(torch.uint8)
    segpgd = build_attack("segpgd", torch.nn.Identity(), steps=4, heads=HEADS)
    lam = 1 / 8  # step 1 (0-based) of 4
    expected = ((1 - lam) * bce * ~wrong + lam * bce * wrong).reshape(2, -1).mean(1)
    np.testing.assert_allclose(segpgd.segmentation_loss(z, t, 1).numpy(), expected, rtol=1e-5)
    cospgd = build_attack("cospgd", torch.nn.Identity(), steps=4, heads=HEADS)
    expected = (cosine * bce).reshape(2, -1).mean(1)
    np.testing.assert_allclose(cospgd.segmentation_loss(z, t, 0).numpy(), expected, rtol=1e-5)


# --------------------------------------------------------------------------- attacks
def _tiny_sigmoid_model():
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                num_res_units=0).eval()  # fmt: skip


@pytest.mark.parametrize("name", ["pgd", "vafa", "segpgd", "cospgd"])
def test_attacks_lower_the_mean_region_dice_of_a_sigmoid_model(name):
    """Measured: mean region Dice 1 → 0.74 (PGD ε 8), 0.92 (VAFA q_max 40, 8³ blocks)."""
    model, x, labels = region_problem()
    assert sorted(torch.unique(labels).tolist()) == [0, 1, 2, 4]
    options = {"vafa": dict(block_size=8, q_max=40, steps=10)}.get(name, dict(eps=8, steps=10))
    attack = build_attack(name, model, heads=HEADS, seed=0, **options)
    result = attack(x, labels)
    target = HEADS.target(labels)
    assert torch.equal(result.labels, target)
    assert result.clean_prediction.shape == result.adversarial_prediction.shape == (1, 3, 16,
           16, 16) and result.adversarial_prediction.dtype == torch.uint8  # fmt: skip
    clean = torch.nanmean(HEADS.dice(result.clean_prediction, target)).item()
    adversarial = torch.nanmean(HEADS.dice(result.adversarial_prediction, target)).item()
    assert clean == 1.0 and adversarial < clean - 0.03, (clean, adversarial)
    with torch.no_grad():
        assert torch.equal(HEADS.predict(model(result.adversarial)), result.adversarial_prediction)
    returned = [row for row in result.history if row["returned"]][-1]
    assert returned["dice"] == pytest.approx(adversarial)


def test_pseudo_labels_of_a_sigmoid_model_are_its_region_masks_and_tiles_stitch_them():
    from vafa.run.tiling import attack_volume, sliding_window_labels

    model, x, _ = region_problem(_tiny_sigmoid_model())
    attack = build_attack("pgd", model, heads=HEADS, seed=0, eps=8, steps=3)
    result = attack(x)
    assert torch.equal(result.labels, result.clean_prediction)
    volume = attack_volume(attack, x, roi=(8, 8, 8))
    assert volume.tile_clean_prediction.shape == (1, 3, 16, 16, 16)
    assert volume.tile_adversarial_prediction.dtype == torch.uint8
    whole = sliding_window_labels(model, x, (16, 16, 16), heads=HEADS)
    assert whole.shape == (1, 3, 16, 16, 16) and torch.equal(whole, result.clean_prediction)
