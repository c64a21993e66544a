"""The VAFT training loop behind :func:`vafa.training.iter_train` (one process or DDP).

Internal: use :func:`vafa.training.train` / :func:`vafa.training.iter_train`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vafa.attacks import build_attack
from vafa.io.models import ModelCard
from vafa.run.distributed import Dist
from vafa.run.progress import relay
from vafa.training.config import TrainingConfig
from vafa.training.data import PatchSampler, load_cases, read_datalist, resolve_flip_axes
from vafa.training.events import TrainingEvent, TrainingResult
from vafa.training.files import (
    BEST,
    LATEST,
    LOG,
    PLOT,
    STATE,
    TRAINING_FILES,
    TrainingLog,
    check_out_dir,
    plot_log,
    save_state,
)
from vafa.training.objective import VAFTLoss
from vafa.training.optim import Optimisation
from vafa.training.records import restore, resume_state, trained_card

__all__ = ["Trainer"]

VALIDATION_OVERLAP = 0.5


class Trainer:
    """State and steps of one training run (see :func:`vafa.training.iter_train`)."""

    def __init__(self, model, card, config, out_dir, resume, overwrite, device) -> None:
        self.raw: nn.Module = model
        self.card: ModelCard = card
        self.config: TrainingConfig = config
        self.out_dir: Path = out_dir
        self.resume, self.overwrite, self.device_request = bool(resume), bool(overwrite), device
        self.stop = False
        self.epoch = self.step = self.iteration = 0
        self.validated_epoch = -1
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.last_validation: dict[str, Any] | None = None
        self.last_lr = float(config.lr)
        self.history: list[dict[str, Any]] = []
        self.selection = "dice_fg_clean" if config.attack is None else "dice_fg_adv"
        self.initialised_from = card.training  # the weights' earlier training (fine-tuning)
        self.log: TrainingLog | None = None

    # ------------------------------------------------------------------ the run
    def run(self, train_data, val_data) -> Generator[TrainingEvent, bool | None, TrainingResult]:
        self.started = time.monotonic()
        self.dist = Dist.setup(self.device_request)
        try:
            self._setup(train_data, val_data)
            return (yield from self._loop())
        finally:
            self.dist.close()

    def _loop(self):
        cfg = self.config
        while self.epoch < cfg.epochs:
            while self.step < self.ipe:
                done = yield from self._iteration()
                if not done:
                    return self._finish(cancelled=True)
                reply = yield self._event("train", losses=done)
                self.stop = self.stop or reply is False
                if self.dist.any(self.stop):
                    return self._finish(cancelled=True)
            last = self.epoch + 1 == cfg.epochs
            if (
                self.val_cases
                and self.validated_epoch != self.epoch
                and (last or (self.epoch + 1) % cfg.val_every == 0)
            ):
                validation = yield from self._validate()
                if validation is None:
                    return self._finish(cancelled=True)
                self._record_validation(validation)
                reply = yield self._event("validation", validation=validation)
                self.stop = self.stop or reply is False
                if self.dist.any(self.stop):
                    return self._finish(cancelled=True)
            self.epoch, self.step = self.epoch + 1, 0
            self._save_latest()
        return self._finish(cancelled=False)

    def _iteration(self):
        """One update; returns the (process-averaged) loss terms, or None when cancelled."""
        cfg = self.config
        x, y = self.sampler.batch(self.epoch, self.step, self.ipe)
        x, y = x.to(self.device), y.to(self.device)
        x_adv = None
        if cfg.attack is not None:
            seed = self._seed(1, self.iteration)
            attack = build_attack(
                cfg.attack, self.raw, **cfg.attack_options, seed=seed, heads=self.heads
            )
            result = yield from self._relay(attack.iter_attack(x, y), "attack")
            if self.dist.any(self.stop):  # cancelled: no update, in every process
                return None
            x_adv = result.adversarial.detach()
        self.last_lr = self.optim.lr
        terms = self._update(x, y, x_adv)
        self.step += 1
        self.iteration += 1
        losses = self.dist.mean({k: float(v) for k, v in terms.items()})
        if not math.isfinite(losses["loss"]) and not self.optim.scaler.is_enabled():
            raise FloatingPointError(
                f"the training loss is not finite at iteration {self.iteration}: {losses} "
                "(try a smaller lr, or grad_clip)"
            )
        row = {"stage": "train", "epoch": self.epoch + 1, "iteration": self.iteration}
        row.update(lr=self.last_lr, seconds=self._elapsed())
        row.update({("loss" if k == "loss" else f"loss_{k}"): v for k, v in losses.items()})
        self._log(row)
        return losses

    def _update(self, x, y, x_adv) -> dict[str, torch.Tensor]:
        self.raw.train()
        with torch.inference_mode(False), torch.enable_grad():
            with self.optim.autocast():
                clean = _logits(self.model(x)) if self.loss_fn.needs_clean else None
                adv = _logits(self.model(x_adv)) if self.loss_fn.needs_adversarial else None
            terms = self.loss_fn(y, clean, adv)
            self.optim.step(terms["loss"], self.raw, self.config.grad_clip)
        return {k: v.detach() for k, v in terms.items()}

    def _validate(self):
        """Sliding-window Dice of this process's validation cases, clean and attacked, summed
        over processes; None when cancelled (a single process returns at once, several finish
        their cases, with any attack cut short, and then agree)."""
        from vafa.run.tiling import iter_attack_volume, sliding_window_labels

        cfg, dist, card, heads = self.config, self.dist, self.card, self.heads
        k = card.out_channels

        def scores(prediction, reference):
            return _dice_sums(heads.dice(prediction, reference, k), heads)

        def predict(volume):
            return sliding_window_labels(
                self.raw, volume, card.roi_size, overlap=VALIDATION_OVERLAP, heads=heads
            )

        val_attack, val_options = cfg.validation
        mine = list(range(dist.rank, len(self.val_cases), dist.world_size))
        sums = torch.zeros(10, dtype=torch.float64)
        for i, index in enumerate(mine):
            case = self.val_cases[index]
            x = case.image[None].to(self.device)
            y = case.labels[None].round().long().to(self.device)
            reference = heads.target(y, k)
            sums[:4] += scores(predict(x), reference)
            if val_attack is not None:
                attack = build_attack(
                    val_attack, self.raw, **val_options, seed=self._seed(2, index, rank=0),
                    heads=heads,
                )  # fmt: skip
                tiles = iter_attack_volume(
                    attack, x, y, roi=card.roi_size, tile_batch=cfg.tile_batch
                )
                result = yield from self._relay(tiles, "validation", case=i + 1, cases=len(mine))
                if self.stop and dist.world_size == 1:
                    return None
                sums[4:8] += scores(predict(result.adversarial), reference)
                # the stitched predictions of the attacked tiles: what the attack optimised
                # against (sliding-window prediction of the whole volume forgives much of it)
                tiles_pred = result.tile_adversarial_prediction
                sums[8:] += scores(tiles_pred, reference)[:2]
            reply = yield self._event("validation", case=i + 1, cases=len(mine))
            self.stop = self.stop or reply is False
            if self.stop and dist.world_size == 1:
                return None
        sums = dist.sum(sums)
        if dist.any(self.stop):  # cancelled in some process: the round is not recorded
            return None
        return _validation_means(sums, len(self.val_cases), val_attack is not None)

    def _relay(self, gen, stage: str, **fields):
        """Run an attack generator, yielding a :class:`TrainingEvent` per step; a cancel (now
        or earlier) stops the attack at once and sets :attr:`stop`. Returns its result."""
        cancel = threading.Event()
        if self.stop:
            cancel.set()

        def event(step) -> TrainingEvent:
            return self._event(stage, attack_step=step.step, attack_steps=step.total, **fields)

        result = yield from relay(gen, event, cancel=cancel)
        self.stop = self.stop or cancel.is_set()
        return result

    # ------------------------------------------------------------------ setup
    def _setup(self, train_data, val_data) -> None:
        from vafa.io.checkpoints import _check_against_card

        cfg, card, dist = self.config, self.card, self.dist
        _check_against_card(self.raw.state_dict(), card)
        train_pairs, val_pairs, self.datalist = _pairs(train_data, val_data)
        self.out_dir = check_out_dir(
            self.out_dir, resume=self.resume, overwrite=self.overwrite, writer=dist.is_writer
        )
        aug = cfg.augmentation
        flip_axes = resolve_flip_axes(aug.flip_axes, card)
        crop = aug.crop_foreground
        self.train_cases = load_cases(train_pairs, card, crop_foreground=crop, split="training")
        self.val_cases = load_cases(val_pairs, card, crop_foreground=crop, split="validation")
        self.sampler = PatchSampler(
            self.train_cases,
            card.roi_size,
            aug,
            flip_axes,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        self.ipe = cfg.iterations_per_epoch or self.sampler.default_iterations()
        self.total = cfg.epochs * self.ipe
        self.device = dist.device
        self.raw.to(self.device)
        self.attack_settings = None
        self.heads = card.heads()
        if cfg.attack is not None:
            built = build_attack(
                cfg.attack, self.raw, **cfg.attack_options, seed=cfg.seed, heads=self.heads
            )
            self.attack_settings = {k: v for k, v in built.settings().items() if k != "seed"}
        self.loss_fn = VAFTLoss(cfg.mode, cfg.lambda_fr, heads=self.heads)
        self.optim = Optimisation.build(self.raw, cfg, self.total, self.device)
        if self.resume:
            restore(self)
        self.model = self.raw
        if dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.raw, device_ids=ids)
        if dist.is_writer:
            if self.overwrite and not self.resume:
                for name in TRAINING_FILES:
                    (self.out_dir / name).unlink(missing_ok=True)
            self.log = TrainingLog(
                self.out_dir / LOG, keep_until=self.iteration if self.resume else None
            )
        dist.barrier()

    # ------------------------------------------------------------------ records and files
    def _record_validation(self, validation: dict[str, Any]) -> None:
        self.validated_epoch = self.epoch
        self.last_validation = validation
        row = {"stage": "validation", "epoch": self.epoch + 1, "iteration": self.iteration}
        row.update({f"val_{k}": v for k, v in validation.items()}, seconds=self._elapsed())
        self._log(row)
        metric = validation.get(self.selection)
        if (
            metric is not None
            and math.isfinite(metric)
            and (self.best is None or metric > self.best)
        ):
            self.best, self.best_iteration = float(metric), self.iteration
            if self.dist.is_writer:
                from vafa.io.checkpoints import save_model

                save_model(self.raw, trained_card(self), self.out_dir / BEST)

    def _save_latest(self) -> None:
        if not self.dist.is_writer:
            return
        from vafa.io.checkpoints import save_model

        save_model(self.raw, trained_card(self), self.out_dir / LATEST)
        save_state(resume_state(self), self.out_dir / STATE)

    def _finish(self, cancelled: bool) -> TrainingResult:
        writer = self.dist.is_writer
        if cancelled:
            self._save_latest()
        plot = None
        if writer:
            title = f"VAFT {self.config.mode} · {self.card.architecture}"
            plot = plot_log(self.out_dir / LOG, self.out_dir / PLOT, title=title)
        self.dist.barrier()
        self.raw.eval()
        best = self.out_dir / BEST
        return TrainingResult(
            model=self.raw,
            card=trained_card(self),
            out_dir=self.out_dir,
            latest=self.out_dir / LATEST if writer else None,
            best=best if writer and best.is_file() else None,
            log=self.out_dir / LOG if writer else None,
            plot=plot,
            iterations=self.iteration,
            epochs_done=self.epoch,
            cancelled=cancelled,
            best_metric=self.best,
            selection=self.selection,
            validation=self.last_validation,
            history=self.history,
        )

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.log is not None:
            self.log.write(row)

    def _event(self, stage: str, **fields) -> TrainingEvent:
        return TrainingEvent(
            stage=stage,
            iteration=self.iteration,
            total=self.total,
            epoch=min(self.epoch + 1, self.config.epochs),
            epochs=self.config.epochs,
            lr=self.last_lr,
            elapsed=self._elapsed(),
            **fields,
        )

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def _seed(self, kind: int, *values: int, rank: int | None = None) -> int:
        rank = self.dist.rank if rank is None else rank
        words = np.random.SeedSequence([self.config.seed, kind, rank, *values]).generate_state(2)
        return int((int(words[0]) << 30) ^ int(words[1]))


# ----------------------------------------------------------------------------- helpers
def _pairs(train_data, val_data):
    if isinstance(train_data, (str, os.PathLike)):
        lists = read_datalist(train_data)
        val = lists["validation"] if val_data is None else val_data
        return lists["training"], val, str(train_data)
    return train_data, [] if val_data is None else val_data, None


def _logits(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _dice_sums(dice: torch.Tensor, heads) -> torch.Tensor:
    """``[sum fg, count fg, sum all, count all]`` of a ``[1, K]`` Dice table of ``heads``
    (NaN skipped; softmax: "all" with the background column, as MONAI reports it)."""
    d = dice[0].double().cpu()
    fg = heads.foreground(dice)[0].double().cpu()
    return torch.stack(
        [
            torch.nansum(fg),
            (~fg.isnan()).sum().double(),
            torch.nansum(d),
            (~d.isnan()).sum().double(),
        ]
    )


def _validation_means(sums: torch.Tensor, cases: int, attacked: bool) -> dict[str, Any]:
    def mean(total, count):
        return float(total / count) if count > 0 else None

    out = {
        "dice_fg_clean": mean(sums[0], sums[1]),
        "dice_clean": mean(sums[2], sums[3]),
        "dice_fg_adv": mean(sums[4], sums[5]) if attacked else None,
        "dice_adv": mean(sums[6], sums[7]) if attacked else None,
        "dice_fg_adv_tiles": mean(sums[8], sums[9]) if attacked else None,
        "cases": cases,
    }
    return out
