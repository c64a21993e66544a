"""Losses of VAFA and VAFT.

* :class:`DiceCELoss` — the segmentation loss of the paper, numerically MONAI's
  ``DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-6)``
  but able to return one value per sample (attacks keep the best iterate of every sample) and
  to reuse a one-hot target across attack steps.
* :class:`DiceBCELoss` — the same for overlapping sigmoid regions (:mod:`vafa.ops.heads`):
  soft Dice of ``sigmoid(logits)`` + binary cross-entropy with logits, per sample, numerically
  MONAI's ``DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-6)`` (mean over
  the regions) + ``BCEWithLogitsLoss`` (mean over regions and voxels).
* :class:`SSIMLoss` — ``1 − blockwise SSIM`` (:mod:`vafa.ops.ssim`).
* :class:`FrequencyConsistencyLoss` — Eq. 4 of the paper: mean absolute difference between the
  3D DCTs of two logit volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vafa.ops.frequency import apply_along_axes, dct_matrix
from vafa.ops.ssim import BlockSSIM

__all__ = ["DiceBCELoss", "DiceCELoss", "FrequencyConsistencyLoss", "SSIMLoss", "one_hot"]


def one_hot(
    labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Class-index map ``[B, 1, H, W, D]`` → one-hot ``[B, K, H, W, D]``."""
    if labels.dim() != 5 or labels.shape[1] != 1:
        raise ValueError(f"labels must have shape [B, 1, H, W, D], got {tuple(labels.shape)}")
    idx = labels.long()
    out = torch.zeros(
        (labels.shape[0], num_classes, *labels.shape[2:]), dtype=dtype, device=labels.device
    )
    return out.scatter_(1, idx, 1.0)


class DiceCELoss(nn.Module):
    """Soft Dice (squared denominators) + cross-entropy, per sample or averaged.

    Args:
        reduction: ``"mean"`` (scalar, MONAI's value) or ``"none"`` (``[B]``, one per sample;
            their mean equals the ``"mean"`` value).
        smooth_nr: numerator smoothing (paper: 0).
        smooth_dr: denominator smoothing (paper: 1e-6).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.

    ``forward(logits, target)``: ``logits`` ``[B, K, H, W, D]``; ``target`` a class-index map
    ``[B, 1, H, W, D]`` or an already one-hot ``[B, K, H, W, D]`` float tensor.
    """

    def __init__(
        self,
        reduction: str = "mean",
        smooth_nr: float = 0.0,
        smooth_dr: float = 1e-6,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        log_prob = F.log_softmax(logits, dim=1)
        prob = log_prob.exp()
        dims = tuple(range(2, logits.dim()))
        if target.shape[1] == 1 and (k > 1 or not target.is_floating_point()):
            inter, target_sq, ce = self._index_terms(log_prob, prob, target, k)
        else:
            if target.shape != logits.shape:
                raise ValueError(
                    f"target must match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
                )
            inter = (prob * target).sum(dims)
            target_sq = (target * target).sum(dims)
            ce = -(log_prob * target).sum(1).flatten(1).mean(1)
        denom = (prob * prob).sum(dims) + target_sq
        dice = 1.0 - (2.0 * inter + self.smooth_nr) / (denom + self.smooth_dr)  # [B, K]
        loss = self.lambda_dice * dice.mean(1) + self.lambda_ce * ce
        return loss if self.reduction == "none" else loss.mean()

    @staticmethod
    def _index_terms(log_prob, prob, target, k: int):
        """Intersection, Σ target² and cross-entropy from a class-index map, without one-hot.

        Gathers the probability of each voxel's class instead of multiplying by a K-channel
        one-hot volume: fewer passes over ``[B, K, H, W, D]`` forward and backward.
        """
        if target.shape[0] != prob.shape[0] or target.shape[2:] != prob.shape[2:]:
            raise ValueError(
                f"target must have shape [B, 1, *spatial] matching logits {tuple(prob.shape)}, "
                f"got {tuple(target.shape)}"
            )
        index = target.long()
        b = prob.shape[0]
        flat = index.reshape(b, -1)
        p_t = prob.gather(1, index).reshape(b, -1)
        inter = torch.zeros(b, k, dtype=prob.dtype, device=prob.device).scatter_add(1, flat, p_t)
        counts = torch.zeros(b, k, dtype=prob.dtype, device=prob.device)
        counts.scatter_add_(1, flat, torch.ones_like(p_t))
        ce = -log_prob.gather(1, index).reshape(b, -1).mean(1)
        return inter, counts, ce


class DiceBCELoss(DiceCELoss):
    """Soft Dice of sigmoid probabilities (squared denominators) + BCE with logits.

    Same arguments as :class:`DiceCELoss`. ``forward(logits, target)``: ``logits``
    ``[B, K, H, W, D]``, one channel per (possibly overlapping) region; ``target`` region masks
    of the same shape (0/1, any dtype). Computed in float32 (or the logits' dtype if wider).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != logits.shape:
            raise ValueError(
                f"target must be region masks {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        z = logits if logits.dtype == torch.float64 else logits.float()
        t = target.to(z.dtype)
        prob = torch.sigmoid(z)
        dims = tuple(range(2, z.dim()))
        inter = (prob * t).sum(dims)
        denom = (prob * prob).sum(dims) + (t * t).sum(dims)
        dice = 1.0 - (2.0 * inter + self.smooth_nr) / (denom + self.smooth_dr)  # [B, K]
        bce = F.binary_cross_entropy_with_logits(z, t, reduction="none").flatten(1).mean(1)
        loss = self.lambda_dice * dice.mean(1) + self.lambda_ce * bce
        return loss if self.reduction == "none" else loss.mean()


class SSIMLoss(nn.Module):
    """``1 − SSIM`` per block (pytorch-msssim semantics, window 3, σ 1.5 by default).

    ``forward(x, y)`` with ``x``, ``y`` ``[B, C, H, W, D]`` in ``[0, data_range]`` returns the
    scalar loss (``reduction="mean"``) or ``[B]`` (``"none"``).
    """

    def __init__(
        self, block_size: int | Sequence[int] = 32, reduction: str = "mean", **ssim_kwargs
    ):
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.block_size = block_size
        self.reduction = reduction
        self.ssim_kwargs = ssim_kwargs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 1.0 - BlockSSIM(x, self.block_size, **self.ssim_kwargs)(y)
        return loss if self.reduction == "none" else loss.mean()


class FrequencyConsistencyLoss(nn.Module):
    """Eq. 4 of VAFT: ``mean |DCT3D(a) − DCT3D(b)|`` over the whole patch.

    ``a``, ``b``: ``[B, C, H, W, D]`` (logits of the clean and adversarial inputs). The DCT is the
    orthonormal 3D DCT-II of the full patch (one block), per sample and channel.
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(
                f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        mats = [dct_matrix(n, device=a.device, dtype=a.dtype) for n in a.shape[2:]]
        # The DCT is linear: transform the difference once.
        return apply_along_axes(a - b, mats).abs().mean()
