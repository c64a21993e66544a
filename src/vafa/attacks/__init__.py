"""All attacks share one API: ``Attack(model, **hyper_parameters).attack(images, labels)``."""

from vafa.attacks.base import Attack, AttackResult, Callback, StepEvent, drive
from vafa.attacks.vafa import NORMALIZE_MODES, Q_INIT_MODES, VAFA, VAFA2D
from vafa.attacks.voxel import BIM, FGSM, PGD, GaussianNoise

__all__ = [
    "ATTACKS",
    "BIM",
    "FGSM",
    "NORMALIZE_MODES",
    "PGD",
    "Q_INIT_MODES",
    "VAFA",
    "VAFA2D",
    "Attack",
    "AttackResult",
    "Callback",
    "GaussianNoise",
    "StepEvent",
    "build_attack",
    "drive",
]

ATTACKS: dict[str, type[Attack]] = {
    "vafa": VAFA,
    "vafa2d": VAFA2D,
    "pgd": PGD,
    "fgsm": FGSM,
    "bim": BIM,
    "gn": GaussianNoise,
}


def build_attack(name: str, model, **options) -> Attack:
    """Build an attack by name (``vafa``, ``vafa2d``, ``pgd``, ``fgsm``, ``bim``, ``gn``).

    Options that the chosen attack does not take are ignored only when they are None, so that
    CLI and GUI code can pass one dict of settings; any other unknown option is an error.
    """
    import difflib
    import inspect

    key = name.lower().replace("-", "").replace("_", "")
    if key not in ATTACKS:
        hint = difflib.get_close_matches(key, ATTACKS, n=1)
        extra = f" — did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}{extra}")
    cls = ATTACKS[key]
    accepted = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        accepted |= set(inspect.signature(klass.__init__).parameters)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"{cls.name} does not take option(s) {unknown}")
    return cls(model, **options)
