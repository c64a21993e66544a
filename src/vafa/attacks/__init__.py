"""All attacks share one API: ``Attack(model, **hyper_parameters).attack(images, labels)``."""

import difflib
import inspect

from vafa.attacks.base import Attack, AttackResult, Callback, StepEvent, drive
from vafa.attacks.options import Option, validate_options
from vafa.attacks.sa2 import SA2
from vafa.attacks.segmentation import CosPGD, SegPGD
from vafa.attacks.vafa import NORMALIZE_MODES, Q_INIT_MODES, VAFA, VAFA2D
from vafa.attacks.voxel import BIM, FGSM, PGD, GaussianNoise

__all__ = [
    "ATTACKS",
    "BIM",
    "FGSM",
    "NORMALIZE_MODES",
    "PGD",
    "Q_INIT_MODES",
    "RUNTIME_KEYWORDS",
    "SA2",
    "VAFA",
    "VAFA2D",
    "Attack",
    "AttackResult",
    "Callback",
    "CosPGD",
    "GaussianNoise",
    "Option",
    "SegPGD",
    "StepEvent",
    "attack_class",
    "build_attack",
    "drive",
    "validate_options",
]

ATTACKS: dict[str, type[Attack]] = {
    "vafa": VAFA,
    "vafa2d": VAFA2D,
    "pgd": PGD,
    "segpgd": SegPGD,
    "cospgd": CosPGD,
    "sa2": SA2,
    "fgsm": FGSM,
    "bim": BIM,
    "gn": GaussianNoise,
}


#: Keywords of every attack that are about how it runs, not what it does (not in the schemas).
RUNTIME_KEYWORDS = tuple(
    name
    for name, parameter in inspect.signature(Attack.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


def build_attack(name: str, model, **options) -> Attack:
    """Build an attack by name (a key of :data:`ATTACKS`: ``vafa``, ``vafa2d``, ``pgd``, ``sa2``, …).

    ``options`` are checked against the attack's schema (:attr:`Attack.options`, see
    :mod:`vafa.attacks.options`) plus :data:`RUNTIME_KEYWORDS`. None values mean "the
    attack's default" and are dropped, so that CLI and GUI code can pass one dict of settings;
    any other option the attack does not take is an error.
    """
    return attack_class(name)(model, **{k: v for k, v in options.items() if v is not None})


def attack_class(name: str) -> type[Attack]:
    """The attack class registered as ``name`` (case, ``-`` and ``_`` ignored)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in ATTACKS:
        hint = difflib.get_close_matches(key, ATTACKS, n=1)
        extra = f" — did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}{extra}")
    return ATTACKS[key]
