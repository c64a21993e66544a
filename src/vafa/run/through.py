"""The threat model: what an attack differentiates through.

* ``"tiles"`` (the paper, the published code): the attack runs on non-overlapping tiles of the
  model's ROI, each tile's loss on the model's output for that tile
  (:func:`vafa.run.tiling.iter_attack_volume`).
* ``"sliding-window"``: the attack targets the deployed prediction — the model's own
  overlapping sliding window (:mod:`vafa.run.windows`: the card's window placement, overlap,
  importance weights, padding and test-time flips) over the whole volume — and differentiates
  through it. VAFA's DCT blocks and every perturbation then live in the one volume, so
  overlapping windows see one consistent adversarial volume.

:class:`DeployedModel` makes the deployed prediction a differentiable module whose backward pass
is memory-bounded: the forward pass runs without a graph and keeps only its input; the backward
pass recomputes the windows batch by batch, each with its own small graph, and adds their
input gradients (the prediction is linear in the window logits, so this is the exact
gradient). Peak memory: one window batch's graph plus the volume, its logits and gradients —
not every window's graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vafa.io.inference import Inference
from vafa.run.windows import plan_windows, window_logits, windowed_logits

__all__ = ["THREAT_MODELS", "DeployedModel", "check_through"]

#: What an attack can differentiate through (``--through``).
THREAT_MODELS = ("tiles", "sliding-window")


def check_through(value: Any) -> str:
    """``value`` as one of :data:`THREAT_MODELS` (``deployed`` is ``sliding-window``)."""
    text = str(value).strip().lower().replace("_", "-")
    text = {"deployed": "sliding-window", "sliding": "sliding-window", "sw": "sliding-window"}.get(
        text, text
    )
    if text not in THREAT_MODELS:
        raise ValueError(f"through must be one of {list(THREAT_MODELS)}, got {value!r}")
    return text


class DeployedModel(nn.Module):
    """``model``'s deployed prediction of a whole volume as one differentiable module.

    Args:
        model: maps ``[N, C, *roi]`` windows to logits ``[N, K, *roi]``.
        roi: the window, normally ``card.roi_size``.
        inference: normally ``card.inference`` (placement, overlap, weights, flips).

    ``forward(x [B, C, H, W, D]) -> [B, K, H, W, D]`` logits, equal to
    :func:`vafa.run.windows.windowed_logits`; its gradient with respect to ``x`` is computed
    window batch by window batch (module docstring). The wrapped model's parameters get no
    gradient (attacks freeze them).
    """

    def __init__(self, model: nn.Module, roi, inference: Inference) -> None:
        super().__init__()
        self.model = model
        self.roi = tuple(roi)
        self.inference = inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return windowed_logits(self.model, x, self.roi, self.inference)
        return _Deployed.apply(x, self)


class _Deployed(torch.autograd.Function):
    """Forward without a graph; backward window batch by window batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: DeployedModel) -> torch.Tensor:
        ctx.module = module
        ctx.save_for_backward(x)
        with torch.no_grad():
            return windowed_logits(module.model, x, module.roi, module.inference)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        module: DeployedModel = ctx.module
        plan = plan_windows(x.shape[2:], module.roi, module.inference)
        device = next((p.device for p in module.model.parameters()), x.device)
        b = x.shape[0]
        # d logits / d (weighted window sums) = 1/n on the padded grid; outside the crop: 0
        upstream = grad_out.new_zeros((b, grad_out.shape[1], *plan.padded_shape))
        plan.crop(upstream).copy_(grad_out)
        upstream = upstream / plan.normalizer(x.device, grad_out.dtype)
        weights = plan.weights.to(device, grad_out.dtype)
        with torch.no_grad():
            padded = plan.pad(x.detach())
        grad_padded = torch.zeros_like(padded)
        for batch in plan.batches():
            windows = torch.cat([padded[(slice(None), slice(None), *sl)] for sl in batch])
            windows = windows.to(device).requires_grad_(True)
            wanted = torch.cat([upstream[(slice(None), slice(None), *sl)] for sl in batch])
            with torch.enable_grad():
                logits = window_logits(module.model, windows, module.inference)
                (grad_windows,) = torch.autograd.grad(logits, windows, wanted.to(device) * weights)
            for j, sl in enumerate(batch):
                part = grad_windows[j * b : (j + 1) * b].to(grad_padded.device, grad_padded.dtype)
                grad_padded[(slice(None), slice(None), *sl)] += part
        if plan.padded_shape == tuple(x.shape[2:]):
            return grad_padded, None
        with torch.enable_grad():  # the padding's adjoint (constant, replicate, reflect…)
            leaf = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(plan.pad(leaf), leaf, grad_padded)
        return grad_x, None
