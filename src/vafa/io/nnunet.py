"""nnU-Net v2 result folders as vafa models: one fold's network, card and intensity mapping.

A result folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``; also what
TotalSegmentator downloads) holds ``dataset.json``, ``plans.json`` and ``fold_k/`` folders with
``checkpoint_final.pth`` (and ``checkpoint_best.pth``). :func:`load_nnunet` builds what
nnU-Net's predictor builds for one fold (deep supervision off): the card from the plans
(:func:`vafa.io.nnunet_plans.nnunet_card`: network, axes, spacing, roi, orientation, classes,
intensities) and the weights from the checkpoint, read without unpickling anything foreign
(:func:`vafa.io.nnunet_checkpoint.read_nnunet_checkpoint`).

Not supported (one-line error): 2D configurations, cascades, region-based training, models
with several input channels, ensembles of folds (choose one fold), test-time mirroring (off).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from vafa.io.models import ModelCard, build_model
from vafa.io.nnunet_checkpoint import read_nnunet_checkpoint
from vafa.io.nnunet_plans import nnunet_card
from vafa.io.state_dicts import load_state_strict

__all__ = ["CHECKPOINTS", "is_nnunet_folder", "load_nnunet"]

#: ``checkpoint=`` values and their files.
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}


def is_nnunet_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like an nnU-Net v2 result folder (dataset.json + plans.json)."""
    folder = Path(folder)
    return (folder / "dataset.json").is_file() and (folder / "plans.json").is_file()


def load_nnunet(
    folder: str | os.PathLike,
    *,
    fold: int | str | None = None,
    checkpoint: str | None = None,
    device: str | torch.device = "auto",
) -> tuple[nn.Module, ModelCard]:
    """One fold of an nnU-Net v2 result folder as a vafa model, and its card.

    Args:
        folder: the result folder (``dataset.json``, ``plans.json``, ``fold_k/``).
        fold: ``0``, ``1``, … or ``"all"``; default: fold 0, else the only fold present.
        checkpoint: ``"final"`` (default, ``checkpoint_final.pth``) or ``"best"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Returns:
        ``(model, card)``: a :class:`~vafa.io.wrapped.NormalizedInput` in eval mode on the
        device (``[B, 1, H, W, D]`` in [0, 1] → logits ``[B, K, H, W, D]``, what nnU-Net's
        predictor computes for one window without mirroring), and its card (architecture
        ``"nnunet"``).

    Raises:
        ValueError: not a result folder, a missing fold or checkpoint, an unreadable file,
            plans and checkpoint that disagree, an unsupported model — one line naming the file.
    """
    from vafa.ops.devices import resolve_device

    folder = Path(folder)
    path = _checkpoint_path(folder, fold, checkpoint)
    ckpt = read_nnunet_checkpoint(path)
    card = nnunet_card(folder, ckpt, path)
    dev = resolve_device(device)
    try:
        model = build_model(card)
    except ValueError as err:
        raise ValueError(f"{folder / 'plans.json'}: the network cannot be built: "
                         f"{err.__cause__ or err}") from None  # fmt: skip
    state = {f"network.{k}": v for k, v in ckpt.weights.items()}
    try:
        load_state_strict(model, state, card, f"checkpoint {path}")
    except ValueError as err:
        raise ValueError(f"plans.json/dataset.json and the checkpoint disagree: {err}") from None
    return model.to(dev).eval(), card


def _checkpoint_path(folder: Path, fold: int | str | None, checkpoint: str | None) -> Path:
    if not is_nnunet_folder(folder):
        raise ValueError(f"{folder}: not an nnU-Net result folder (no dataset.json and plans.json)")
    checkpoint = "final" if checkpoint is None else checkpoint
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {checkpoint!r}")
    folds = sorted(
        (p.name.removeprefix("fold_") for p in folder.glob("fold_*") if p.is_dir()),
        key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f),
    )
    if fold is None:
        if not folds:
            raise ValueError(f"{folder}: no fold_* folder (nothing trained here)")
        fold = "0" if "0" in folds or len(folds) > 1 else folds[0]
    fold = str(fold).strip()
    if not re.fullmatch(r"\d+|all", fold):
        raise ValueError(f"fold must be a whole number or 'all', got {fold!r}")
    fold_dir = folder / f"fold_{fold}"
    if not fold_dir.is_dir():
        there = ", ".join(folds) or "none"
        raise ValueError(f"{fold_dir}: no such fold (folds here: {there})")
    path = fold_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        there = ", ".join(sorted(p.name for p in fold_dir.glob("checkpoint_*.pth"))) or "none"
        raise ValueError(f"{path}: no such checkpoint (in {fold_dir.name}: {there})")
    return path
