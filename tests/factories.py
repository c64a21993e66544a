"""The one factory of tiny models for the tests: a 3-class MONAI UNet (or any preset) shrunk
to a few hundred parameters, its card, and a saved checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vafa.io.checkpoints import save_model
from vafa.io.models import ModelCard, build_model

CLASSES = ["background", "organ", "lesion"]


def tiny_card(
    preset: str = "unet",
    *,
    out_channels: int = 3,
    class_names: list[str] | None = None,
    roi: int = 16,
    channels=(4, 8),
    strides=(2,),
    kwargs: dict[str, Any] | None = None,
    spacing=None,
    orientation=None,
    **overrides,
) -> ModelCard:
    """The card of a tiny ``preset`` network (16³ tiles by default, no resampling)."""
    if class_names is None:
        class_names = (
            CLASSES
            if out_channels == 3
            else ["background", *(f"organ {i}" for i in range(1, out_channels))]
        )
    if kwargs is None:
        kwargs = {"channels": list(channels), "strides": list(strides), "num_res_units": 0}
    return ModelCard.from_preset(
        preset,
        out_channels=out_channels,
        class_names=list(class_names),
        roi_size=(roi,) * 3,
        spacing=spacing,
        orientation=orientation,
        kwargs=kwargs,
        **overrides,
    )


def tiny_model(card: ModelCard, seed: int = 0):
    """The network of ``card`` with weights drawn from ``seed`` (train mode)."""
    torch.manual_seed(seed)
    return build_model(card)


def save_tiny_model(path: Path, seed: int = 0, card: ModelCard | None = None) -> Path:
    """Save a tiny model (eval mode) and its card at ``path``."""
    card = tiny_card() if card is None else card
    save_model(tiny_model(card, seed).eval(), card, path)
    return path
