"""What a training run reports while it runs (:class:`TrainingEvent`) and when it ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from vafa.io.models import ModelCard

__all__ = ["TrainingEvent", "TrainingResult", "validation_summary"]


@dataclass
class TrainingEvent:
    """What :func:`iter_train` yields (and a :func:`train` callback receives).

    Attributes:
        stage: ``"attack"`` (a step of the attack making the current batch's adversarial
            patches), ``"train"`` (an update was made), ``"validation"`` (progress of a
            validation round; the round's last event carries ``validation``).
        iteration: updates done so far (over all runs of a resumed training).
        total: updates planned (``epochs × iterations_per_epoch``).
        epoch: current epoch, 1-based.
        epochs: epochs planned.
        losses: ``"train"``: the loss terms of this update (``loss``, ``clean``, ``adv``,
            ``fr``; averaged over processes); else empty.
        lr: learning rate of the last update.
        validation: on the event that ends a validation round: ``dice_fg_clean``,
            ``dice_fg_adv`` (foreground mean Dice, sliding window, clean and under the training
            attack; None where not measured), ``dice_clean``, ``dice_adv`` (all classes),
            ``dice_fg_adv_tiles`` (foreground Dice of the attacked tiles' own stitched
            predictions), ``cases``; else None.
        attack_step, attack_steps: ``"attack"`` events and attack steps during validation.
        case, cases: validation progress: cases done / cases of this process.
        elapsed: seconds since this run started.
    """

    stage: str
    iteration: int
    total: int
    epoch: int
    epochs: int
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    validation: dict[str, Any] | None = None
    attack_step: int | None = None
    attack_steps: int | None = None
    case: int | None = None
    cases: int | None = None
    elapsed: float = 0.0


@dataclass(eq=False)
class TrainingResult:
    """Outcome of :func:`train` / :func:`iter_train`.

    Attributes:
        model: the trained network (the module passed in, in eval mode).
        card: its card with ``training`` filled (as written beside ``latest``).
        out_dir: the output folder.
        latest, best: checkpoint paths (None where not written: ``best`` without validation,
            both on processes other than rank 0).
        log, plot: ``training_log.csv`` and ``training_curves.png`` (rank 0; else None).
        iterations: updates done in total; epochs_done: finished epochs.
        cancelled: stopped by the callback / ``send(False)`` (``latest`` was saved first).
        best_metric: best value of the selection metric (None without validation).
        selection: the metric that picks ``best`` (``"dice_fg_adv"`` or ``"dice_fg_clean"``).
        validation: the last validation round's values (see :class:`TrainingEvent`), or None.
        history: the log rows of this run (dicts of :data:`vafa.training.files.LOG_COLUMNS`).
    """

    model: nn.Module
    card: ModelCard
    out_dir: Path
    latest: Path | None
    best: Path | None
    log: Path | None
    plot: Path | None
    iterations: int
    epochs_done: int
    cancelled: bool
    best_metric: float | None
    selection: str
    validation: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


def validation_summary(validation: Mapping[str, Any]) -> str:
    """One line of a validation round's foreground Dice, clean and under attack."""

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    text = f"validation foreground Dice clean {fmt(validation.get('dice_fg_clean'))}"
    if validation.get("dice_fg_adv") is not None:
        text += f", under attack {fmt(validation.get('dice_fg_adv'))}"
    if validation.get("dice_fg_adv_tiles") is not None:
        text += f" (attacked tiles {fmt(validation.get('dice_fg_adv_tiles'))})"
    return text


# ----------------------------------------------------------------------------- helpers
