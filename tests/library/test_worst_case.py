"""The worst case over attacks (vafa.run.worst_case) against the members run one by one."""

from __future__ import annotations

import pytest
import torch
from factories import ct_phantom, phantom_affine, phantom_card

from vafa.attacks import drive
from vafa.io.models import build_model
from vafa.io.volume import Volume
from vafa.run.pipeline import run_attack
from vafa.run.worst_case import (
    WORST_CASE,
    Member,
    is_worst_case,
    iter_worst_case,
    member_options,
)

SHARED = {"steps": 2, "q_max": 30, "eps": 8}
MEMBERS = (Member("sa2"), Member("pgd"), Member("vafa", {"q_max": 20, "block_size": 8}))


@pytest.fixture(scope="module")
def case():
    card = phantom_card()
    torch.manual_seed(0)
    model = build_model(card).eval()
    hu, labels = ct_phantom((24, 20, 16))
    return model, card, Volume(hu, phantom_affine()), Volume(labels, phantom_affine())


def _dice(outcome) -> float:
    return outcome.metrics.dice_fg.adversarial


def test_the_lowest_member_wins_and_every_member_is_reported(case):
    model, card, image, labels = case
    alone = {
        m.name: run_attack(
            model, card, image, labels, attack=m.attack, options=member_options(m, SHARED), seed=3
        )
        for m in MEMBERS
    }
    worst = drive(iter_worst_case(
        model, card, image, labels, members=MEMBERS, options=SHARED, floor=0.0, seed=3
    ))  # fmt: skip
    account = worst.settings["worst_case"]
    by_name = {m["attack"]: m for m in account["members"]}
    assert set(by_name) == set(alone) and all(m["ran"] for m in by_name.values())
    for name, outcome in alone.items():
        assert by_name[name]["dice_fg"] == pytest.approx(_dice(outcome), abs=1e-9)
    winner = min(alone, key=lambda n: _dice(alone[n]))
    assert account["winner"] == winner == worst.settings["attack"]["attack"]
    assert _dice(worst) == min(_dice(o) for o in alone.values())
    expected = alone[winner].adversarial.array
    assert (worst.adversarial.array == expected).all()
    # shared options reach the members that take them, each keeps its own budget otherwise
    assert by_name["VAFA"]["settings"]["q_max"] == 30 and by_name["PGD"]["settings"]["eps"] == 8
    assert by_name["SA2"]["settings"]["steps"] == 2 and "q_max" not in by_name["SA2"]["settings"]


def test_a_case_stops_at_the_floor(case):
    model, card, image, labels = case
    worst = drive(iter_worst_case(
        model, card, image, labels, members=MEMBERS, options={"steps": 1}, floor=1.0, seed=0
    ))  # fmt: skip
    account = worst.settings["worst_case"]
    assert [m["ran"] for m in account["members"]] == [True, False, False]
    assert account["stopped_early"] and account["winner"] == "SA2"


def test_cancelling_stops_the_running_member_and_leaves_the_rest_out(case):
    model, card, image, labels = case
    worst = drive(
        iter_worst_case(model, card, image, labels, members=MEMBERS, options={"steps": 3}),
        lambda event: False,
    )
    assert worst.cancelled
    assert [m["ran"] for m in worst.settings["worst_case"]["members"]] == [True, False, False]


@pytest.mark.parametrize(
    "members,options,match",
    [
        ((), None, "at least one attack"),
        ((Member("pgdd"),), None, "attack must be one of"),
        (
            (Member("pgd"),),
            {"q_max": 20},
            r"no attack of the worst case takes option\(s\) \['q_max'\]",
        ),
    ],
)
def test_bad_ensembles_are_one_line_errors(case, members, options, match):
    model, card, image, labels = case
    with pytest.raises(ValueError, match=match):
        drive(iter_worst_case(model, card, image, labels, members=members, options=options))


def test_the_default_ensemble_is_the_issue_s_and_cheapest_first():
    assert [m.attack for m in WORST_CASE] == ["sa2", "pgd", "segpgd", "cospgd", "vafa"]
    assert is_worst_case("worst-case") and is_worst_case("Worst_Case") and not is_worst_case("vafa")
