"""run_attack and evaluate on a model with overlapping sigmoid outputs (TC, WT, ET): Dice per
region and per merged label (needs the pipeline to ask the card's heads)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.factories import BRATS, BRATS_NAMES, region_problem
from vafa.io.models import ModelCard
from vafa.io.volume import Volume
from vafa.run.pipeline import evaluate, run_attack


@pytest.fixture(scope="module")
def case():
    model, x, labels = region_problem()
    card = ModelCard(
        architecture="unet", in_channels=1, out_channels=3, class_names=list(BRATS_NAMES),
        roi_size=(16, 16, 16), intensity={"type": "ct_window", "a_min": 0.0, "a_max": 1.0},
        kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0},
        outputs={"activation": "sigmoid", "regions": BRATS},
    )  # fmt: skip
    image = Volume(x[0, 0].numpy().astype(np.float32), np.eye(4))
    return model, card, image, Volume(labels[0, 0].numpy().astype(np.float32), np.eye(4))


def test_run_attack_reports_dice_per_region_and_per_merged_label(case):
    model, card, image, labels = case
    outcome = run_attack(model, card, image, labels, attack="pgd",
                         options={"eps": 8, "steps": 5}, seed=0)  # fmt: skip
    m = outcome.metrics
    assert m.reference == "labels" and list(m.dice_per_class.clean) == list(BRATS_NAMES)
    assert list(m.dice_per_class.clean.values()) == [1.0, 1.0, 1.0]
    assert m.dice.clean == m.dice_fg.clean == 1.0
    assert m.dice_fg.adversarial < 0.97 and m.dice_fg.adversarial == pytest.approx(
        np.mean(list(m.dice_per_class.adversarial.values())))  # fmt: skip
    assert list(m.dice_per_label.clean) == ["1", "2", "4"] and m.dice_per_label.clean["4"] == 1.0
    assert m.per_tile.dice_fg.adversarial < 1.0 and m.flip_rate > 0
    assert set(np.unique(outcome.clean_prediction.array)) <= {0, 1, 2, 4}
    assert np.array_equal(outcome.clean_prediction.array, labels.array)
    written = json.loads(json.dumps(m.to_dict()))
    assert written["dice_per_label"]["clean"] == {"1": 1.0, "2": 1.0, "4": 1.0}
    both = evaluate(model, card, image, labels, outcome.adversarial)
    assert both.dice_per_class == m.dice_per_class and both.dice_per_label == m.dice_per_label


def test_run_attack_without_labels_attacks_the_region_masks(case):
    model, card, image, _ = case
    outcome = run_attack(model, card, image, attack="vafa", seed=0,
                         options={"block_size": 8, "q_max": 40, "steps": 5})  # fmt: skip
    m = outcome.metrics
    assert m.reference == "clean_prediction" and m.dice_fg.clean == 1.0
    assert m.dice_fg.adversarial < 1.0 and list(m.dice_per_label.clean) == ["1", "2", "4"]
    assert outcome.settings["attack"]["attack"] == "VAFA"


def test_the_lens_scores_regions_and_replays_merged_labels(case):
    import torch

    from vafa.attacks import drive
    from vafa.run.lens import iter_lens, lens_region

    model, x, labels = region_problem()
    card_heads = case[1].heads()
    region = lens_region(x.shape[2:], (8, 8, 8), 16)
    result = drive(iter_lens(model, x, labels.to(torch.long), region, num_classes=3,
                             attack="pgd", options={"eps": 8, "steps": 3}, seed=0,
                             heads=card_heads))  # fmt: skip
    assert result.dice_clean == 1.0 and result.dice_adversarial < 1.0
    assert set(np.unique(result.adversarial_prediction)) <= {0, 1, 2, 4}
    kept = result.history.at(result.history.steps[-1])
    assert set(np.unique(kept.prediction)) <= {0, 1, 2, 4}  # merged, not region 0's mask


def test_vaft_loss_of_sigmoid_regions_is_dice_bce_on_the_region_masks():
    import torch

    from vafa.ops.heads import Heads
    from vafa.ops.losses import DiceBCELoss
    from vafa.training import VAFTLoss

    heads = Heads.from_outputs({"activation": "sigmoid", "regions": BRATS}, BRATS_NAMES)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (2, 1, 6, 6, 6), generator=g)]
    clean, adv = torch.randn(2, 3, 6, 6, 6, generator=g), torch.randn(2, 3, 6, 6, 6, generator=g)
    terms = VAFTLoss("vafa-fr", lambda_fr=0.5, heads=heads)(labels, clean, adv)
    masks = torch.stack([torch.isin(labels[:, 0], torch.tensor(r)) for r in BRATS.values()], 1)
    torch.testing.assert_close(terms["clean"], DiceBCELoss()(clean, masks.float()))
    torch.testing.assert_close(terms["adv"], DiceBCELoss()(adv, masks.float()))
