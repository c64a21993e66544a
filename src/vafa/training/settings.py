"""The settings schema of VAFT training: every training setting declared once.

Each :class:`Setting` (an attack :class:`~vafa.attacks.options.Option` with three training
fields) says once what a setting is — name, type, default, bounds, unit, one-sentence help,
GUI label and widget hint, CLI flags — and everything that offers training settings reads it:

* :class:`vafa.training.TrainingConfig` — its field defaults and its validation
  (:meth:`Setting.check`); :meth:`~vafa.training.TrainingConfig.from_settings` builds one from
  what a face holds;
* ``vafa train`` — its flags, help texts and defaults (:mod:`vafa.cli.train`);
* the napari "VAFT training" widget — its controls, tooltips and start values
  (``napari_vafa._train_controls``);
* the Slicer "VAFT fine-tune" module — its parameters (:func:`vafa.slicer.modules.train_module`).

A setting with ``flags`` is on the command line, one with a ``widget`` in both interactive faces
(napari and Slicer). The training attack's options come from the attacks' own schemas
(``Option.training``); ``attack_options`` and ``validation_attack_options`` hold them.

The interactive faces start from a named :class:`Profile`, :data:`QUICK_DEMO` (minutes on a
CPU), and say so in their UI; the library and ``vafa train`` use the settings' defaults
(:data:`DEFAULTS`, the paper's values where it gives them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vafa.attacks import ATTACKS, attack_class
from vafa.attacks.options import STEPS, Option
from vafa.training.modes import MODE_TITLES, MODES, resolve_mode

__all__ = [
    "DEFAULTS",
    "PROFILES",
    "QUICK_DEMO",
    "SETTINGS",
    "Profile",
    "Setting",
    "default",
    "flip_axes",
    "setting",
]


@dataclass(frozen=True)
class Setting(Option):
    """One training setting: an :class:`~vafa.attacks.options.Option` whose ``name`` is the
    setting's keyword (of :class:`~vafa.training.TrainingConfig` for ``home="config"``), and:

    Attributes:
        below: exclusive upper bound of a number (e.g. the warm-up fraction < 1).
        off: what None means, for a setting that may be None (e.g. ``"no clipping"``); the
            faces enter None as 0. None: the setting always has a value.
        titles: the GUI entries ``(label, value)`` of a ``"combo"`` (default: the values).
        home: where the value goes: ``"config"`` (a :class:`~vafa.training.TrainingConfig`
            field), ``"augmentation"`` (an :class:`~vafa.training.Augmentation` field) or
            ``"card"`` (the patch size: the model card's ``roi_size``).

    A ``bool`` setting's one CLI flag sets the opposite of its default (``--no-amp``).
    """

    below: float | None = None
    off: str | None = None
    titles: tuple[tuple[str, Any], ...] | None = None
    home: str = "config"

    def check(self, value: Any) -> Any:
        """``value`` converted to the setting's type; ValueError naming the setting if invalid.

        None is valid only for a setting with ``off``.
        """
        if value is None:
            if self.off is None:
                raise ValueError(f"{self.name} must be given, got None")
            return None
        value = super().check(value)
        if self.below is not None and value >= self.below:
            raise ValueError(f"{self.name} must be < {self.below:g}, got {value!r}")
        return value

    def shown(self, value: Any) -> str:
        """``value`` as users read it (None: what it means)."""
        if value is None:
            return str(self.off)
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value) or "none"
        if isinstance(value, float):
            if 0 < abs(value) < 1e-2:  # 5e-4, not 0.0005
                mantissa, exponent = f"{value:e}".split("e")
                return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
            return f"{value:g}"
        return str(value)

    def from_face(self, value: Any) -> Any:
        """A face's value (0 for None where the setting has ``off``) as the setting's."""
        if self.off is not None and (value is None or value == 0 or value == ""):
            return None
        return self.check(value)

    def to_face(self, value: Any) -> Any:
        """The setting's value as a face holds it (None as 0)."""
        return 0 if value is None and self.off is not None else value


def flip_axes(value: Any) -> tuple[int | str, ...]:
    """Flip axes from text (``"SI,AP"``, ``"0,2"``) or a sequence; the axes are checked by
    :class:`~vafa.training.Augmentation`."""
    if isinstance(value, (str, int)):
        value = str(value).split(",")
    axes = (str(a).strip() if isinstance(a, str) else a for a in value)
    return tuple(int(a) if str(a).isdigit() else str(a).upper() for a in axes if a != "")


def _attack_key(value: Any) -> str:
    """The registry name of the attack ``value`` names (aliases forgiven)."""
    try:
        cls = attack_class(value)
    except ValueError as err:
        raise ValueError(f"validation_{err}") from None
    return next(key for key, known in ATTACKS.items() if known is cls)


#: The patch sides the GUIs offer (0: the model card's roi_size).
_PATCHES = (0, 32, 48, 64, 96, 128, 160)

#: The schema: every training setting, in the order the faces show them.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "mode", resolve_mode, "vafa-fr",
        "training objective (Hanif et al., MICCAI 2023): vafa-fr = Eq. 3, Dice-CE on clean and "
        "on VAFA patches + λ × frequency consistency of the logits (Eq. 4); vafa = Dice-CE on "
        "VAFA patches only; pgd, segpgd, cospgd, sa2, fgsm, bim, gn = Dice-CE on that attack's "
        "(or noise) patches only; clean = ordinary training",
        label="mode", choices=MODES, widget="combo",
        titles=tuple((MODE_TITLES[m], m) for m in MODES),
    ),
    Setting(
        "epochs", int, 10, "epochs to train; the latest checkpoint is saved after every epoch",
        label="epochs", minimum=1, widget="spin", gui=(1, 100_000, 1),
    ),
    Setting(
        "iterations_per_epoch", int, None, "updates per epoch", label="iterations / epoch",
        minimum=1, widget="spin", gui=(0, 1_000_000, 1),
        off="one pass over the training cases: cases ÷ batch size, at least 1",
    ),
    Setting(
        "batch_size", int, 2, "random patches per update and process (paper: 3 patches of 96³)",
        label="batch size", minimum=1, widget="spin", gui=(1, 256, 1),
    ),
    Setting(
        "lr", float, 1e-4,
        "AdamW learning rate, with a linear warm-up and a cosine decay (paper: 1e-4)",
        label="learning rate", positive=True, widget="spin", gui=(1e-6, 1.0, 1e-5),
    ),
    Setting("weight_decay", float, 1e-5, "AdamW weight decay", minimum=0),
    Setting(
        "warmup", float, 0.05, "fraction of all updates with a linear warm-up of the learning rate",
        minimum=0, below=1,
    ),
    Setting("grad_clip", float, 1.0, "maximum gradient norm", positive=True, off="no clipping"),
    Setting(
        "lambda_fr", float, 1.0,
        "vafa-fr: weight λ of the frequency-consistency term L_fr in Eq. 3 (paper: 1)",
        label="λ (L_fr)", minimum=0, widget="spin", gui=(0.0, 100.0, 0.1),
    ),
    Setting(
        "val_every", int, 1,
        "validate every this many epochs and after the last: sliding-window foreground Dice, "
        "clean and under the validation attack; the best checkpoint has the highest Dice under "
        "the training attack (clean Dice in mode clean)",
        label="validate every", minimum=1, widget="spin", gui=(1, 100_000, 1),
    ),
    Setting(
        "validation_attack", _attack_key, None, "the attack of the attacked validation",
        label="validation attack", choices=tuple(ATTACKS),
        off="the mode's attack (none in mode clean)",
    ),
    Setting(
        "validation_steps", int, None,
        "steps of the validation attack: 20, the evaluation attack's, tells a hardened model from "
        "a clean fine-tune; fewer validate faster",
        label="validation attack steps", minimum=1, widget="spin", gui=(0, 1000, 1),
        off="the training attack's",
    ),
    Setting(
        "tile_batch", int, 1, "validation: tiles attacked together", minimum=1,
        flags=("--tile-batch",),
    ),
    Setting(
        "amp", bool, True,
        "mixed precision on CUDA (bfloat16 where supported, else float16 with a gradient "
        "scaler); ignored on other devices",
        flags=("--no-amp",),
    ),
    Setting(
        "seed", int, 0, "seed of patches, case order and attacks", label="seed", minimum=0,
        widget="spin", gui=(0, 2**31 - 1, 1),
    ),
    Setting(
        "patch", int, None,
        "side of the random training patches, which the new model card records as its roi_size "
        "(volumes smaller than a patch are padded; smaller patches train faster)",
        label="patch size", unit="voxels", minimum=1, flags=("--roi",), widget="combo",
        gui=_PATCHES, titles=tuple((f"{p}³" if p else "model card's", p) for p in _PATCHES),
        off="the model card's roi_size", home="card",
    ),
    Setting(
        "crop_foreground", bool, False,
        "crop every case to its image foreground (image > 0 on the model grid) once, before "
        "caching",
        home="augmentation",
    ),
    Setting(
        "flip_axes", flip_axes, (),
        "random flips: SI, AP, LR or 0,1,2, comma-separated (LR flips swap left/right organs)",
        home="augmentation",
    ),
)  # fmt: skip

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The setting called ``name``.

    Raises:
        KeyError: no such setting.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no training setting {name!r}; known: {sorted(_BY_NAME)}") from None


def default(name: str) -> Any:
    """The default of the setting ``name`` (what the library and ``vafa train`` use)."""
    return setting(name).default


@dataclass(frozen=True)
class Profile:
    """Named start values of the interactive faces, with the reason.

    Attributes:
        name: identifier (``"quick-demo"``).
        title: what the faces show (``"quick demo"``).
        reason: why these values, in one sentence.
        settings: the values that differ from the settings' defaults, by setting name.
        attack: training-attack options that differ from the attacks' defaults (e.g. steps).
    """

    name: str
    title: str
    reason: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    attack: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.settings.items():
            setting(name).check(value)

    def value(self, name: str) -> Any:
        """The profile's value of the setting ``name`` (its default where the profile is silent)."""
        return self.settings.get(name, default(name))

    @property
    def summary(self) -> str:
        """``"quick demo: epochs 2, …, attack steps 5 — <reason>"``."""
        values = [f"{name} {setting(name).shown(v)}" for name, v in self.settings.items()]
        values += [f"attack {name} {v}" for name, v in self.attack.items()]
        return f"{self.title}: {', '.join(values) or 'the defaults'} — {self.reason}"


#: The interactive faces' start values: the settings of the matched VAFT evidence
#: (docs/results.md), validated under the evaluation attack's steps (the attacks' default).
QUICK_DEMO = Profile(
    "quick-demo",
    "quick demo",
    "minutes on a CPU (7.4 min on 2 cores in the napari widget, docs/results.md): few updates "
    "of small patches with a short attack, at a learning rate above the paper's because 25–75 "
    "updates at the paper's move the weights too little to measure; validated under the "
    "evaluation attack's steps, to tell a hardened model from a clean fine-tune",
    settings={
        "epochs": 2, "iterations_per_epoch": 100, "lr": 5e-4, "patch": 64,
        "validation_steps": STEPS.default,
    },
    attack={"steps": 5},
)  # fmt: skip
#: The settings' own defaults (the library's and ``vafa train``'s).
DEFAULTS = Profile(
    "defaults",
    "defaults",
    "the library's and vafa train's: the paper's values where it gives them, for runs of hours "
    "on a GPU",
)
#: The profiles the interactive faces offer, the first being their start.
PROFILES = (QUICK_DEMO, DEFAULTS)
