"""The entry points of training: :func:`iter_train` (a generator, for GUI workers) and
:func:`train` (drives it with a callback)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vafa.attacks.base import drive
from vafa.io.models import ModelCard
from vafa.training.config import TrainingConfig
from vafa.training.events import TrainingEvent, TrainingResult
from vafa.training.trainer import Trainer

__all__ = ["iter_train", "train"]

Data = str | os.PathLike | Sequence[tuple[Any, Any]]


def train(
    model: nn.Module,
    card: ModelCard,
    train_data: Data,
    val_data: Sequence[tuple[Any, Any]] | None = None,
    *,
    out_dir: str | os.PathLike,
    config: TrainingConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "auto",
    callback: Callable[[TrainingEvent], bool | None] | None = None,
) -> TrainingResult:
    """Train ``model`` (in place) by VAFT; see :func:`iter_train` for every argument.

    Args:
        callback: receives every :class:`TrainingEvent`; returning ``False`` cancels: the
            latest checkpoint is saved within one iteration and the result has
            ``cancelled=True``.
    """
    return drive(
        iter_train(
            model,
            card,
            train_data,
            val_data,
            out_dir=out_dir,
            config=config,
            resume=resume,
            overwrite=overwrite,
            device=device,
        ),
        callback,
    )


def iter_train(
    model: nn.Module,
    card: ModelCard,
    train_data: Data,
    val_data: Sequence[tuple[Any, Any]] | None = None,
    *,
    out_dir: str | os.PathLike,
    config: TrainingConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "auto",
) -> Generator[TrainingEvent, bool | None, TrainingResult]:
    """VAFT as a generator: yields :class:`TrainingEvent` s, returns a :class:`TrainingResult`.

    Send ``False`` (``gen.send(False)``) to cancel: the latest checkpoint is saved within one
    iteration (an attack in progress is abandoned, and with it that iteration's update or that
    validation round, in every process) and the generator returns. Everything the run needs is checked at the first ``next()``, before any update:
    the data (missing datalist files listed together, labels with classes ``>=
    card.out_channels`` named), the attack options, the output folder, the resume state.

    Every iteration: a batch of random patches (:class:`vafa.training.data.PatchSampler`);
    the mode's attack makes ``X'`` with the model in eval mode and frozen parameters (the
    attack restores both); then, in train mode, the loss of the mode (:class:`VAFTLoss`),
    AdamW, gradient clipping, a warm-up + cosine learning-rate schedule, AMP on CUDA.
    Every ``val_every`` epochs and after the last: sliding-window Dice (overlap 0.5) of the
    validation cases, clean and under the mode's attack (the full volume attacked in tiles of
    ``card.roi_size``, :func:`vafa.run.tiling.attack_volume`). ``best`` is the checkpoint with the
    highest foreground Dice **under attack** (``"clean"`` mode: the clean foreground Dice).
    ``latest`` is saved after every epoch and at a cancel. The cards of both record the run in
    ``card.training``: ``mode``, ``objective``, ``epochs``, ``epochs_done``,
    ``iterations_per_epoch``, ``iterations_done``, ``batch_size``, ``world_size``, ``lr``,
    ``weight_decay``, ``optimizer``, ``schedule``, ``grad_clip``, ``amp``, ``lambda_fr``,
    ``attack`` (the attack's settings), ``augmentation``, ``seed``, ``data``, ``selection``,
    ``metrics`` (``validation``, ``best``, ``best_iteration``) and ``initialised_from`` (the
    ``training`` of the card given, e.g. of the weights being fine-tuned).

    Distributed: when ``torch.distributed`` is initialised, or ``WORLD_SIZE > 1`` in the
    environment (``torchrun --nproc_per_node N -m vafa train …``; the process group is then
    created here — nccl on CUDA, gloo otherwise — and destroyed at the end), the model is
    wrapped in ``DistributedDataParallel``, cases are shared out by ``DistributedSampler``,
    losses and validation Dice are averaged over processes (``all_reduce``), validation cases
    are shared out, and only rank 0 writes files. With nccl each process uses
    ``cuda:LOCAL_RANK``. Adversarial samples are made on the wrapped module (no collective).

    Args:
        model: the network of ``card`` (e.g. :func:`vafa.io.models.build_model` for training from
            scratch, or :func:`vafa.io.checkpoints.load_model` for fine-tuning); trained in place.
        card: its model card (grid, intensity mapping, ROI = patch size, classes).
        train_data: a datalist JSON path (:func:`vafa.training.data.read_datalist`; its
            ``validation`` list is used when ``val_data`` is None), or ``(image, labels)``
            pairs of :class:`~vafa.io.volume.Volume` s or NIfTI paths.
        val_data: validation pairs (``[]``: no validation, hence no ``best``).
        out_dir: output folder (:mod:`vafa.training.files`); created if needed.
        config: hyper-parameters (:class:`TrainingConfig`; default: its defaults).
        resume: continue from ``out_dir``'s latest checkpoint and state (iteration count,
            optimizer, scheduler); refuses a state written for another architecture or mode.
            ``epochs`` may be raised to train longer.
        overwrite: start over in an ``out_dir`` that holds an earlier run (its files are
            removed first). Without ``resume``/``overwrite`` such a folder is an error.
        device: ``"auto"`` (cuda → mps → cpu), a name or a :class:`torch.device`.

    Raises:
        TypeError, ValueError, FileNotFoundError, FileExistsError, PermissionError: invalid
            inputs, named (raised before any update).
        FloatingPointError: the loss became NaN/Inf.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    config = TrainingConfig() if config is None else config
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    trainer = Trainer(model, card, config, Path(out_dir), resume, overwrite, device)
    return (yield from trainer.run(train_data, val_data))
