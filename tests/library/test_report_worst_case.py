"""The report's worst case over attacks, against a naive minimum over the member rows."""

from __future__ import annotations

import random

import pytest

from vafa.report.grid import report_grid, table1_grid
from vafa.report.worst_case import (
    class_winners,
    member_entries,
    worst_case_markdown,
    worst_cases,
)


def _rows(entries, models=("demo", "robust"), cases=("c1", "c2", "c3"), seed=0):
    rng = random.Random(seed)
    rows = []
    for model in models:
        for case in cases:
            for entry in entries:
                rows.append({
                    "model": model, "case": case, "key": entry.key, "status": "ok",
                    "dice_fg": f"{rng.uniform(0.2, 0.9):.6f}", "dice_fg_clean": "0.9",
                })  # fmt: skip
    return rows


@pytest.mark.parametrize("quick", [True, False])
def test_members_are_the_table1_rows_of_the_ensemble(quick):
    members = member_entries(report_grid(quick=quick))
    assert [e.label for e in members] == ["SA2 ρ=0.2, 8³", "PGD ε=4", "SegPGD ε=4", "CosPGD ε=4",
                                          "VAFA q_max=20"]  # fmt: skip


def test_worst_case_is_the_minimum_over_the_members_only():
    entries = table1_grid(quick=True)
    rows = _rows(entries)
    rows[3]["status"] = "failed"  # a failed row never counts
    member_keys = {e.key: e.label for e in member_entries(entries)}
    found = {(c.model, c.case): c for c in worst_cases(rows, entries)}
    assert len(found) == 6
    for (model, case), worst in found.items():
        mine = [r for r in rows if r["model"] == model and r["case"] == case
                and r["key"] in member_keys and r["status"] == "ok"]  # fmt: skip
        lowest = min(mine, key=lambda r: float(r["dice_fg"]))
        assert worst.dice_fg == pytest.approx(float(lowest["dice_fg"]))
        assert worst.winner == member_keys[lowest["key"]]
        assert worst.complete == (len(mine) == 5)


def test_the_markdown_section_has_a_row_per_model_and_a_row_per_case():
    entries = table1_grid(quick=True)
    rows = _rows(entries)
    text = worst_case_markdown(rows, entries, ["demo", "robust"])
    assert text.startswith("## Worst case over attacks")
    cases = worst_cases(rows, entries)
    mean = sum(c.dice_fg for c in cases if c.model == "robust") / 3
    assert f"| robust | 3 | 0.900 | {mean:.3f} |" in text
    assert sum(line.startswith("| demo | c") for line in text.splitlines()) == 3
    assert worst_case_markdown(rows, [e for e in entries if e.attack == "gn"], ["demo"]) == ""


def test_class_winners_take_the_lowest_member_per_class():
    entries = table1_grid(quick=True)
    members = member_entries(entries)
    gn = next(e for e in entries if e.attack == "gn")  # not a member: never wins
    per_class = {
        members[0].key: {"spleen": 0.5, "liver": 0.9, "gone": None},
        members[1].key: {"spleen": 0.7, "liver": 0.2, "gone": float("nan")},
        members[4].key: {"spleen": 0.4, "liver": 0.3},
        gn.key: {"spleen": 0.0, "liver": 0.0},
    }
    assert class_winners(entries, per_class) == {
        "spleen": (members[4].label, 0.4),
        "liver": (members[1].label, 0.2),
    }
