"""SA²: an amplitude attack in the block-DCT domain (Hanif et al., ISBI 2025).

Where VAFA quantizes the DCT coefficients of every block, SA² rescales them: every coefficient
``c`` of every block except the block's DC term is multiplied by a learnable factor
``f ∈ [1 − ρ, 1 + ρ]`` (one factor per block and frequency), optionally only in one frequency
band of the block (:mod:`vafa.ops.bands`):

    ``X' = clamp(X + IDCT(m ⊙ (f − 1) ⊙ DCT(X)), 0, 1)``

with ``m`` the mask of the changed coefficients (the band, without the DC terms). Outside
``m`` the factor is exactly 1 and never moves, so the DC term (every block's mean) and the
coefficients outside the band are those of ``X`` — up to the clamp to [0, 1], which can clip
overshoots next to air or dense bone.

The loop is PGD's with the factors as the variable: a random start (uniform factors in
``[1 − ρ, 1 + ρ]``) or all ones, ``f ← clip(f + factor_step·sign(∇_f L), 1 − ρ, 1 + ρ)``, the
point after the last update evaluated. ``L`` is the Dice-CE of the other attacks (no SSIM
term). Paper defaults: ρ 0.2, steps of 0.1, 8³ blocks, 10 steps.

Each step costs one inverse block DCT of the volume (the forward DCT is taken once per call)
and the model's forward and backward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from vafa.attacks.base import Attack
from vafa.attacks.options import (
    BANDS_OPTION,
    KEEP,
    STEPS,
    Option,
    OptionError,
    block_sides,
    with_default,
)
from vafa.attacks.vafa import BLOCK_SIZE
from vafa.attacks.voxel import RANDOM_START
from vafa.ops.bands import band_layout
from vafa.ops.frequency import crop_padding, layout_dct, layout_idct, pad_to_blocks
from vafa.ops.ssim import BlockSSIM

__all__ = ["SA2"]

#: The options of :class:`SA2` (see :mod:`vafa.attacks.options`).
SA2_OPTIONS = (
    with_default(STEPS, 10),
    Option(
        "rho", float, 0.2,
        "bound of the amplitude factors: each lies in [1 − ρ, 1 + ρ]; must be in (0, 1)",
        label="ρ (factor bound)", positive=True, widget="spin", gui=(0.01, 0.99, 0.01),
        training=True,
    ),
    Option(
        "factor_step", float, 0.1, "change of every factor per signed step",
        label="factor step", positive=True, widget="spin", gui=(0.01, 1.0, 0.01),
    ),
    with_default(BLOCK_SIZE, 8),
    BANDS_OPTION,
    RANDOM_START,
    with_default(KEEP, "last"),
)  # fmt: skip


class SA2(Attack):
    """SA², the spectral amplitude attack (module docstring): factors in ``[1 − rho, 1 + rho]``
    on every coefficient of the chosen ``bands`` (the DC terms never) of the block DCT.
    Sides that are not multiples of the block size are padded (replicate) and cropped back.

    ``attack(images [B, C, H, W, D] in [0, 1], labels [B, 1, H, W, D] | None)`` returns an
    :class:`~vafa.attacks.base.AttackResult`.
    """

    name = "SA2"
    label = "SA² (DCT amplitude)"
    options = SA2_OPTIONS

    @classmethod
    def _settle(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["rho"] >= 1.0:
            raise OptionError(
                "rho", f"rho must be < 1 (factors stay positive), got {values['rho']!r}"
            )
        values["block_size"] = block_sides(values["block_size"], 3, cls.name)
        return values

    # ------------------------------------------------------------------ hooks
    def _init(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        padded = pad_to_blocks(x, self.block_size)
        changed = band_layout(self.block_size, padded.shape[2:], self.bands, x.device).clone()
        changed[tuple(slice(None, None, b) for b in self.block_size)] = False  # DC terms
        mask = changed.to(x.dtype).expand_as(padded)
        factors = torch.ones_like(padded)
        if self.random_start:
            u = torch.rand(padded.shape, generator=generator, dtype=x.dtype).to(x.device)
            factors = torch.where(mask > 0, 1.0 + self.rho * (2.0 * u - 1.0), factors)
        return {
            "padded": padded,
            "changed": mask * layout_dct(padded, self.block_size),  # m ⊙ DCT(X)
            "mask": mask,
            "factors": factors.requires_grad_(True),
            "shape": tuple(x.shape[2:]),
            "ssim": BlockSSIM(x, tuple(x.shape[2:])),
        }

    def _perturb(self, state: dict, step: int):
        delta = layout_idct(state["changed"] * (state["factors"] - 1.0), self.block_size)
        x_adv = crop_padding((state["padded"] + delta).clamp(0.0, 1.0), state["shape"])
        with torch.no_grad():
            ssim = state["ssim"](x_adv.detach())
        return x_adv, None, ssim

    def _variable(self, state: dict) -> torch.Tensor:
        return state["factors"]

    def _update(self, state: dict, grad: torch.Tensor, step: int) -> None:
        with torch.no_grad():
            move = torch.sign(grad).mul_(state["mask"])  # outside the mask: no move at all
            state["factors"].add_(move, alpha=self.factor_step)
            state["factors"].clamp_(1.0 - self.rho, 1.0 + self.rho)
