"""How a VAFT run updates the weights: AdamW, a linear warm-up then a cosine decay of the
learning rate, and mixed precision on CUDA (bfloat16 where supported, else float16 with a
gradient scaler)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vafa.training.config import TrainingConfig

__all__ = ["Optimisation", "warmup_cosine"]


@dataclass
class Optimisation:
    """The optimiser, its schedule and the mixed precision of one run.

    Attributes:
        optimizer: AdamW over the model's parameters.
        scheduler: ``LambdaLR`` stepped after every update.
        lr_factor: iteration → factor of the base learning rate (:func:`warmup_cosine`).
        scaler: the float16 gradient scaler (disabled otherwise).
        amp_dtype: the autocast dtype on CUDA, or None (full precision).
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    lr_factor: Callable[[int], float]
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None

    @classmethod
    def build(
        cls, model: nn.Module, config: TrainingConfig, total: int, device: torch.device
    ) -> Optimisation:
        """For ``total`` iterations of ``model`` on ``device``."""
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        lr_factor = warmup_cosine(round(config.warmup * total), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        amp_dtype = None
        if device.type == "cuda" and config.amp:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        return cls(optimizer, scheduler, lr_factor, scaler, amp_dtype)

    def autocast(self):
        """The forward passes' autocast context (a no-op in full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def step(self, loss: torch.Tensor, model: nn.Module, grad_clip: float | None) -> None:
        """Backward pass of ``loss``, gradient clipping, one update and one schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def amp(self) -> str | None:
        """The autocast dtype's name (``"bfloat16"``), or None."""
        return None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def state_dict(self) -> dict:
        """The optimiser, schedule and scaler states (for resuming)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the learning rate follows the schedule of this run's
        length (the number of epochs may have grown)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        factor = self.lr_factor(self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Iteration → learning-rate factor: linear from ``1/warmup`` to 1 over ``warmup``
    iterations, then a cosine decay to 0 at ``total``."""

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        progress = (i - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
