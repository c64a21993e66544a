"""Training settings: the modes of VAFT and :class:`TrainingConfig` (validated on creation)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vafa.attacks import ATTACKS, attack_class, validate_options
from vafa.ops.checks import number, positive_int
from vafa.training.data import Augmentation

__all__ = ["ITERATIVE_ATTACKS", "MODES", "MODE_ATTACKS", "MODE_TITLES", "TrainingConfig"]

#: Training modes, see the module docstring.
MODES = ("vafa-fr", "vafa", "pgd", "segpgd", "cospgd", "sa2", "fgsm", "bim", "gn", "clean")
#: The attack that makes the adversarial samples of every mode (None: no attack).
MODE_ATTACKS: dict[str, str | None] = {
    "vafa-fr": "vafa",
    "vafa": "vafa",
    "pgd": "pgd",
    "segpgd": "segpgd",
    "cospgd": "cospgd",
    "sa2": "sa2",
    "fgsm": "fgsm",
    "bim": "bim",
    "gn": "gn",
    "clean": None,
}

#: What each mode is, in a few words (GUI lists).
MODE_TITLES = {
    "vafa-fr": "VAFA-FR (Eq. 3)",
    "vafa": "VAFA (adversarial only)",
    "pgd": "PGD",
    "segpgd": "SegPGD",
    "cospgd": "CosPGD",
    "sa2": "SA² (DCT amplitude)",
    "fgsm": "FGSM",
    "bim": "BIM",
    "gn": "GN (Gaussian noise)",
    "clean": "clean (no attack)",
}
#: Attacks whose iterate can be chosen (``keep``); training uses their last one by default.
ITERATIVE_ATTACKS = ("vafa", "pgd", "segpgd", "cospgd", "sa2", "fgsm", "bim")


# ----------------------------------------------------------------------------- settings
@dataclass
class TrainingConfig:
    """Hyper-parameters of a VAFT run (defaults follow the paper where it says).

    Attributes:
        mode: one of :data:`MODES` (default ``"vafa-fr"``).
        epochs: epochs to train (an epoch draws every training case once per process, or
            ``iterations_per_epoch`` batches).
        iterations_per_epoch: batches per epoch; None: ``ceil(cases per process / batch_size)``.
        batch_size: patches per batch and process (paper: 3 patches of 96³).
        lr: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay (1e-5).
        warmup: fraction of all iterations with a linear warm-up, then a cosine decay.
        grad_clip: maximum gradient norm (None: no clipping).
        lambda_fr: weight λ of the frequency-consistency term (``"vafa-fr"``; paper: 1).
        attack_options: options of the mode's attack (e.g. ``{"q_max": 20, "block_size": 32,
            "steps": 20}`` for VAFA, ``{"eps": 4}`` for PGD); the attack's defaults otherwise,
            except ``keep``: the samples are the attack's last iterate (``keep="last"``, the
            published VAFA and PGD samples) unless ``keep`` is given. Must be empty for
            ``"clean"``; ``seed`` and ``device`` are set by the trainer.
        val_every: validate every this many epochs (and after the last epoch).
        validation_attack: the attack of the attacked validation (a name of
            :data:`vafa.attacks.ATTACKS`); None: the mode's attack. Lets a ``"clean"`` run be
            measured under the same attack as an adversarial one (its best checkpoint is still
            chosen by clean Dice).
        validation_attack_options: its options; None: ``attack_options`` (the training
            attack's, when it is the same attack), else the attack's defaults.
        tile_batch: tiles attacked together during validation.
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with a grad
            scaler); ignored on other devices.
        seed: base seed of patches, case order and attacks.
        augmentation: the random patch transforms (:class:`vafa.training.data.Augmentation`).
    """

    mode: str = "vafa-fr"
    epochs: int = 10
    iterations_per_epoch: int | None = None
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup: float = 0.05
    grad_clip: float | None = 1.0
    lambda_fr: float = 1.0
    attack_options: dict[str, Any] = field(default_factory=dict)
    val_every: int = 1
    validation_attack: str | None = None
    validation_attack_options: dict[str, Any] | None = None
    tile_batch: int = 1
    amp: bool = True
    seed: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        self.mode = resolve_mode(self.mode)
        for name in ("epochs", "batch_size", "val_every", "tile_batch"):
            positive_int(name, getattr(self, name))
        if self.iterations_per_epoch is not None:
            positive_int("iterations_per_epoch", self.iterations_per_epoch)
        for name in ("lr", "weight_decay", "lambda_fr"):
            number(name, getattr(self, name), positive=name == "lr")
        number("warmup", self.warmup)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if self.grad_clip is not None:
            number("grad_clip", self.grad_clip, positive=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
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
    name = config.attack
    if config.validation_attack is not None:
        cls = attack_class(config.validation_attack)
        name = next(key for key, value in ATTACKS.items() if value is cls)
    options = config.validation_attack_options
    if options is None:
        options = config.attack_options if name == config.attack else {}
    elif not isinstance(options, Mapping):
        raise TypeError(f"validation_attack_options must be a dict, got {options!r}")
    if name is None:
        return None, {}
    cls = ATTACKS[name]
    checked = validate_options(cls.options, dict(options), cls.name)
    if name in ITERATIVE_ATTACKS:
        checked = {"keep": "last", **checked}
    return name, checked


def resolve_mode(mode: str) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {list(MODES)}, got {mode!r}")
    key = mode.strip().lower().replace("_", "-")
    key = {"vaft": "vafa-fr", "vafafr": "vafa-fr", "normal": "clean"}.get(key, key)
    if key not in MODES:
        close = difflib.get_close_matches(key, MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}{hint}")
    return key
