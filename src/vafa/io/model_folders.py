"""Model folders: a MONAI bundle or an nnU-Net v2 result folder, recognised and loaded.

``--model FOLDER`` (CLI, Slicer, napari, :func:`vafa.io.checkpoints.load_model`) lands here.
Both kinds describe their own network, card and intensity mapping
(:mod:`vafa.io.bundles`, :mod:`vafa.io.nnunet`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from vafa.io.models import ModelCard

__all__ = ["FOLDER_KINDS", "load_model_folder", "model_folder_kind", "not_a_model_folder"]

#: What :func:`model_folder_kind` recognises.
FOLDER_KINDS = ("monai-bundle", "nnunet")


def model_folder_kind(path: str | os.PathLike) -> str | None:
    """``"monai-bundle"``, ``"nnunet"``, or None (not a folder, or neither kind)."""
    from vafa.io.bundles import is_monai_bundle
    from vafa.io.nnunet import is_nnunet_folder

    path = Path(path)
    if not path.is_dir():
        return None
    if is_nnunet_folder(path):
        return "nnunet"
    if is_monai_bundle(path):
        return "monai-bundle"
    return None


def not_a_model_folder(path: str | os.PathLike) -> ValueError:
    """The error for a folder that is neither kind, pointing at model folders inside it."""
    path = Path(path)
    inside = sorted(p.name for p in path.iterdir() if p.is_dir() and model_folder_kind(p))
    hint = f"; model folders inside it: {', '.join(inside[:5])}" if inside else ""
    return ValueError(
        f"{path}: neither a MONAI bundle (configs/inference.json, models/model.pt) nor an "
        f"nnU-Net v2 result folder (dataset.json, plans.json, fold_k/checkpoint_final.pth){hint}"
    )


def load_model_folder(
    path: str | os.PathLike,
    *,
    fold: int | str | None = None,
    checkpoint: str | None = None,
    device: str | torch.device = "auto",
    trust: bool = False,
) -> tuple[nn.Module, ModelCard]:
    """``(model, card)`` of a model folder (see :func:`vafa.io.checkpoints.load_model`).

    Raises:
        ValueError: neither kind, ``fold``/``checkpoint`` given for a bundle, or what the
            kind's loader reports (one line naming the file).
    """
    kind = model_folder_kind(path)
    if kind == "nnunet":
        from vafa.io.nnunet import load_nnunet

        return load_nnunet(path, fold=fold, checkpoint=checkpoint, device=device)
    if kind == "monai-bundle":
        if fold is not None or checkpoint is not None:
            raise ValueError(f"fold and checkpoint are for nnU-Net result folders, not {path}")
        from vafa.io.bundles import load_bundle

        return load_bundle(path, device=device, trust=trust)
    raise not_a_model_folder(path)
