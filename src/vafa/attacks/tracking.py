"""Which evaluated iterate of an attack is returned: per sample, the one with the highest
objective (``keep="best"``) or simply the last one (``keep="last"``)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["BestTracker"]


class BestTracker:
    """Keeps, per sample, the iterate with the highest objective (or simply the last one)."""

    def __init__(self, keep: str) -> None:
        self.keep = keep
        self.kept: dict[str, torch.Tensor] | None = None
        self.steps: list[int | str] = []

    def offer(self, objective, x_adv, prediction, extras: dict[str, torch.Tensor], step) -> None:
        candidate = {
            "objective": objective.detach(),
            "x": x_adv.detach(),
            "prediction": prediction,
            **extras,
        }
        if self.kept is None or self.keep == "last":
            self.kept = {k: v.clone() for k, v in candidate.items()}
            self.steps = [step] * objective.shape[0]
            return
        better = candidate["objective"] > self.kept["objective"]
        if bool(better.all()):
            self.kept = {k: v.clone() for k, v in candidate.items()}
        elif bool(better.any()):
            for key, value in candidate.items():
                mask = better.view(-1, *([1] * (value.dim() - 1)))
                self.kept[key] = torch.where(mask, value, self.kept[key])
        self.steps = [step if b else s for b, s in zip(better.tolist(), self.steps, strict=True)]

    def result(self) -> dict[str, Any]:
        """The kept tensors, plus ``"steps"``: per sample, the step label of the kept iterate."""
        assert self.kept is not None  # the loop always offers at least one iterate
        return {**self.kept, "steps": list(self.steps)}
