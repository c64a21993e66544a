"""The attack options of the command line, generated from the attacks' schemas
(:mod:`vafa.attacks.options`): one flag per option name, with its type, choices and a help text
that says which attacks take it and their defaults."""

from __future__ import annotations

import argparse
from typing import Any

from vafa.attacks import ATTACKS
from vafa.attacks.options import Option, OptionError, option_table

__all__ = ["add_attack_arguments", "add_through_argument", "attack_options", "flag_prefix"]


def _table() -> dict[str, dict[str, Option]]:
    return option_table({key: cls.options for key, cls in ATTACKS.items()})


def add_attack_arguments(
    parser: argparse.ArgumentParser,
    *,
    choose_attack: bool = True,
    worst_case: bool = False,
    through: bool = True,
    roi_help: str = "tile size, e.g. 96 or 96,96,96 (default: the card's)",
    tile_batch_help: str = "tiles attacked together (default 1)",
) -> None:
    """Add the "attack" argument group: ``--attack`` (when ``choose_attack``; with
    ``worst_case`` also ``worst-case`` and ``--floor``), every schema option of every attack,
    ``--roi``, ``--tile-batch`` and (``through``) ``--through``. Unset options stay None (the
    attack's default)."""
    from vafa.run.worst_case import DICE_FLOOR, WORST_CASE, WORST_CASE_NAME

    group = parser.add_argument_group("attack")
    if choose_attack:
        choices = (*ATTACKS, WORST_CASE_NAME) if worst_case else tuple(ATTACKS)
        text = "attack (default vafa)"
        if worst_case:
            members = ", ".join(m.name for m in WORST_CASE)
            text += (
                f"; {WORST_CASE_NAME}: per case the lowest fg Dice of {members} (cheapest "
                "first, each at its own budget; the options below apply to every member that "
                "takes them)"
            )
        group.add_argument("--attack", choices=choices, default="vafa", help=text)
    if worst_case:
        group.add_argument(
            "--floor", type=float, default=DICE_FLOOR,
            help=f"{WORST_CASE_NAME}: a case stops once a member brings its fg Dice to this or "
            f"below (default {DICE_FLOOR:g}; 0: every member runs)",
        )  # fmt: skip
    for name, by_attack in _table().items():
        option = next(iter(by_attack.values()))
        flags = option.cli_flags
        if not flags:
            continue
        text = _help(by_attack)
        if option.kind is bool:
            group.add_argument(
                flags[0], dest=name, action="store_const", const=True, default=None, help=text
            )
            if len(flags) > 1:
                group.add_argument(
                    flags[1], dest=name, action="store_const", const=False,
                    help=f"the opposite of {flags[0]}",
                )  # fmt: skip
            continue
        kind = option.kind if option.kind in (int, float) else str
        group.add_argument(
            *flags, dest=name, type=kind, choices=option.choices, default=None, help=text
        )
    group.add_argument("--roi", help=roi_help)
    group.add_argument("--tile-batch", type=int, default=1, help=tile_batch_help)
    if through:
        add_through_argument(group)


def add_through_argument(parser) -> None:
    """``--through tiles|sliding-window``: the threat model (:mod:`vafa.run.through`)."""
    from vafa.run.through import THREAT_MODELS

    parser.add_argument(
        "--through", choices=THREAT_MODELS, default="tiles",
        help="what the attacks differentiate through: tiles (default, the paper: "
        "non-overlapping tiles of the model's ROI) or sliding-window (the whole volume "
        "through the model's own overlapping sliding-window prediction, window batch by "
        "window batch)",
    )  # fmt: skip


def attack_options(args: argparse.Namespace) -> dict[str, Any]:
    """The attack options given on the command line (as parsed; unset ones left out).

    The attack checks them when it is built (:meth:`vafa.attacks.base.Attack.resolve_options`).
    """
    values = {name: getattr(args, name, None) for name in _table()}
    return {name: value for name, value in values.items() if value is not None}


def flag_prefix(err: BaseException) -> str:
    """``"--q-max: "`` when ``err`` is about one attack option that has a flag, else ``""``."""
    if isinstance(err, OptionError) and err.option in _table():
        flags = next(iter(_table()[err.option].values())).cli_flags
        if flags:
            return f"{flags[0]}: "
    return ""


def _help(by_attack: dict[str, Option]) -> str:
    """``"VAFA, VAFA-2D: <help> (<unit>; default 20)"``; defaults per attack when they differ."""
    options = list(by_attack.values())
    takers = [ATTACKS[key] for key in by_attack]
    everyone = [cls for cls in ATTACKS.values() if cls.options]
    prefix = "" if len(takers) == len(everyone) else ", ".join(c.name for c in takers) + ": "
    defaults = {_shown(o.default) for o in options}
    if len(defaults) == 1:
        default = f"default {defaults.pop()}"
    else:
        default = "default " + ", ".join(
            f"{ATTACKS[key].name} {_shown(o.default)}" for key, o in by_attack.items()
        )
    unit = f"{options[0].unit}; " if options[0].unit else ""
    return f"{prefix}{options[0].help} ({unit}{default})".replace("%", "%%")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
