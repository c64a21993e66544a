"""The settings of a VAFT run: :class:`TrainingConfig`, validated on creation.

Its scalar fields are the ``"config"`` settings of the schema
(:data:`vafa.training.settings.SETTINGS`): their defaults and checks are read from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vafa.attacks import ATTACKS, validate_options
from vafa.training.data import Augmentation
from vafa.training.modes import ITERATIVE_ATTACKS, MODE_ATTACKS
from vafa.training.settings import SETTINGS, default, setting

__all__ = ["TrainingConfig"]

#: Fields that hold more than one setting: the attacks' options and the patch transforms.
STRUCTURED = ("attack_options", "validation_attack_options", "augmentation")


@dataclass
class TrainingConfig:
    """Hyper-parameters of a VAFT run.

    Every scalar field is a setting of :data:`vafa.training.settings.SETTINGS`, which declares
    its meaning, default, bounds and unit (``vafa train --help`` lists them): ``mode``,
    ``epochs``, ``iterations_per_epoch``, ``batch_size``, ``lr``, ``weight_decay``,
    ``warmup``, ``grad_clip``, ``lambda_fr``, ``val_every``, ``validation_attack``,
    ``validation_steps``, ``tile_batch``, ``amp``, ``seed``. The others:

    Attributes:
        attack_options: options of the mode's attack (e.g. ``{"q_max": 20, "block_size": 32,
            "steps": 20}`` for VAFA, ``{"eps": 4}`` for PGD); the attack's defaults otherwise,
            except ``keep``: the samples are the attack's last iterate (``keep="last"``, the
            published VAFA and PGD samples) unless ``keep`` is given. Must be empty for
            ``"clean"``; ``seed`` and ``device`` are set by the trainer.
        validation_attack_options: options of the validation attack; None:
            ``attack_options`` (the training attack's, when it is the same attack), else the
            attack's defaults; ``validation_steps`` replaces their ``steps``. A ``"clean"`` run
            validated under an attack still chooses its best checkpoint by clean Dice.
        augmentation: the random patch transforms (:class:`vafa.training.data.Augmentation`).

    Raises:
        ValueError, TypeError: an invalid value, in one line naming the setting.
    """

    mode: str = default("mode")
    epochs: int = default("epochs")
    iterations_per_epoch: int | None = default("iterations_per_epoch")
    batch_size: int = default("batch_size")
    lr: float = default("lr")
    weight_decay: float = default("weight_decay")
    warmup: float = default("warmup")
    grad_clip: float | None = default("grad_clip")
    lambda_fr: float = default("lambda_fr")
    attack_options: dict[str, Any] = field(default_factory=dict)
    val_every: int = default("val_every")
    validation_attack: str | None = default("validation_attack")
    validation_attack_options: dict[str, Any] | None = None
    validation_steps: int | None = default("validation_steps")
    tile_batch: int = default("tile_batch")
    amp: bool = default("amp")
    seed: int = default("seed")
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        for s in SETTINGS:
            if s.home == "config":
                setattr(self, s.name, s.check(getattr(self, s.name)))
        if not isinstance(self.augmentation, Augmentation):
            raise TypeError(
                f"augmentation must be an Augmentation, got {type(self.augmentation).__name__}"
            )
        if not isinstance(self.attack_options, Mapping):
            raise TypeError(f"attack_options must be a dict, got {self.attack_options!r}")
        self.attack_options = {k: v for k, v in self.attack_options.items() if v is not None}
        for key in ("seed", "device"):
            if key in self.attack_options:
                raise ValueError(f"attack_options must not contain {key!r}: the trainer sets it")
        if self.attack is None and self.attack_options:
            raise ValueError(
                f"attack_options must be empty in mode 'clean', got {sorted(self.attack_options)}"
            )
        if self.attack in ITERATIVE_ATTACKS:
            self.attack_options = {"keep": "last", **self.attack_options}
        self._validation = _validation(self)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **others: Any) -> TrainingConfig:
        """A config from what a face holds: ``values`` by setting name (0 for None where a
        setting has ``off``, e.g. ``grad_clip=0``), the ``"augmentation"`` settings among them;
        settings of another home (``patch``) are ignored. ``others``: the structured fields
        (``attack_options``, …).

        Raises:
            KeyError: an unknown setting name.
            ValueError, TypeError: an invalid value, naming the setting.
        """
        kwargs: dict[str, Any] = {}
        augmentation: dict[str, Any] = {}
        for name, value in values.items():
            s = setting(name)
            if s.home == "config":
                kwargs[name] = s.from_face(value)
            elif s.home == "augmentation":
                augmentation[name] = s.from_face(value)
        if augmentation:
            kwargs["augmentation"] = Augmentation(**augmentation)
        return cls(**kwargs, **others)

    @property
    def attack(self) -> str | None:
        """Name of the mode's attack (None for ``"clean"``)."""
        return MODE_ATTACKS[self.mode]

    @property
    def validation(self) -> tuple[str | None, dict[str, Any]]:
        """``(attack, options)`` of the attacked validation (None: clean validation only)."""
        return self._validation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "augmentation"}
        for key in ("attack_options", "validation_attack_options"):
            if out[key] is not None:
                out[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in out[key].items()}
        out["augmentation"] = self.augmentation.to_dict()
        return out


def _validation(config: TrainingConfig) -> tuple[str | None, dict[str, Any]]:
    """The checked ``(attack, options)`` of the attacked validation."""
    name = config.validation_attack or config.attack
    options = config.validation_attack_options
    if options is None:
        options = config.attack_options if name == config.attack else {}
    elif not isinstance(options, Mapping):
        raise TypeError(f"validation_attack_options must be a dict, got {options!r}")
    if name is None:
        return None, {}
    cls = ATTACKS[name]
    options = dict(options)
    if config.validation_steps is not None and any(o.name == "steps" for o in cls.options):
        options["steps"] = config.validation_steps
    checked = validate_options(cls.options, options, cls.name)
    if name in ITERATIVE_ATTACKS:
        checked = {"keep": "last", **checked}
    return name, checked
