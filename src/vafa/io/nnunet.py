"""nnU-Net v2 result folders as vafa models: the chosen folds' networks, card and intensities.

A result folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``; also what
TotalSegmentator downloads) holds ``dataset.json``, ``plans.json`` and ``fold_k/`` folders with
``checkpoint_final.pth`` (and ``checkpoint_best.pth``). :func:`load_nnunet` builds what
nnU-Net's predictor builds (deep supervision off): the card from the plans
(:func:`vafa.io.nnunet_plans.nnunet_card`: network, axes, spacing, roi, orientation, classes,
intensities, and ``nnUNetPredictor``'s default inference: Gaussian weights, tile step 0.5,
mirroring along the axes the trainer allows) and the weights from the checkpoints, read without
unpickling anything foreign (:func:`vafa.io.nnunet_checkpoint.read_nnunet_checkpoint`). Several
folds make one model whose logits are the mean of the folds' (as ``nnUNetPredictor`` averages
the folds' logits before the softmax).

Models with several input channels (``dataset.json`` ``channel_names``: PET + CT, T2 + ADC, …)
take one file per channel in nnU-Net's order (``case_0000.nii.gz``, ``case_0001.nii.gz``, read
with :func:`vafa.io.channels.load_image`); each channel is normalised by its own scheme
(:mod:`vafa.io.nnunet_intensity`). Not supported (one-line error): 2D configurations, cascades,
region-based training, normalisation schemes other than nnU-Net's five.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vafa.io.models import ModelCard, build_model
from vafa.io.nnunet_checkpoint import NnunetCheckpoint, read_nnunet_checkpoint
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
    fold: int | str | Sequence[int | str] | None = None,
    checkpoint: str | None = None,
    device: str | torch.device = "auto",
) -> tuple[nn.Module, ModelCard]:
    """The chosen folds of an nnU-Net v2 result folder as a vafa model, and its card.

    Args:
        folder: the result folder (``dataset.json``, ``plans.json``, ``fold_k/``).
        fold: ``0``, ``1``, … or ``"all"``, or several (``[0, 1]``, ``"0,1"``): an ensemble,
            the mean of their logits; default: fold 0, else the only fold present.
        checkpoint: ``"final"`` (default, ``checkpoint_final.pth``) or ``"best"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Returns:
        ``(model, card)``: a :class:`~vafa.io.wrapped.NormalizedInput` in eval mode on the
        device (``[B, C, H, W, D]`` in [0, 1], ``C = card.in_channels`` in the order of
        ``card.channel_names`` → logits ``[B, K, H, W, D]``, what nnU-Net's predictor computes
        for one window before mirroring), and its card (architecture ``"nnunet"``;
        ``kwargs["folds"]`` and ``provenance["folds"]`` for several folds;
        ``card.inference``: nnU-Net's default inference of this trainer).

    Raises:
        ValueError: not a result folder, a missing fold or checkpoint, an unreadable file,
            plans and checkpoint that disagree, an unsupported model — one line naming the file.
    """
    from vafa.ops.devices import resolve_device

    folder = Path(folder)
    paths = [_checkpoint_path(folder, f, checkpoint) for f in _folds(fold)]
    ckpts = [read_nnunet_checkpoint(path) for path in paths]
    card = _ensemble_card(folder, ckpts, paths)
    dev = resolve_device(device)
    try:
        model = build_model(card)
    except ValueError as err:
        raise ValueError(f"{folder / 'plans.json'}: the network cannot be built: "
                         f"{err.__cause__ or err}") from None  # fmt: skip
    prefixes = (
        ["network."] if len(paths) == 1 else [f"network.members.{i}." for i in range(len(paths))]
    )
    state = {
        p + k: v for p, ckpt in zip(prefixes, ckpts, strict=True) for k, v in ckpt.weights.items()
    }
    try:
        load_state_strict(model, state, card, f"checkpoint {', '.join(map(str, paths))}")
    except ValueError as err:
        raise ValueError(f"plans.json/dataset.json and the checkpoint disagree: {err}") from None
    return model.to(dev).eval(), card


def _folds(fold: Any) -> list[int | str | None]:
    """The folds asked for: ``[None]`` (the default fold), or one entry per fold, distinct."""
    if fold is None:
        return [None]
    parts = fold.split(",") if isinstance(fold, str) else fold
    parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]
    names = [str(p).strip() for p in parts]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"fold must name distinct folds (e.g. 0 or 0,1), got {fold!r}")
    return names


def _ensemble_card(folder: Path, ckpts: list[NnunetCheckpoint], paths: list[Path]) -> ModelCard:
    """The first fold's card (nnU-Net takes trainer, configuration and mirroring from it); for
    several folds ``kwargs["folds"]`` and the folds in the provenance."""
    cards = [nnunet_card(folder, ckpt, path) for ckpt, path in zip(ckpts, paths, strict=True)]
    for other, path in zip(cards[1:], paths[1:], strict=True):
        if other.kwargs != cards[0].kwargs or other.roi_size != cards[0].roi_size:
            raise ValueError(f"checkpoint {path} was trained with another network than "
                             f"{paths[0]}; the folds of an ensemble must share it")  # fmt: skip
    if len(cards) == 1:
        return cards[0]
    provenance = {**cards[0].provenance,
                  "checkpoint": ", ".join(f"{p.parent.name}/{p.name}" for p in paths),
                  "folds": [p.parent.name.removeprefix("fold_") for p in paths]}  # fmt: skip
    kwargs = {**cards[0].kwargs, "folds": len(cards)}
    return dataclasses.replace(cards[0], kwargs=kwargs, provenance=provenance)


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
