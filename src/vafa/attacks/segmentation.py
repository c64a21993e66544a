"""Segmentation-specific voxel attacks: SegPGD and CosPGD.

Both are PGD (same L∞ ball of ``eps``/255, step ``alpha``, random start, steps) whose loss
reweights the per-voxel cross-entropy ``CE_v`` of the logits against the target:

* **SegPGD** (Gu et al., ECCV 2022): ``L_t = mean_v[(1 − λ_t)·CE_v·[v correct] +
  λ_t·CE_v·[v wrong]]`` with ``λ_t = (t − 1) / (2T)`` at step ``t`` of ``T`` (1-based): early
  steps push the still-correct voxels, later ones give the already-fooled voxels more weight.
  The evaluation after the last update uses ``λ = T / (2T) = 1/2``.
* **CosPGD** (Agnihotri et al., ICML 2024): ``L = mean_v cos(softmax(z_v), onehot(y_v))·CE_v``,
  the weight detached (it scales the gradient, it is not differentiated): voxels the model
  already gets wrong weigh less.

"Correct" compares the argmax of the logits with the target (the labels, or the clean
prediction when none are given), as the attacks' Dice does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vafa.attacks.voxel import PGD

__all__ = ["CosPGD", "SegPGD"]


def _voxel_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, D]`` cross-entropy of logits ``[B, K, …]`` against ``target`` ``[B, 1, …]``."""
    return F.cross_entropy(logits.float(), target[:, 0], reduction="none")


class SegPGD(PGD):
    """PGD with SegPGD's loss (module docstring); same options as :class:`PGD`."""

    name = "SegPGD"
    label = "SegPGD"

    def segmentation_loss(self, logits, target, step: int) -> torch.Tensor:
        ce = _voxel_ce(logits, target)
        wrong = (logits.max(dim=1).indices != target[:, 0]).to(ce.dtype)  # max: argmax is slow
        lam = step / (2.0 * self.steps)  # step is 0-based: λ_t = (t − 1) / (2T)
        per_voxel = (1.0 - lam) * ce * (1.0 - wrong) + lam * ce * wrong
        return per_voxel.flatten(1).mean(dim=1)


class CosPGD(PGD):
    """PGD with CosPGD's loss (module docstring); same options as :class:`PGD`."""

    name = "CosPGD"
    label = "CosPGD"

    def segmentation_loss(self, logits, target, step: int) -> torch.Tensor:
        ce = _voxel_ce(logits, target)
        with torch.no_grad():  # the weight scales the gradient; it is not differentiated
            probabilities = torch.softmax(logits.float(), dim=1)
            # cos(p, onehot(y)) = p_y / ‖p‖ (‖onehot‖ = 1; ‖p‖ ≥ 1/√K, never near 0)
            p_target = probabilities.gather(1, target).squeeze(1)
            # (a channel sum: torch.linalg.vector_norm over dim 1 is ~6x slower on CPU)
            weight = p_target * (probabilities * probabilities).sum(dim=1).rsqrt()
        return (weight * ce).flatten(1).mean(dim=1)
