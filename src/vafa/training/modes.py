"""The modes of VAFT training: what each mode trains on and which attack makes its samples.

See :mod:`vafa.training` for the objective of every mode.
"""

from __future__ import annotations

from vafa.ops.messages import did_you_mean

__all__ = ["ITERATIVE_ATTACKS", "MODES", "MODE_ATTACKS", "MODE_TITLES", "resolve_mode"]

#: Training modes, see :mod:`vafa.training`.
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


def resolve_mode(mode: str) -> str:
    """The mode ``mode`` names (case, ``_`` and the aliases ``vaft``/``normal`` forgiven).

    Raises:
        TypeError: not a string.
        ValueError: no such mode (with the closest one).
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {list(MODES)}, got {mode!r}")
    key = mode.strip().lower().replace("_", "-")
    key = {"vaft": "vafa-fr", "vafafr": "vafa-fr", "normal": "clean"}.get(key, key)
    if key not in MODES:
        hint = did_you_mean(key, MODES, cutoff=0.6)
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}{hint}")
    return key
