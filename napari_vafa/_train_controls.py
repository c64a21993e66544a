"""The training settings of the "VAFT training" widget, generated from the training schema
(:mod:`vafa.training.settings`), and the profile they start from.

:class:`TrainingControls` makes a ``profile`` combo (:data:`vafa.training.settings.PROFILES`:
"quick demo" first, then the library's "defaults") and one magicgui control per setting the
schema offers in the GUIs (``widget`` set) — widget kind, bounds, label, start value and
tooltip all come from the schema, the start value from the chosen profile. A host widget places
them in its form (as with :class:`napari_vafa._attack_controls.AttackControls`). A setting whose
``off`` says what None means is entered as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox

__all__ = ["TrainingControls"]


class TrainingControls:
    """The profile combo and the controls of the GUI settings of the training schema.

    Args:
        notes: widget-specific sentences appended to a setting's tooltip, by setting name.

    Attributes:
        profile: combo of the profiles (value: the profile's ``name``); choosing one sets every
            setting control to its values (the host sets the attack controls it names).
        controls: ``{setting name: magicgui widget}``, in schema order.
        names: the setting names, in schema order.
    """

    def __init__(self, notes: Mapping[str, str] | None = None) -> None:
        from vafa.training.settings import PROFILES, SETTINGS

        notes = dict(notes or {})
        start = PROFILES[0]
        self.profile = ComboBox(
            label="profile", choices=[(p.title, p.name) for p in PROFILES], value=start.name
        )
        self.profile.tooltip = "Start values of the settings below. " + " ".join(
            f"{p.summary[0].upper()}{p.summary[1:]}." for p in PROFILES
        )
        self.controls: dict[str, Any] = {}
        for setting in (s for s in SETTINGS if s.widget):
            control = _make(setting, setting.to_face(start.value(setting.name)))
            control.tooltip = " ".join(filter(None, [_tooltip(setting), notes.get(setting.name)]))
            self.controls[setting.name] = control
        self.names = tuple(self.controls)
        self.profile.changed.connect(self._apply)

    @property
    def widgets(self) -> tuple[Any, ...]:
        """The profile combo, then the controls in :attr:`names` order."""
        return (self.profile, *self.controls.values())

    @property
    def chosen(self):
        """The chosen :class:`~vafa.training.settings.Profile`."""
        from vafa.training.settings import PROFILES

        return next(p for p in PROFILES if p.name == self.profile.value)

    def values(self) -> dict[str, Any]:
        """The controls' values by setting name, as plain Python values (0: None where the
        setting has ``off``; :meth:`vafa.training.TrainingConfig.from_settings` reads them)."""
        from vafa.training.settings import setting

        out = {}
        for name, control in self.controls.items():
            value = control.value
            kind = setting(name).kind
            out[name] = kind(value) if kind in (int, float) else value
        return out

    def _apply(self, *_: Any) -> None:
        from vafa.training.settings import setting

        profile = self.chosen
        for name, control in self.controls.items():
            control.value = setting(name).to_face(profile.value(name))


def _tooltip(setting) -> str:
    text = f"{setting.text[0].upper()}{setting.text[1:]}."
    return text + (f" 0: {setting.off}." if setting.off is not None else "")


def _make(setting, value: Any) -> Any:
    """The magicgui widget of ``setting``, starting at ``value``."""
    label = setting.label or setting.name
    if setting.widget == "combo":
        choices = setting.titles or setting.choices or setting.gui
        return ComboBox(label=label, choices=choices, value=value)
    lo, hi, step = setting.gui
    if setting.kind is int:
        return SpinBox(label=label, min=lo, max=hi, step=step, value=value)
    control = FloatSpinBox(label=label, step=step)
    control.native.setDecimals(max(2, -math.floor(math.log10(min(lo or step, step)))))
    control.min, control.max, control.value = lo, hi, value  # after the decimals: not rounded
    return control
