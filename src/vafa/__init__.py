"""VAFA: volumetric adversarial frequency attacks and training for 3D segmentation.

Quick start::

    import torch, vafa
    attack = vafa.VAFA(model, q_max=20, steps=20, block_size=32)
    result = attack(images)            # images [B, C, H, W, D] in [0, 1]
    result.adversarial, result.q_tables, result.history
"""

from vafa.attacks import (
    BIM,
    FGSM,
    PGD,
    VAFA,
    VAFA2D,
    Attack,
    AttackResult,
    GaussianNoise,
    StepEvent,
    build_attack,
)
from vafa.ops.frequency import block_dct, block_idct

__version__ = "0.1.0"

__all__ = [
    "BIM",
    "FGSM",
    "PGD",
    "VAFA",
    "VAFA2D",
    "Attack",
    "AttackResult",
    "GaussianNoise",
    "StepEvent",
    "__version__",
    "block_dct",
    "block_idct",
    "build_attack",
]
