"""One handle for "the model the user means": a bundled name or a weights file, with its card.

The CLI (``--model/--card/--trust-checkpoint``), the napari model picker, reports and scripts
all describe a model the same way and resolve it here, once::

    source = ModelSource("demo")                                   # a bundled model
    source = ModelSource("model_best.pt", card="unetr-btcv")       # weights + a preset's card
    model, card = source.load(device="auto")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vafa.io.checkpoints import load_model
from vafa.io.data import BUNDLED_MODELS, bundled_model_path
from vafa.io.models import ModelCard

__all__ = ["ModelSource"]


@dataclass(frozen=True)
class ModelSource:
    """A model to load.

    Attributes:
        weights: a bundled model's name (``"demo"``, ``"robust-demo"``) or a weights file
            (``.safetensors`` preferred; ``.pt/.pth/.ckpt/.bin`` read without unpickling).
        card: None (the card beside the weights, or the bundled model's own), a card file, a
            preset name (e.g. ``"unetr-btcv"``) or a :class:`~vafa.io.models.ModelCard`.
        trust: allow unpickling objects from a PyTorch file (only for trusted files).
    """

    weights: str | os.PathLike
    card: ModelCard | str | os.PathLike | None = None
    trust: bool = False

    @property
    def bundled(self) -> str | None:
        """The bundled model's name, or None for a file."""
        name = str(self.weights)
        return name if name in BUNDLED_MODELS else None

    @property
    def path(self) -> Path:
        """The weights file.

        Raises:
            FileNotFoundError: no such file (or a bundled model that is not installed).
            ValueError: a card was given with a bundled model (it has its own).
        """
        if self.bundled is not None:
            if self.card is not None:
                raise ValueError(f"a card does not go with the bundled model {self.bundled!r}")
            try:
                return bundled_model_path(self.bundled)
            except ValueError as err:
                raise FileNotFoundError(str(err)) from None
        path = Path(self.weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return path

    @property
    def name(self) -> str:
        """A short name for tables: the bundled name or the file name without suffixes."""
        if self.bundled is not None:
            return self.bundled
        path = Path(self.weights)
        return path.name.split(".")[0] or path.name

    def load(self, device: str | torch.device = "auto") -> tuple[nn.Module, ModelCard]:
        """``(model, card)``: :func:`vafa.io.checkpoints.load_model` of this source."""
        return load_model(self.path, card=self.card, device=device, trust=self.trust)
