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

"Correct" compares the prediction (:meth:`vafa.ops.heads.Heads.predict`) with the target (the
labels, or the clean prediction when none are given), as the attacks' Dice does.

Models with overlapping sigmoid regions (``heads`` with ``activation="sigmoid"``): every region
is a binary classifier of every voxel, so the per-voxel terms are taken per (voxel, region):
``CE`` is the binary cross-entropy with logits, "correct" the thresholded region against the
target's region, and CosPGD's cosine that of the region's two-class distribution
``(p, 1 − p)`` with the one-hot target, ``p_y / √(p² + (1 − p)²)``; the means run over voxels
and regions (:meth:`~vafa.ops.heads.Heads.voxel_loss`, :meth:`~vafa.ops.heads.Heads.voxel_wrong`,
:meth:`~vafa.ops.heads.Heads.voxel_cosine`).
"""

from __future__ import annotations

import torch

from vafa.attacks.voxel import PGD

__all__ = ["CosPGD", "SegPGD"]


class SegPGD(PGD):
    """PGD with SegPGD's loss (module docstring); same options as :class:`PGD`."""

    name = "SegPGD"
    label = "SegPGD"

    def segmentation_loss(self, logits, target, step: int) -> torch.Tensor:
        ce = self.heads.voxel_loss(logits, target)
        wrong = self.heads.voxel_wrong(logits, target).to(ce.dtype)
        lam = step / (2.0 * self.steps)  # step is 0-based: λ_t = (t − 1) / (2T)
        per_voxel = (1.0 - lam) * ce * (1.0 - wrong) + lam * ce * wrong
        return per_voxel.flatten(1).mean(dim=1)


class CosPGD(PGD):
    """PGD with CosPGD's loss (module docstring); same options as :class:`PGD`."""

    name = "CosPGD"
    label = "CosPGD"

    def segmentation_loss(self, logits, target, step: int) -> torch.Tensor:
        ce = self.heads.voxel_loss(logits, target)
        weight = self.heads.voxel_cosine(logits, target)  # a constant of the gradient
        return (weight * ce).flatten(1).mean(dim=1)
