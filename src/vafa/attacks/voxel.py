"""Voxel-domain baselines of the VAFA paper (Table 1/5): PGD, BIM, FGSM and Gaussian noise.

Budgets follow the paper: ``eps`` and ``std`` in [0, 255] units (``eps=4`` means 4/255 on [0, 1]
data), the step ``alpha`` in [0, 1] units. The loss is the same Dice-CE as VAFA's.

* PGD (Madry et al., 2018): uniform random start in the L∞ ball, signed steps, projection onto the
  ball and onto [0, 1].
* BIM (Kurakin et al., 2017): PGD without the random start.
* FGSM (Goodfellow et al., 2015): one signed step of size ``eps``.
* Gaussian noise: ``X + N(0, (std/255)²)``, clamped to [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch

from vafa.attacks.base import Attack
from vafa.attacks.options import KEEP, STEPS, Option, with_default
from vafa.ops.ssim import BlockSSIM

__all__ = ["BIM", "FGSM", "PGD", "GaussianNoise"]

_UNIT = "in [0, 255] units"
EPS = Option(
    "eps", float, 4.0, "L∞ budget: 4 means 4/255 of the [0, 1] range", unit=_UNIT,
    label="ε (/255)", minimum=0.0, widget="slider", gui=(0.0, 16.0, 0.5), training=True,
)  # fmt: skip
ALPHA = Option(
    "alpha", float, 0.01, "step size of PGD/BIM (the paper: 0.01)", unit="in [0, 1] units",
    label="step α", minimum=0.0, widget="spin", gui=(0.0001, 1.0, 0.001), training=True,
)  # fmt: skip
RANDOM_START = Option(
    "random_start", bool, True,
    "start from a random point (PGD: uniform in the L∞ ball; SA²: uniform factors)",
    flags=("--random-start", "--no-random-start"),
)  # fmt: skip
STD = Option(
    "std", float, 4.0, "standard deviation of the Gaussian noise", unit=_UNIT,
    label="σ (/255)", minimum=0.0, widget="slider", gui=(0.0, 16.0, 0.5), training=True,
)  # fmt: skip
_KEEP_LAST = with_default(KEEP, "last")


class PGD(Attack):
    """Projected gradient descent in the L∞ ball of radius ``eps/255`` (paper: ε 4 and 8, step
    α 0.01, 20 steps; returns the point after the last step, as published).

    Guarantees ``‖X' − X‖∞ <= eps/255`` and ``X' ∈ [0, 1]``.
    """

    name = "PGD"
    label = "PGD"
    options = (STEPS, EPS, ALPHA, RANDOM_START, _KEEP_LAST)

    def _init(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        radius = self.eps / 255.0
        if self.random_start and radius > 0:
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            delta = (2 * u - 1) * radius
            delta = (x + delta).clamp(0.0, 1.0) - x
        else:
            delta = torch.zeros_like(x)
        return {
            "x": x,
            "delta": delta.requires_grad_(True),
            "radius": radius,
            "ssim": BlockSSIM(x, tuple(x.shape[2:])),
        }

    def _perturb(self, state: dict, step: int):
        x_adv = state["x"] + state["delta"]
        with torch.no_grad():
            ssim = state["ssim"](x_adv.detach())
        return x_adv, None, ssim

    def _variable(self, state: dict) -> torch.Tensor:
        return state["delta"]

    def _update(self, state: dict, grad: torch.Tensor, step: int) -> None:
        x, delta, radius = state["x"], state["delta"], state["radius"]
        with torch.no_grad():
            delta.add_(torch.sign(grad), alpha=self.alpha).clamp_(-radius, radius)
            delta.copy_((x + delta).clamp_(0.0, 1.0) - x)


class BIM(PGD):
    """Basic iterative method: :class:`PGD` without the random start."""

    name = "BIM"
    label = "BIM"
    options = (STEPS, EPS, ALPHA, _KEEP_LAST)
    random_start = False


class FGSM(PGD):
    """Fast gradient sign method: one signed step of size ``eps/255`` from the clean volume."""

    name = "FGSM"
    label = "FGSM"
    options = (EPS, _KEEP_LAST)
    steps = 1
    random_start = False

    @property
    def alpha(self) -> float:
        """The step: the whole budget, ``eps/255``."""
        return self.eps / 255.0


class GaussianNoise(Attack):
    """Additive Gaussian noise ``N(0, (std/255)²)``, clamped to [0, 1] (no gradient; paper: σ 4
    and 8). The model is used for the predictions and metrics only."""

    name = "GN"
    label = "GN"
    options = (STD,)
    targetable = False

    def _init(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return {
            "x": x,
            "noise": noise * (self.std / 255.0),
            "ssim": BlockSSIM(x, tuple(x.shape[2:])),
        }

    def _perturb(self, state: dict, step: int):
        x_adv = (state["x"] + state["noise"]).clamp(0.0, 1.0)
        return x_adv, None, state["ssim"](x_adv)
