"""One handle for "the model the user means": a bundled name, a weights file with its card, or
a model folder (a MONAI bundle or an nnU-Net v2 result folder).

The CLI (``--model/--card/--trust-checkpoint/--fold/--checkpoint``), the napari model picker,
the Slicer modules, reports and scripts all describe a model the same way and resolve it here,
once::

    source = ModelSource("demo")                                   # a bundled model
    source = ModelSource("model_best.pt", card="unetr-btcv")       # weights + a preset's card
    source = ModelSource("spleen_ct_segmentation")                 # a MONAI bundle
    source = ModelSource("Dataset291_…/nnUNetTrainer__nnUNetPlans__3d_fullres", fold=0)
    model, card = source.load(device="auto")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vafa.io.checkpoints import load_model, resolve_card
from vafa.io.data import BUNDLED_MODELS, bundled_model_path
from vafa.io.models import ModelCard

__all__ = ["SOURCE_HELP", "ModelSource"]

#: What users are told about each part of a model source, one sentence each, by the faces'
#: names: ``model`` (the CLI's ``--model``: any source), ``weights`` (a weights file),
#: ``model_folder`` (a model folder), ``card``, ``fold`` and ``checkpoint`` (an nnU-Net result
#: folder's). The CLI's model flags and the Slicer modules' "Model" group are made from it.
SOURCE_HELP = {
    "model": (
        "weights (.safetensors, .pt), a bundled model ("
        + ", ".join(repr(name) for name in BUNDLED_MODELS)
        + "), or a model folder: a MONAI bundle or an nnU-Net v2 result folder"
    ),
    "weights": "checkpoint (.safetensors preferred; .pt read without unpickling)",
    "model_folder": (
        "a MONAI bundle (configs/, models/model.pt) or an nnU-Net v2 result folder "
        "(dataset.json, plans.json, fold_k/); it describes its own network, preprocessing and "
        "classes"
    ),
    "card": (
        "model card JSON, or a preset name such as unetr-btcv (default: <weights>.json beside "
        "the weights)"
    ),
    "fold": (
        "nnU-Net result folder: the fold, 0… or 'all', or several (0,1: their ensemble, the "
        "mean of their logits as nnU-Net) (default: 0, or the only one)"
    ),
    "checkpoint": ("nnU-Net result folder: checkpoint_final.pth (default) or checkpoint_best.pth"),
}


@dataclass(frozen=True)
class ModelSource:
    """A model to load.

    Attributes:
        weights: a bundled model's name (``"demo"``, ``"robust-demo"``), a weights file
            (``.safetensors`` preferred; ``.pt/.pth/.ckpt/.bin`` read without unpickling), or a
            model folder: a MONAI bundle or an nnU-Net v2 result folder.
        card: None (the card beside the weights, or the bundled model's or folder's own), a
            card file, a preset name (e.g. ``"unetr-btcv"``) or a
            :class:`~vafa.io.models.ModelCard`.
        trust: allow unpickling objects from a PyTorch file (only for trusted files); for a
            MONAI bundle, also let MONAI evaluate its Python expressions.
        fold: nnU-Net folders: the fold (``0``…, ``"all"``); None: fold 0 or the only one.
        checkpoint: nnU-Net folders: ``"final"`` (None) or ``"best"``.
    """

    weights: str | os.PathLike
    card: ModelCard | str | os.PathLike | None = None
    trust: bool = False
    fold: int | str | None = None
    checkpoint: str | None = None

    @property
    def bundled(self) -> str | None:
        """The bundled model's name, or None for a file."""
        name = str(self.weights)
        return name if name in BUNDLED_MODELS else None

    @property
    def kind(self) -> str:
        """``"bundled"``, ``"file"``, ``"monai-bundle"`` or ``"nnunet"`` (see :attr:`path`)."""
        if self.bundled is not None:
            return "bundled"
        from vafa.io.model_folders import model_folder_kind

        return model_folder_kind(self.weights) or "file"

    @property
    def path(self) -> Path:
        """The weights file, or the model folder.

        Raises:
            FileNotFoundError: no such file or folder (or a bundled model that is not
                installed).
            ValueError: a card was given with a bundled model or a model folder (they have
                their own), a folder that is neither a MONAI bundle nor an nnU-Net result
                folder, or fold/checkpoint with something other than an nnU-Net folder.
        """
        kind = self.kind
        if kind != "nnunet" and (self.fold is not None or self.checkpoint is not None):
            raise ValueError(
                f"fold and checkpoint are for nnU-Net result folders, not {self.weights}"
            )
        if self.bundled is not None:
            if self.card is not None:
                raise ValueError(f"a card does not go with the bundled model {self.bundled!r}")
            try:
                return bundled_model_path(self.bundled)
            except ValueError as err:
                raise FileNotFoundError(str(err)) from None
        path = Path(self.weights)
        if path.is_dir():
            if kind == "file":
                from vafa.io.model_folders import not_a_model_folder

                raise not_a_model_folder(path)
            if self.card is not None:
                raise ValueError(
                    f"a card does not go with the model folder {path} (it has its own)"
                )
            return path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return path

    @property
    def name(self) -> str:
        """A short name for tables: the bundled name, the file name without suffixes, or the
        folder's name."""
        if self.bundled is not None:
            return self.bundled
        path = Path(self.weights)
        if path.is_dir():
            return path.resolve().name
        return path.name.split(".")[0] or path.name

    def known_card(self) -> ModelCard | None:
        """The card, read without loading any weights: a bundled model's or a weights file's
        (given, or beside the file), a MONAI bundle's from its configs; None for an nnU-Net
        folder (its card needs a checkpoint's settings).

        Raises:
            FileNotFoundError, ValueError: as :attr:`path`, or no card beside a weights file.
        """
        path, kind = self.path, self.kind
        if kind == "nnunet":
            return None
        if kind == "monai-bundle":
            from vafa.io.bundles import bundle_card

            return bundle_card(path, trust=self.trust)
        return resolve_card(path, self.card)

    def load(self, device: str | torch.device = "auto") -> tuple[nn.Module, ModelCard]:
        """``(model, card)``: :func:`vafa.io.checkpoints.load_model` of this source."""
        return load_model(
            self.path,
            card=self.card,
            device=device,
            trust=self.trust,
            fold=self.fold,
            checkpoint=self.checkpoint,
        )
