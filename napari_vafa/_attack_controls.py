"""The attack settings of both dock widgets, generated from the attacks' option schemas
(:mod:`vafa.attacks.options`).

:class:`AttackControls` makes one magicgui control per option (or per ``"range"`` group, e.g.
``q_range`` for ``q_min``/``q_max``) of the given attacks — widget kind, bounds, label, default
and tooltip all come from the schema — which a host widget places in its own form (as with
:class:`napari_vafa._model_picker.ModelPicker`). It says which controls an attack uses and turns
their values into that attack's options. A new attack with a schema appears here unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatRangeSlider,
    FloatSlider,
    FloatSpinBox,
    Slider,
    SpinBox,
)

__all__ = ["AttackControls"]


class AttackControls:
    """The controls of the attack options of ``attacks``.

    Args:
        attacks: registry names (:data:`vafa.attacks.ATTACKS`) whose options are offered.
        training: only the options marked ``training`` (settings of a training attack).
        defaults: start values that differ from the schema's, by option name.
        labels: labels that differ from the schema's, by control name.

    Attributes:
        names: the control names, in schema order.
        controls: ``{name: magicgui widget}``.
    """

    def __init__(
        self,
        attacks: Sequence[str],
        *,
        training: bool = False,
        defaults: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        from vafa.attacks import ATTACKS
        from vafa.attacks.options import option_table

        defaults, labels = dict(defaults or {}), dict(labels or {})
        self._schemas = {
            name: tuple(
                o for o in ATTACKS[name].options if o.widget and (o.training or not training)
            )
            for name in attacks
        }
        self.controls: dict[str, Any] = {}
        self._overrides = defaults
        self._users: dict[str, str] = {}  # option name → the attack whose value it holds
        table = option_table(self._schemas)
        for by_attack in table.values():
            option = next(iter(by_attack.values()))
            if option.control in self.controls:
                continue  # the second option of a range group
            group = [o for o in (next(iter(b.values())) for b in table.values())
                     if o.control == option.control]  # fmt: skip
            control = _make(option, group, self._start_value)
            control.label = labels.get(option.control, control.label)
            control.tooltip = " ".join(o.text[0].upper() + o.text[1:] + "." for o in group)
            self.controls[option.control] = control
            for o in group:  # the control starts with the first taker's default
                self._users[o.name] = next(iter(table[o.name]))
        self.names = tuple(self.controls)

    @property
    def widgets(self) -> tuple[Any, ...]:
        """The controls, in :attr:`names` order."""
        return tuple(self.controls.values())

    def shown(self, attack: str | None) -> set[str]:
        """The control names ``attack`` uses (none for None)."""
        return {o.control for o in self._schemas.get(attack, ())} if attack else set()

    def options(self, attack: str | None) -> dict[str, Any]:
        """The options of ``attack`` from the controls' current values."""
        out: dict[str, Any] = {}
        for option in self._schemas.get(attack, ()) if attack else ():
            value = self.controls[option.control].value
            if option.widget == "range":
                low, high = (float(v) for v in value)
                group = [o.name for o in self._schemas[attack] if o.control == option.control]
                value = low if option.name == group[0] else high
            out[option.name] = option.check(_plain(value, option))
        return out

    def switch(self, attack: str | None) -> None:
        """Show ``attack``'s settings: a shared control last used by an attack with another
        default for it takes ``attack``'s default (e.g. VAFA's SSIM term: on in 3D, off in 2D);
        the user's other values stay."""
        for option in self._schemas.get(attack, ()) if attack else ():
            previous = self._users.get(option.name)
            if previous is not None and previous != attack and option.widget != "range":
                before = {o.name: o.default for o in self._schemas[previous]}
                if before[option.name] != option.default:
                    self.controls[option.control].value = self._start_value(option)
            self._users[option.name] = attack

    def _start_value(self, option) -> Any:
        value = self._overrides.get(option.name, option.default)
        if isinstance(value, tuple) and len(set(value)) == 1:
            value = value[0]  # a cube or square block: its side
        return value


def _make(option, group, start) -> Any:
    """The magicgui widget of ``option`` (``group``: the options sharing its control)."""
    label = option.label or option.name
    lo, hi, step = option.gui if option.widget in ("slider", "spin", "range") else (0, 0, 0)
    if option.widget == "range":
        value = tuple(float(start(o)) for o in group)
        return FloatRangeSlider(label=label, min=lo, max=hi, step=step, value=value)
    if option.widget == "check":
        return CheckBox(label=label, value=bool(start(option)))
    if option.widget == "combo":
        choices = option.choices or option.gui
        return ComboBox(label=label, choices=choices, value=start(option))
    integral = option.kind is int
    kinds = {
        ("slider", True): Slider,
        ("slider", False): FloatSlider,
        ("spin", True): SpinBox,
        ("spin", False): FloatSpinBox,
    }
    widget = kinds[option.widget, integral]
    extra = {} if integral and option.widget == "slider" else {"step": step}
    return widget(label=label, min=lo, max=hi, value=start(option), **extra)


def _plain(value: Any, option) -> Any:
    """A control's value as the option's Python type."""
    if option.kind is bool:
        return bool(value)
    if option.kind is int:
        return int(value)
    if option.kind is float:
        return float(value)
    return value
