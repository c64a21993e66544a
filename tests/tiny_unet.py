"""The tiny 3-class UNet shared by the CLI, report and training tests (16³ tiles, random
weights, a few hundred parameters)."""

from __future__ import annotations

from pathlib import Path

import torch

from vafa.io.checkpoints import save_model
from vafa.io.models import ModelCard, build_model

CLASSES = ["background", "organ", "lesion"]


def tiny_card(channels=(4, 8), strides=(2,)) -> ModelCard:
    return ModelCard.from_preset(
        "unet",
        out_channels=3,
        class_names=CLASSES,
        roi_size=(16, 16, 16),
        spacing=None,
        orientation=None,
        kwargs={"channels": list(channels), "strides": list(strides), "num_res_units": 0},
    )


def tiny_model(card: ModelCard, seed: int = 0):
    """The network of ``card`` with weights drawn from ``seed`` (train mode)."""
    torch.manual_seed(seed)
    return build_model(card)


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save a :func:`tiny_card` model (eval mode) and its card at ``path``."""
    card = tiny_card()
    save_model(tiny_model(card, seed).eval(), card, path)
    return path
