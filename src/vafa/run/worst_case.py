"""The worst case over attacks, per case: what robustness in segmentation means.

A single attack overestimates robustness: for each case, the adversarial volume that counts is
the one of the strongest attack *for that case* (Croce, Singh and Hein, ECCV 2024, evaluate
segmentation models this way; ROG, MICCAI 2021, ran an AutoAttack-style ensemble on volumetric
segmentation). :func:`iter_worst_case` runs the members of an ensemble on one case, cheapest
first, keeps the outcome with the lowest foreground Dice (of the deployed sliding-window
prediction) and stops early once a member reaches :data:`DICE_FLOOR` — the way AutoAttack saves
work on points that are already broken.

Each member keeps its own perceptual budget (VAFA its q_max, PGD its ε, SA² its ρ); options
given for the whole ensemble (``steps``, ``q_max``, ``eps``…) apply to every member that takes
them.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vafa.attacks import StepEvent, attack_class
from vafa.io.models import ModelCard
from vafa.io.volume import Volume
from vafa.run.pipeline import AttackOutcome, iter_run_attack

__all__ = [
    "DICE_FLOOR",
    "WORST_CASE",
    "WORST_CASE_NAME",
    "Member",
    "MemberResult",
    "WorstCase",
    "check_members",
    "ensemble_settings",
    "is_worst_case",
    "iter_worst_case",
    "member_options",
]

#: The ``attack`` name of the ensemble (``vafa attack --attack worst-case``).
WORST_CASE_NAME = "worst-case"
#: A case stops early when a member brings its foreground Dice to this or below.
DICE_FLOOR = 0.05


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble and its own options (its budget; the attack's defaults for
    the rest)."""

    attack: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        """The attack's name in reports (``"PGD"``, ``"VAFA"``, ``"SA2"``)."""
        return attack_class(self.attack).name

    def matches(self, attack: str, options: Mapping[str, Any]) -> bool:
        """Whether a run of ``attack`` with ``options`` is this member (same attack, same
        budget), e.g. a report's grid entry."""
        return attack == self.attack and all(options.get(k) == v for k, v in self.options.items())


#: The default ensemble, cheapest first: SA² (10 steps), PGD, SegPGD, CosPGD (20 voxel steps),
#: VAFA (20 steps, DCT and SSIM each step), each with its own perceptual budget — the report's
#: Table 1 settings: SA² ρ 0.2 (8³ blocks), ε 4/255 (α 0.01), VAFA q_max 20 (32³ blocks).
WORST_CASE: tuple[Member, ...] = (
    Member("sa2", {"rho": 0.2}),
    Member("pgd", {"eps": 4}),
    Member("segpgd", {"eps": 4}),
    Member("cospgd", {"eps": 4}),
    Member("vafa", {"q_max": 20}),
)


@dataclass
class MemberResult:
    """What one member did on the case.

    Attributes:
        attack: the member's attack name (``"PGD"``).
        settings: its settings (``Attack.settings()``), or None when it did not run.
        dice_fg: foreground Dice of its adversarial prediction (None: not run, or no
            foreground in the reference).
        dice_per_class: ``{class name: Dice}`` of its adversarial prediction.
        ran: False when the case stopped before it (floor reached or cancelled).
    """

    attack: str
    settings: dict[str, Any] | None = None
    dice_fg: float | None = None
    dice_per_class: dict[str, float | None] = field(default_factory=dict)
    ran: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "ran": self.ran,
            "dice_fg": self.dice_fg,
            "dice_per_class": dict(self.dice_per_class),
            "settings": self.settings,
        }


@dataclass
class WorstCase:
    """The ensemble's account of one case: every member's Dice and which one won."""

    members: list[MemberResult]
    winner: str
    floor: float
    clean_dice_fg: float | None

    @property
    def stopped_early(self) -> bool:
        """Whether members were left out because one reached the floor."""
        return any(not m.ran for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "floor": self.floor,
            "stopped_early": self.stopped_early,
            "clean_dice_fg": self.clean_dice_fg,
            "members": [m.to_dict() for m in self.members],
        }


def member_options(member: Member, shared: Mapping[str, Any] | None) -> dict[str, Any]:
    """The member's options with the ``shared`` ones its attack takes (``shared`` wins)."""
    takes = {o.name for o in attack_class(member.attack).options}
    given = {k: v for k, v in (shared or {}).items() if k in takes and v is not None}
    return {**member.options, **given}


def check_members(members: Sequence[Member], shared: Mapping[str, Any] | None) -> None:
    """ValueError when the ensemble is empty, names an unknown attack, or a shared option is
    taken by none of its members (e.g. ``--q-max`` without VAFA in it)."""
    if not members:
        raise ValueError("the worst case needs at least one attack")
    for member in members:
        attack_class(member.attack)
    taken = {o.name for m in members for o in attack_class(m.attack).options}
    unused = sorted(k for k, v in (shared or {}).items() if v is not None and k not in taken)
    if unused:
        raise ValueError(f"no attack of the worst case takes option(s) {unused}")


def iter_worst_case(
    model,
    card: ModelCard,
    image: Volume,
    labels: Volume | None = None,
    *,
    members: Sequence[Member] = WORST_CASE,
    options: Mapping[str, Any] | None = None,
    floor: float = DICE_FLOOR,
    **run: Any,
) -> Generator[StepEvent, bool | None, AttackOutcome]:
    """Run ``members`` on one case (cheapest first) and return the outcome with the lowest
    foreground Dice, its ``worst_case`` filled.

    Args:
        model, card, image, labels: as :func:`vafa.run.pipeline.run_attack`.
        members: the ensemble (:data:`WORST_CASE`).
        options: options for every member that takes them (``{"steps": 5}``).
        floor: stop once a member's foreground Dice is at or below it (0: never stop early).
        **run: the other keywords of :func:`~vafa.run.pipeline.iter_run_attack` (``seed``,
            ``device``, ``tile_batch``, ``resample_back``, ``amp``); every member gets the same
            seed.

    Yields every member's step events (sending ``False`` cancels the running member and leaves
    the rest out). The outcome is the winner's (``settings["attack"]``: its settings), with
    ``settings["worst_case"]`` (:meth:`WorstCase.to_dict`: every member's Dice, the winner) and
    ``settings["ensemble"]`` (:func:`ensemble_settings` with the tiling's ``roi``,
    ``tile_batch`` and ``through``).
    Members whose Dice is NaN (no foreground in the reference) never win over one
    with a number.
    """
    members = tuple(members)
    check_members(members, options)
    if not (isinstance(floor, (int, float)) and 0.0 <= floor <= 1.0):
        raise ValueError(f"floor must be a Dice in [0, 1], got {floor!r}")
    results = [MemberResult(m.name) for m in members]
    best: AttackOutcome | None = None
    for member, result in zip(members, results, strict=True):
        outcome = yield from iter_run_attack(
            model, card, image, labels, attack=member.attack,
            options=member_options(member, options), **run,
        )  # fmt: skip
        metrics = outcome.metrics
        result.ran, result.settings = True, outcome.settings["attack"]
        result.dice_fg = _number(metrics.dice_fg.adversarial)
        result.dice_per_class = dict(metrics.dice_per_class.adversarial)
        if best is None or _lower(result.dice_fg, _number(best.metrics.dice_fg.adversarial)):
            best = outcome
        if outcome.cancelled or (result.dice_fg is not None and result.dice_fg <= floor):
            break
    assert best is not None  # at least one member ran
    kept = best.settings["attack"]
    account = WorstCase(results, kept["attack"], float(floor), _number(best.metrics.dice_fg.clean))
    best.settings["worst_case"] = account.to_dict()
    ensemble = ensemble_settings(model, members, options, floor, run.get("seed"))
    tiling = {k: kept.get(k) for k in ("roi", "tile_batch", "through")}
    best.settings["ensemble"] = {**ensemble, **tiling}
    return best


def ensemble_settings(
    model,
    members: Sequence[Member] = WORST_CASE,
    options: Mapping[str, Any] | None = None,
    floor: float = DICE_FLOOR,
    seed: int | None = None,
) -> dict[str, Any]:
    """What the ensemble runs: ``{"attack": "worst-case", "floor", "seed", "members": [each
    member's ``Attack.settings()``]}`` (JSON-ready; an outcome's ``settings["ensemble"]``)."""
    from vafa.attacks import build_attack

    built = [
        build_attack(m.attack, model, **member_options(m, options), seed=seed) for m in members
    ]
    return {
        "attack": WORST_CASE_NAME,
        "floor": float(floor),
        "seed": seed,
        "members": [attack.settings() for attack in built],
    }


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _lower(value: float | None, than: float | None) -> bool:
    return value is not None and (than is None or value < than)


def is_worst_case(attack: object) -> bool:
    """Whether ``attack`` names the ensemble (``"worst-case"``, any case, ``_`` or ``-``)."""
    return str(attack).strip().lower().replace("_", "-") == WORST_CASE_NAME
