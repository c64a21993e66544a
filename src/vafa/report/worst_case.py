"""The report's worst case over attacks: for every model and case, the lowest foreground Dice
among the Table 1 rows that are members of the ensemble (:data:`vafa.run.worst_case.WORST_CASE`:
same attack, same budget, the grid's steps). Nothing is re-run: the rows are already there."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vafa.report.grid import GridEntry, unique_entries
from vafa.report.results import parse_number
from vafa.run.worst_case import WORST_CASE, Member

__all__ = [
    "CaseWorst",
    "class_winners",
    "format_worst_case",
    "member_entries",
    "worst_case_markdown",
    "worst_cases",
]


@dataclass(frozen=True)
class CaseWorst:
    """One model on one case: each member's foreground Dice and the lowest.

    Attributes:
        model, case: the row's model and case names.
        clean: foreground Dice of the clean prediction.
        members: ``{entry label: Dice fg}`` of the members that ran (``ok`` rows).
        winner: label of the member with the lowest Dice (None: none has a number).
        complete: every member of the grid ran on this case.
    """

    model: str
    case: str
    clean: float | None
    members: dict[str, float | None]
    winner: str | None
    complete: bool

    @property
    def dice_fg(self) -> float | None:
        return None if self.winner is None else self.members[self.winner]


def member_entries(
    entries: Iterable[GridEntry], members: Sequence[Member] = WORST_CASE
) -> list[GridEntry]:
    """The Table 1 entries that are members of the ensemble, in the ensemble's order."""
    table1 = unique_entries(e for e in entries if e.table == "table1")
    return [e for m in members for e in table1 if m.matches(e.attack, e.options)]


def worst_cases(rows: Iterable[Mapping[str, Any]], entries: Iterable[GridEntry]) -> list[CaseWorst]:
    """:class:`CaseWorst` of every (model, case) with at least one member row, in row order."""
    members = member_entries(entries)
    labels = {e.key: e.label for e in members}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("key") not in labels or row.get("status") != "ok":
            continue
        case = found.setdefault((row["model"], row["case"]), {"clean": None, "members": {}})
        case["members"][labels[row["key"]]] = parse_number(row.get("dice_fg"))
        case["clean"] = parse_number(row.get("dice_fg_clean"))
    out = []
    for (model, case), seen in found.items():
        scored = {k: v for k, v in seen["members"].items() if v is not None and not math.isnan(v)}
        winner = min(scored, key=scored.__getitem__) if scored else None
        complete = len(seen["members"]) == len(members)
        out.append(CaseWorst(model, case, seen["clean"], seen["members"], winner, complete))
    return out


def class_winners(
    entries: Iterable[GridEntry], per_class: Mapping[str, Mapping[str, float | None]]
) -> dict[str, tuple[str, float]]:
    """Per class, the member that brought its Dice lowest on one case.

    Args:
        entries: the grid that ran.
        per_class: ``{entry key: {class name: adversarial Dice or None}}`` of the entries that
            ran (e.g. ``outcome.metrics.dice_per_class.adversarial``).

    Returns:
        ``{class name: (member label, Dice)}`` over the classes some member has a number for,
        in the classes' order.
    """
    winners: dict[str, tuple[str, float]] = {}
    for entry in member_entries(entries):
        for name, dice in per_class.get(entry.key, {}).items():
            if dice is None or math.isnan(dice):
                continue
            if name not in winners or dice < winners[name][1]:
                winners[name] = (entry.label, float(dice))
    return winners


def worst_case_markdown(
    rows: Iterable[Mapping[str, Any]], entries: Sequence[GridEntry], models: Sequence[str]
) -> str:
    """The report's "Worst case over attacks" section: a row per model (mean over cases of the
    per-case worst) and the per-case table (every member's Dice, the winner). Empty when the
    grid has no member."""
    members = member_entries(entries)
    cases = worst_cases(rows, entries)
    if not members or not cases:
        return ""
    names = [e.label for e in members]
    lines = [
        "## Worst case over attacks",
        "",
        f"Per case, the lowest foreground Dice among {', '.join(names)} (each at its own "
        "budget); single attacks overestimate robustness.",
        "",
        "| model | cases | Dice fg clean | Dice fg worst case | wins |",
        "|---|---|---|---|---|",
    ]
    for model in models:
        mine = [c for c in cases if c.model == model]
        if not mine:
            continue
        wins = _wins(mine)
        lines.append(
            f"| {model} | {len(mine)} | {_mean([c.clean for c in mine])} | "
            f"{_mean([c.dice_fg for c in mine])} | {wins} |"
        )
    lines += ["", "| model | case | clean | " + " | ".join(names) + " | worst | by |"]
    lines.append("|" + "---|" * (len(names) + 5))
    for c in cases:
        cells = [_fmt(c.members.get(n)) for n in names]
        mark = "" if c.complete else " (incomplete)"
        lines.append(
            f"| {c.model} | {c.case} | {_fmt(c.clean)} | " + " | ".join(cells)
            + f" | {_fmt(c.dice_fg)} | {c.winner or '–'}{mark} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def format_worst_case(account: Mapping[str, Any]) -> str:
    """A few lines for a terminal: every member's fg Dice and which won, from an outcome's
    ``settings["worst_case"]`` (:meth:`vafa.run.worst_case.WorstCase.to_dict`)."""
    members = account["members"]
    lines = [
        f"worst case over {', '.join(m['attack'] for m in members)} (clean fg Dice "
        f"{_fmt(account.get('clean_dice_fg'))}): {account['winner']} is the lowest"
    ]
    width = max(len(m["attack"]) for m in members)
    for m in members:
        if not m["ran"]:
            text = f"not run (a member reached the floor {account['floor']:g})"
        else:
            text = f"fg Dice {_fmt(m['dice_fg'])}"
            text += "  <- worst" if m["attack"] == account["winner"] else ""
        lines.append(f"  {m['attack']:<{width}}  {text}")
    return "\n".join(lines)


def _wins(cases: Sequence[CaseWorst]) -> str:
    counts: dict[str, int] = {}
    for c in cases:
        if c.winner is not None:
            counts[c.winner] = counts.get(c.winner, 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _mean(values: Sequence[float | None]) -> str:
    numbers = [v for v in values if v is not None and not math.isnan(v)]
    return _fmt(sum(numbers) / len(numbers)) if numbers else "–"
