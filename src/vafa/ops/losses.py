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
from torch.autograd.function import once_differentiable

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
        if target.shape[1] == 1 and (k > 1 or not target.is_floating_point()):
            if target.shape[0] != logits.shape[0] or target.shape[2:] != logits.shape[2:]:
                raise ValueError(
                    f"target must have shape [B, 1, *spatial] matching logits "
                    f"{tuple(logits.shape)}, got {tuple(target.shape)}"
                )
            weights = (self.lambda_dice, self.lambda_ce, self.smooth_nr, self.smooth_dr)
            loss = _IndexDiceCE.apply(logits, target.long(), weights)
        else:
            loss = self._one_hot_loss(logits, target)
        return loss if self.reduction == "none" else loss.mean()

    def _one_hot_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[B]`` loss against a one-hot (or soft) target ``[B, K, …]``, by autograd."""
        if target.shape != logits.shape:
            raise ValueError(
                f"target must match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        if logits.dtype in (torch.float16, torch.bfloat16):  # as the class-index path
            logits = logits.float()
        log_prob = F.log_softmax(logits, dim=1)
        prob = log_prob.exp()
        dims = tuple(range(2, logits.dim()))
        inter = (prob * target).sum(dims)
        denom = (prob * prob).sum(dims) + (target * target).sum(dims)
        dice = 1.0 - (2.0 * inter + self.smooth_nr) / (denom + self.smooth_dr)  # [B, K]
        ce = -(log_prob * target).sum(1).flatten(1).mean(1)
        return self.lambda_dice * dice.mean(1) + self.lambda_ce * ce


class _IndexDiceCE(torch.autograd.Function):
    """``[B]`` Dice-CE of logits ``z`` ``[B, K, …]`` against a class-index map ``t``
    ``[B, 1, …]``, without a one-hot volume and with a hand-derived backward.

    With ``p = softmax(z)``, ``I_k = Σ_{t=k} p_k``, ``D_k = Σ p_k² + #{t=k} + smooth_dr`` and
    ``N`` voxels: ``loss = λ_d·mean_k(1 − (2I_k + smooth_nr)/D_k) + λ_ce·mean(lse(z) − z_t)``.
    Its gradient, with ``a_k = 2λ_d(2I_k + smooth_nr)/(K·D_k²)`` and ``b_k = 2λ_d/(K·D_k)``, is
    ``∂/∂z_k = p_k·(a_k·p_k − Σ_j a_j·p_j² + b_t·p_t + λ_ce/N) − [t=k]·(b_k·p_k + λ_ce/N)``:
    about five passes over ``[B, K, …]`` each way where autograd's log-softmax, gathers and
    scatters make about twenty. Half-precision logits are computed in float32 (also under a
    caller's autocast), the per-class sums in float64.
    """

    @staticmethod
    def forward(ctx, logits, index, weights: tuple[float, float, float, float]):
        lambda_dice, lambda_ce, smooth_nr, smooth_dr = weights
        z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        b, k = z.shape[:2]
        with torch.autocast(z.device.type, enabled=False):  # a caller's autocast: not here
            log_prob = F.log_softmax(z, dim=1)
            flat = index.reshape(b, -1)
            log_p_t = log_prob.gather(1, index).reshape(b, -1)
            ce = -log_p_t.mean(1)
            prob = log_prob.exp_()  # softmax, in place of its log
            p_t = log_p_t.exp_()
            flat_prob = prob.reshape(b, k, 1, -1)
            squares = (flat_prob @ flat_prob.transpose(2, 3)).reshape(b, k)
        # per-class sums in float64 (float32 counts stop at 2**24 voxels: a whole CT volume),
        # except on Apple's MPS, which has no float64
        wide = torch.float32 if z.device.type == "mps" else torch.float64
        sums = torch.zeros(2, b, k, dtype=wide, device=z.device)
        sums[0].scatter_add_(1, flat, p_t.to(wide))
        sums[1].scatter_add_(1, flat, sums.new_ones(1).expand(flat.shape))
        numer = sums[0].mul_(2.0).add_(smooth_nr)
        denom = sums[1].add_(squares).add_(smooth_dr)
        dice = (1.0 - numer / denom).mean(1).to(z.dtype)
        ctx.save_for_backward(prob, index, p_t, numer, denom)
        ctx.weights, ctx.dtype = weights, logits.dtype
        return lambda_dice * dice + lambda_ce * ce

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        prob, index, p_t, numer, denom = ctx.saved_tensors
        lambda_dice, lambda_ce, _, _ = ctx.weights
        b, k = prob.shape[:2]
        g = grad.to(numer.dtype).view(b, 1)
        a = numer.div(denom * denom).mul_(g * (2.0 * lambda_dice / k)).to(prob.dtype)  # [B, K]
        b_k = denom.reciprocal().mul_(g * (2.0 * lambda_dice / k)).to(prob.dtype)
        ce = (g * (lambda_ce / p_t.shape[1])).to(prob.dtype)  # [B, 1]
        shape = (b, k) + (1,) * (prob.dim() - 2)
        weighted = prob * a.view(shape)  # a_k·p_k
        flat = index.reshape(b, -1)
        per_voxel = b_k.gather(1, flat).mul_(p_t)  # b_t·p_t
        shift = per_voxel.add(ce).view(b, 1, *prob.shape[2:])
        shift.sub_(_class_dot(weighted, prob))
        out = weighted.add_(shift).mul_(prob)
        out.scatter_add_(1, index, per_voxel.add_(ce).neg_().view_as(index).to(out.dtype))
        return out.to(ctx.dtype), None, None


def _class_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ_k a_k·b_k`` over the classes of ``[B, K, …]`` tensors → ``[B, 1, …]``, one
    multiply-add per class (no ``[B, K, …]`` temporary: about half the time of a product and a
    sum at 4 classes)."""
    out = torch.mul(a[:, :1], b[:, :1])
    for k in range(1, a.shape[1]):
        out.addcmul_(a[:, k : k + 1], b[:, k : k + 1])
    return out


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
