"""Differentiable quantization of DCT coefficients by a learnable table.

``φ(c, q) = round_diff(c / q) · q`` with one of two differentiable roundings:

* ``"tanh"`` (AdvDrop / DSQ, used by the published VAFA code), for annealing parameter ``α``:
  ``k = ln(2/α − 1)``, ``s = 1/(1 − α)``,
  ``round_diff(x) = (s·tanh(k·(x − ⌊x⌋ − 0.5)) + 1)/2 + ⌊x⌋``. As ``α → 0`` it becomes hard
  rounding; ``α = 0`` *is* hard rounding (zero gradient).
* ``"cubic"`` (Shin & Song, 2017): ``round(x) + (x − round(x))³``.

The schedule of the published code starts at ``α = 0.1`` and lowers it by ``0.1/steps`` after
every step (:class:`AlphaSchedule`), so that the last of ``steps`` evaluations uses
``α = 0.1/steps`` and one evaluation after the last update uses ``α = 0`` (hard rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "ROUNDINGS",
    "AlphaSchedule",
    "cubic_round",
    "quantize",
    "tanh_round",
]

ROUNDINGS = ("tanh", "cubic")


@dataclass(frozen=True)
class AlphaSchedule:
    """Linear annealing of the rounding parameter: ``α_t = start · (1 − t/steps)``, ``t = 0…steps``.

    A fresh value per call of :meth:`alpha`, so one schedule can serve any number of attacks.
    """

    steps: int
    start: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not 0.0 < self.start < 1.0:
            raise ValueError(f"start must be in (0, 1), got {self.start!r}")

    def alpha(self, step: int) -> float:
        """``α`` used at evaluation ``step`` (0-based); 0 (hard rounding) from ``step = steps`` on."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return max(0.0, self.start * (1.0 - step / self.steps))


def tanh_round(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Soft rounding of AdvDrop/DSQ; ``alpha = 0`` rounds exactly (half away from zero-ish)."""
    if alpha == 0:
        return torch.floor(x + 0.5)
    k, s = _tanh_constants(alpha)
    floor = torch.floor(x)
    return (s * torch.tanh(k * (x - floor - 0.5)) + 1.0) / 2.0 + floor


def cubic_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x) + (x − round(x))³``: exact value near integers, non-zero gradient."""
    r = torch.round(x)
    return r + (x - r) ** 3


def quantize(
    coeffs: torch.Tensor,
    q: torch.Tensor,
    alpha: float = 0.1,
    rounding: str = "tanh",
    *,
    scale: float = 1.0,
    offset: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Quantize and de-quantize: ``offset + scale · round_diff(coeffs / q) · q``.

    Differentiable in ``coeffs`` and ``q``. ``scale`` and ``offset`` let callers fold a linear
    post-processing (e.g. the /255 of the FPM and the +128 carried by the DC terms) into the
    same pass over the coefficients.

    Args:
        coeffs: DCT coefficients, any shape.
        q: positive quantization table, broadcastable to ``coeffs``.
        alpha: rounding parameter in ``[0, 1)`` for ``"tanh"`` (0 = hard rounding).
        rounding: ``"tanh"`` or ``"cubic"``.
        scale: factor applied to the de-quantized coefficients.
        offset: constant (tensor broadcastable to ``coeffs``, or number) added at the end.

    Returns:
        Tensor of ``coeffs``' shape.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha!r}")
    if rounding == "tanh" and alpha > 0:
        offset_t = torch.as_tensor(offset, dtype=coeffs.dtype, device=coeffs.device)
        return _TanhQuantize.apply(coeffs, q, alpha, float(scale), offset_t)
    u = coeffs / q
    rounded = cubic_round(u) if rounding == "cubic" else torch.floor(u + 0.5)
    return offset + scale * (rounded * q)


def _tanh_constants(alpha: float) -> tuple[float, float]:
    return math.log(2.0 / alpha - 1.0), 1.0 / (1.0 - alpha)


class _TanhQuantize(torch.autograd.Function):
    """``offset + scale·R(c/q)·q`` with a fused backward.

    ``R'(u) = s·k/2·(1 − t²)`` with ``t = tanh(k(u − ⌊u⌋ − ½))``;
    ``∂φ/∂c = scale·R'(u)``, ``∂φ/∂q = scale·(R(u) − u·R'(u))``. Both derivatives are formed in
    the forward pass (two tensors kept instead of four), which keeps the backward to one
    multiplication per input.
    """

    @staticmethod
    def forward(ctx, coeffs, q, alpha, scale, offset):
        k, s = _tanh_constants(alpha)
        u = coeffs / q
        rounded = torch.floor(u)
        t = torch.sub(u, rounded).sub_(0.5).mul_(k).tanh_()
        rounded.add_(t, alpha=0.5 * s).add_(0.5)  # R(u)
        out = torch.addcmul(offset, rounded, q, value=scale)
        slope = t.mul_(t).neg_().add_(1.0).mul_(0.5 * s * k * scale)  # scale·R'(u), reuses t
        ctx.coeffs_shape, ctx.q_shape = coeffs.shape, q.shape
        needs_c, needs_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq = torch.addcmul(rounded.mul_(scale), u, slope, value=-1.0) if needs_q else None
        ctx.save_for_backward(slope if needs_c else None, dq)
        return out

    @staticmethod
    def backward(ctx, grad):
        slope, dq = ctx.saved_tensors
        grad_c = grad_q = None
        if ctx.needs_input_grad[0]:
            grad_c = _sum_to_shape(grad * slope, ctx.coeffs_shape)
        if ctx.needs_input_grad[1]:
            grad_q = _sum_to_shape(grad * dq, ctx.q_shape)
        return grad_c, grad_q, None, None, None


def _sum_to_shape(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if g.shape == shape:
        return g
    return g.sum_to_size(shape)
