"""The typed metrics of vafa.run.outcome_metrics against the JSON written before they existed
(``data/outcome_metrics.json``: the ``metrics`` objects of five runs of the tiny model of
test_pipeline.py — VAFA, FGSM with labels on a resampled grid, a cancelled PGD, evaluate on a
clean volume and on a clean + adversarial pair — written by the dict-building pipeline)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vafa.report.tables import format_metrics_table, metrics_csv
from vafa.run.cases import case_row
from vafa.run.outcome_metrics import OutcomeMetrics, Pair, PerTile, Protocol, SegmentationScores

BEFORE = json.loads((Path(__file__).parent / "data" / "outcome_metrics.json").read_text())
CASES = list(BEFORE)
PAIRS = ("dice_per_class", "hd95_per_class", "dice", "dice_fg", "hd95")
SCALARS = ("reference", "ssim", "psnr", "linf", "l2", "linf_original_units", "flip_rate",
           "attack", "normalize", "steps", "steps_run", "zeroed_fraction", "cancelled",
           "tiles_done", "tiles_total")  # fmt: skip


def test_the_fixture_covers_every_shape():
    assert CASES == ["vafa", "fgsm_labels", "pgd_cancelled", "evaluate_clean",
                     "evaluate_adversarial"]  # fmt: skip
    assert BEFORE["pgd_cancelled"]["per_tile"] is None and BEFORE["vafa"]["per_tile"] is not None
    assert BEFORE["evaluate_clean"]["dice"]["adversarial"] is None
    assert BEFORE["evaluate_clean"]["ssim"] is None and BEFORE["evaluate_clean"]["attack"] is None
    assert BEFORE["fgsm_labels"]["reference"] == "labels"


@pytest.mark.parametrize("case", CASES)
def test_to_dict_gives_back_the_json_byte_for_byte(case):
    old = BEFORE[case]
    typed = OutcomeMetrics.from_dict(old)
    assert json.dumps(typed.to_dict(), indent=2) == json.dumps(old, indent=2)
    assert OutcomeMetrics.from_dict(typed.to_dict()) == typed


@pytest.mark.parametrize("case", CASES)
def test_attributes_are_the_json_values(case):
    old = BEFORE[case]
    m = OutcomeMetrics.from_dict(old)
    for key in PAIRS:
        for which in ("clean", "adversarial"):
            assert getattr(getattr(m, key), which) == old[key][which], (key, which)
    assert list(m.hd95_missed.clean) == old["hd95_missed"]["clean"]
    if old["hd95_missed"]["adversarial"] is None:
        assert m.hd95_missed.adversarial is None
    else:
        assert list(m.hd95_missed.adversarial) == old["hd95_missed"]["adversarial"]
    for key in SCALARS:
        assert getattr(m, key) == old[key], key
    assert list(m.class_names) == old["class_names"]
    protocol = old["protocol"]
    assert m.protocol.overlap == protocol["overlap"] and list(m.protocol.roi) == protocol["roi"]
    assert list(m.protocol.spacing_mm) == protocol["spacing_mm"]
    assert (m.protocol.prediction, m.protocol.mode, m.protocol.grid) == (
        protocol["prediction"], protocol["mode"], protocol["grid"])  # fmt: skip
    if old["per_tile"] is None:
        assert m.per_tile is None
    else:
        for key in ("dice", "dice_fg"):
            tile = getattr(m.per_tile, key)
            assert (tile.clean, tile.adversarial) == tuple(old["per_tile"][key].values())
    clean = m.scores("clean")
    assert clean.dice_fg == old["dice_fg"]["clean"] and clean.hd95 == old["hd95"]["clean"]
    adversarial = m.scores("adversarial")
    if old["dice"]["adversarial"] is None:
        assert adversarial is None
    else:
        assert adversarial.dice_per_class == old["dice_per_class"]["adversarial"]


def test_from_scores_pairs_the_two_predictions():
    clean = SegmentationScores({"bg": 1.0, "organ": 0.9}, {"bg": 0.0, "organ": 2.0}, 0.95,
                               0.9, 1.0, ())  # fmt: skip
    adversarial = dataclasses.replace(clean, dice_fg=0.4, hd95_missed=("organ",))
    protocol = Protocol(overlap=0.5, roi=(16, 16, 16), spacing_mm=(1.0, 1.0, 1.0))
    m = OutcomeMetrics.from_scores(clean, adversarial, reference="labels",
                                   class_names=("bg", "organ"), protocol=protocol, ssim=0.9)  # fmt: skip
    assert m.dice_fg == Pair(0.9, 0.4) and m.hd95_missed == Pair((), ("organ",))
    assert m.scores("clean") == clean and m.scores("adversarial") == adversarial
    assert m.ssim == 0.9 and m.psnr is None and m.per_tile is None and not m.cancelled
    only = OutcomeMetrics.from_scores(clean, None, reference="labels", class_names=("bg",),
                                      protocol=protocol)  # fmt: skip
    assert only.dice_fg == Pair(0.9, None) and only.scores("adversarial") is None
    with pytest.raises(ValueError, match="which"):
        only.scores("both")
    with pytest.raises(dataclasses.FrozenInstanceError):
        only.ssim = 1.0  # type: ignore[misc]
    tiles = PerTile(Pair(1.0, 0.5), Pair(0.9, 0.3))
    assert tiles.to_dict() == {"dice": {"clean": 1.0, "adversarial": 0.5},
                               "dice_fg": {"clean": 0.9, "adversarial": 0.3}}  # fmt: skip


def test_missing_keys_take_their_defaults():
    m = OutcomeMetrics.from_dict({"dice_fg": {"clean": 0.8, "adversarial": 0.2}})
    assert m.dice_fg == Pair(0.8, 0.2) and m.dice == Pair(None, None)
    assert m.reference is None and m.protocol is None and not m.cancelled
    assert m.dice_per_class == Pair(None, None) and m.class_names == ()


@pytest.mark.parametrize("case", CASES)
def test_renderings_read_the_attributes(case):
    """Table, CSV and the batch row show the JSON's numbers."""
    old = BEFORE[case]
    m = OutcomeMetrics.from_dict(old)
    table, csv = format_metrics_table(m, title=case), metrics_csv(m)
    assert table.startswith(case) and "Dice foreground mean" in table
    assert csv.splitlines()[0] == "metric,clean,adversarial"
    fg = next(line for line in csv.splitlines() if line.startswith("Dice foreground mean"))
    clean_fg = old["dice_fg"]["clean"]
    assert fg.split(",")[1] == ("" if clean_fg is None else str(clean_fg))
    row = case_row("case.nii.gz", None, "case_adv.nii.gz", "ok", m, 0)
    assert row["dice_fg_clean"] == old["dice_fg"]["clean"]
    assert row["dice_fg"] == old["dice_fg"]["adversarial"] and row["ssim"] == old["ssim"]
    assert row["reference"] == old["reference"] and row["steps_run"] == old["steps_run"]
