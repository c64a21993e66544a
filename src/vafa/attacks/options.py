"""The declarative option schema of the attacks.

Every attack class lists its user-facing hyper-parameters as :class:`Option` s (class attribute
``options``). Each option says once what it is — keyword, type, default, bounds or choices,
unit, one-sentence help, GUI label and widget hint — and everything that offers attack settings
is generated from it:

* the ``vafa`` command line flags (:func:`vafa.cli.options.add_attack_arguments`), their help
  texts and defaults;
* the controls of both napari widgets, their tooltips and which of them each attack or training
  mode shows (``napari_vafa._attack_controls``);
* the construction of the attacks: :class:`vafa.attacks.base.Attack` takes every option as a
  keyword, checks it once (:func:`validate_options`, :meth:`Option.check`), fills in the
  schema's default for the others and sets them as attributes; its ``settings()`` (what
  results and reports record) lists them; ``inspect.signature`` and the class docstring show
  them.

Adding an option to an attack = one :class:`Option` in its ``options``; see
``docs/adding_an_attack.md`` for a whole attack.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any

from vafa.ops.bands import BANDS
from vafa.ops.checks import is_finite
from vafa.ops.frequency import normalize_block_size

__all__ = [
    "BANDS_OPTION",
    "BLOCK_SIZES",
    "FREE",
    "KEEP",
    "STEPS",
    "Option",
    "OptionError",
    "block_sides",
    "block_size",
    "constructor_signature",
    "option_table",
    "options_docstring",
    "validate_options",
    "with_default",
    "with_defaults",
]

#: Block sides offered by the GUIs (the paper's Table 4 range).
BLOCK_SIZES = (4, 8, 16, 32, 48, 96)


class OptionError(ValueError):
    """An invalid value of one option; ``option`` is its name (the CLI shows its flag)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def block_size(value: Any) -> Any:
    """A block size from text (``"32"``, ``"32,32,32"``, ``"8x8"``); other values unchanged
    (the attack checks them with :func:`vafa.ops.frequency.normalize_block_size`)."""
    if not isinstance(value, str):
        return value
    try:
        sides = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"block_size must be integers like 32 or 32,32,32, got {value!r}"
        ) from None
    if not sides or min(sides) < 1:
        raise ValueError(f"block_size must be positive integers like 32 or 32,32,32, got {value!r}")
    return sides[0] if len(sides) == 1 else tuple(sides)


def block_sides(value: int | Sequence[int], dims: int, attack: str) -> tuple[int, ...]:
    """The ``dims`` sides of a block (an int is a cube); ValueError naming ``attack`` if the
    number of sides is wrong."""
    try:
        sides = normalize_block_size(value, dims)
    except ValueError as err:
        raise OptionError("block_size", str(err)) from None
    if len(sides) != dims:
        raise OptionError(
            "block_size", f"block_size must have {dims} entries for {attack}, got {value!r}"
        )
    return sides


class _Free:
    """Type of :data:`FREE`."""

    def __repr__(self) -> str:
        return "FREE"


#: :attr:`Option.published` of an option the published algorithm leaves free.
FREE = _Free()


@dataclass(frozen=True)
class Option:
    """One hyper-parameter of an attack.

    Attributes:
        name: keyword of the attack's constructor.
        kind: ``int``, ``float``, ``str``, ``bool`` or a parser such as :func:`block_size`.
        default: the attack's default (None: decided by another option, e.g. ``paper``).
        help: one sentence for users (CLI help and GUI tooltip).
        label: GUI label (default: ``name``).
        unit: unit of the value for users, e.g. ``"/255"`` (shown in help texts).
        minimum, maximum: inclusive bounds of numbers (None: unbounded).
        positive: the number must be > 0.
        choices: the allowed values of a ``str`` option.
        flags: CLI flags; a ``bool`` option's first flag sets True, its second (if any) False.
            Empty: not on the command line. Default: ``--name-with-dashes``.
        widget: GUI hint: ``"slider"``, ``"spin"``, ``"combo"``, ``"check"``, ``"range"``
            (two options of the same ``group`` in one range slider), or None (not in the GUI).
        gui: widget bounds ``(min, max, step)`` for sliders and spin boxes, or the offered
            values of a ``"combo"`` over a non-``str`` option.
        group: GUI control name shared by the two options of a ``"range"`` widget.
        training: offered as a setting of the training attack in the training widget.
        published: the value the published algorithm fixes (an attack's ``paper=True``), or
            :data:`FREE` when the paper leaves it free.
    """

    name: str
    kind: Callable[[Any], Any]
    default: Any
    help: str
    label: str = ""
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None
    flags: tuple[str, ...] | None = None
    widget: str | None = None
    gui: tuple[Any, ...] | None = None
    group: str | None = None
    training: bool = False
    published: Any = FREE

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.flags is not None:
            return self.flags
        return ("--" + self.name.replace("_", "-"),)

    @property
    def control(self) -> str:
        """Name of the GUI control (shared by the options of one range group)."""
        return self.group or self.name

    @property
    def text(self) -> str:
        """The help sentence with the unit."""
        return f"{self.help} ({self.unit})" if self.unit else self.help

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type; :class:`OptionError` naming the option if
        invalid. None passes through (the attack decides the default)."""
        if value is None:
            return None
        try:
            return self._checked(value)
        except OptionError:
            raise
        except ValueError as err:
            raise OptionError(self.name, str(err)) from None

    def _checked(self, value: Any) -> Any:
        name = self.name
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"{name} must be one of {self.choices}, got {value!r}")
            return value
        if self.kind in (int, float):
            integral = self.kind is int
            if not is_finite(value) or (integral and not isinstance(value, Integral)):
                kind = "an integer" if integral else "a finite number"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
            value = self.kind(value)
            if self.positive and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{name} must be >= {self.minimum:g}, got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{name} must be <= {self.maximum:g}, got {value!r}")
            return value
        return self.kind(value)


def validate_options(
    schema: Sequence[Option], options: Mapping[str, Any], attack: str
) -> dict[str, Any]:
    """Check ``options`` against ``schema``: unknown names and invalid values are ValueErrors.

    None values are dropped (they mean "the attack's default"), so that callers can pass every
    setting they know of.
    """
    by_name = {o.name: o for o in schema}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ValueError(f"{attack} does not take option(s) {unknown}")
    return {k: by_name[k].check(v) for k, v in given.items()}


def option_table(schemas: Mapping[str, Iterable[Option]]) -> dict[str, dict[str, Option]]:
    """``{option name: {attack: Option}}`` over several attacks' schemas.

    Raises:
        ValueError: two attacks define an option of one name differently (other than in its
            default, help or GUI bounds): the CLI and the GUI share one flag/control per name.
    """
    table: dict[str, dict[str, Option]] = {}
    for attack, schema in schemas.items():
        for option in schema:
            table.setdefault(option.name, {})[attack] = option
    for name, by_attack in table.items():
        shapes = {(o.kind, o.choices, o.cli_flags, o.widget, o.group) for o in by_attack.values()}
        if len(shapes) > 1:
            raise ValueError(f"option {name!r} is defined differently by {sorted(by_attack)}")
    return table


#: Steps of the iterative attacks.
STEPS = Option(
    "steps", int, 20, "attack steps (the paper uses 20)", label="steps", minimum=1,
    widget="slider", gui=(1, 100, 1), training=True,
)  # fmt: skip
#: Which evaluated iterate an iterative attack returns.
KEEP = Option(
    "keep", str, "best",
    "which evaluated step's volume is returned: best (the highest objective) or last",
    choices=("best", "last"),
)  # fmt: skip

#: The DCT band a frequency attack changes (:mod:`vafa.ops.bands`; VAFA quantizes, SA² scales).
BANDS_OPTION = Option(
    "bands", str, "all",
    "DCT band changed: all | low | middle | high (thirds of the normalised index within a "
    "block; the other coefficients pass through unchanged)",
    label="band", choices=BANDS, widget="combo",
)  # fmt: skip


def with_default(option: Option, default: Any, **fields: Any) -> Option:
    """``option`` with another default (e.g. ``keep="last"`` for PGD) and other ``fields``."""
    return replace(option, default=default, **fields)


def with_defaults(options: Sequence[Option], **changes: dict[str, Any]) -> tuple[Option, ...]:
    """``options`` with some of their fields changed, by option name, e.g.
    ``with_defaults(VAFA_OPTIONS, block_size={"default": (32, 32)})``."""
    unknown = set(changes) - {o.name for o in options}
    if unknown:
        raise ValueError(f"no option(s) {sorted(unknown)} to change")
    return tuple(replace(o, **changes[o.name]) if o.name in changes else o for o in options)


def constructor_signature(
    init: Callable[..., Any], options: Sequence[Option], targetable: bool
) -> inspect.Signature:
    """``(model, *, <option>=<default>, …, targeted=False, seed=None, device="auto",
    clamp_inputs=False)``: an attack's constructor as users see it — the schema's options,
    then the keyword-only runtime parameters of ``init`` (the base class's ``__init__``;
    ``targeted`` only for attacks with a loss to target)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    runtime = inspect.signature(init).parameters
    parameters = [
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *(inspect.Parameter(o.name, keyword, default=o.default) for o in options),
        *(
            p
            for name, p in runtime.items()
            if p.kind is keyword and (targetable or name != "targeted")
        ),
    ]
    return inspect.Signature(parameters)


def options_docstring(options: Sequence[Option]) -> str:
    """The ``Options`` section of an attack's docstring, from its schema."""
    lines = ["    Options (keywords of the constructor, from :attr:`options`):"]
    for o in options:
        lines.append(f"        {o.name} (default {o.default!r}): {o.text}.")
    return "\n".join(lines) + "\n"
