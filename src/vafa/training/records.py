"""What a VAFT run records: the ``training`` section of its checkpoints' cards, and the resume
state (``training_state.pt``) it continues from.

Internal to :class:`vafa.training.trainer.Trainer`: the functions take the trainer (``t``) and read
or set its attributes (it imports this module, so the type is not named here).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from vafa.io.models import ModelCard
from vafa.training.files import LATEST, STATE, STATE_FORMAT, json_clean, load_state
from vafa.training.modes import MODES

__all__ = ["restore", "resume_state", "trained_card"]

#: The loss of every mode, as the card records it.
OBJECTIVES = {
    "vafa-fr": "Eq. 3: L_seg(M(X),Y) + L_seg(M(X'),Y) + lambda_fr * L_fr(M(X),M(X')) (L_fr: Eq. 4)",
    "clean": "L_seg(M(X),Y)",
    **{m: "L_seg(M(X'),Y)" for m in MODES if m not in ("vafa-fr", "clean")},
}
#: The card fields that make two models the same network (a run resumes only on its own).
ARCH_FIELDS = ("architecture", "kwargs", "in_channels", "out_channels", "class_names")


def trained_card(t: Any) -> ModelCard:
    """The run's card: the base card with ``training`` recording the run so far."""
    cfg = t.config
    info = {
        "mode": cfg.mode,
        "objective": OBJECTIVES[cfg.mode],
        "epochs": cfg.epochs,
        # the best checkpoint is written after an epoch's last update, before it is counted
        "epochs_done": t.epoch + int(t.step >= t.ipe),
        "iterations_per_epoch": t.ipe,
        "iterations_done": t.iteration,
        "batch_size": cfg.batch_size,
        "world_size": t.dist.world_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "optimizer": "AdamW",
        "schedule": {"name": "warmup-cosine", "warmup": cfg.warmup},
        "grad_clip": cfg.grad_clip,
        "amp": t.optim.amp,
        "lambda_fr": cfg.lambda_fr if cfg.mode == "vafa-fr" else None,
        "attack": t.attack_settings,
        "augmentation": cfg.augmentation.to_dict(),
        "seed": cfg.seed,
        "data": {
            "datalist": t.datalist,
            "training_cases": len(t.train_cases),
            "validation_cases": len(t.val_cases),
            "roi_size": list(t.card.roi_size),
        },
        "selection": {
            "metric": t.selection,
            "description": "validation foreground Dice "
            + ("(clean)" if cfg.attack is None else f"under {cfg.attack} (training attack)"),
        },
        "metrics": {
            "validation": t.last_validation,
            "best": t.best,
            "best_iteration": t.best_iteration,
        },
        "initialised_from": t.initialised_from,
    }
    return replace(t.card, training=json_clean(info))


def resume_state(t: Any) -> dict[str, Any]:
    """What ``training_state.pt`` holds: where the run is, its best so far, the optimiser."""
    return {
        "format": STATE_FORMAT,
        "card": _arch(t.card),
        "mode": t.config.mode,
        "config": json.dumps(json_clean(t.config.to_dict())),
        "epoch": t.epoch,
        "step": t.step,
        "iteration": t.iteration,
        "validated_epoch": t.validated_epoch,
        "best_metric": t.best,
        "best_iteration": t.best_iteration,
        "last_validation": json.dumps(json_clean(t.last_validation)),
        "last_lr": t.last_lr,
        "world_size": t.dist.world_size,
        **t.optim.state_dict(),
    }


def restore(t: Any) -> None:
    """Continue the run in ``t.out_dir``: weights, optimiser and counters from its latest
    checkpoint and state.

    Raises:
        ValueError: the state was written for another network or mode, or the checkpoint and
            the state disagree (an interrupted save).
    """
    from vafa.io.checkpoints import card_path_for, load_card
    from vafa.io.state_dicts import read_state_dict

    path = t.out_dir / STATE
    state = load_state(path)
    ours, theirs = _arch(t.card), state.get("card")
    if theirs != ours:
        raise ValueError(
            f"cannot resume from {path}: it was written for another model "
            f"({_describe(theirs)}), the model given is {_describe(ours)}; use another "
            "out_dir, or overwrite=True (CLI --overwrite) to start over"
        )
    if state.get("mode") != t.config.mode:
        raise ValueError(
            f"cannot resume from {path}: it was written in mode {state.get('mode')!r}, "
            f"the mode given is {t.config.mode!r}"
        )
    latest = t.out_dir / LATEST
    saved = load_card(card_path_for(latest)).training or {}
    done = saved.get("iterations_done")
    t.initialised_from = saved.get("initialised_from")
    if done != state["iteration"]:
        raise ValueError(
            f"cannot resume: {latest} (iteration {done}) and {path} (iteration "
            f"{state['iteration']}) disagree — a save was interrupted"
        )
    try:
        t.raw.load_state_dict(read_state_dict(latest), strict=True)
        t.optim.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"cannot resume from {t.out_dir}: {err}") from None
    t.epoch, t.step = int(state["epoch"]), int(state["step"])
    t.iteration, t.validated_epoch = int(state["iteration"]), int(state["validated_epoch"])
    t.best, t.best_iteration = state["best_metric"], state["best_iteration"]
    t.last_validation = json.loads(state["last_validation"])
    t.last_lr = float(state.get("last_lr", t.last_lr))


def _arch(card: ModelCard) -> str:
    d = card.to_dict()
    return json.dumps({k: d[k] for k in ARCH_FIELDS}, sort_keys=True)


def _describe(arch_json) -> str:
    try:
        d = json.loads(arch_json)
        return f"{d['architecture']} with {d['out_channels']} classes, kwargs {d['kwargs']}"
    except (TypeError, ValueError, KeyError):
        return repr(arch_json)
