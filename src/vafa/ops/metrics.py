"""Segmentation and perturbation metrics.

Segmentation (class-index maps ``[B, 1, H, W, D]``):
* :func:`dice_per_class` — ``[B, K]``, ``nan`` where the class is absent from the ground truth
  (MONAI's ``ignore_empty=True``); :func:`dice_of_masks` the same of binary masks
  ``[B, K, H, W, D]`` (overlapping sigmoid regions, :mod:`vafa.ops.heads`);
* :func:`dice_summary` — mean over all classes (the paper's DSC, background included) and over
  the foreground classes only;
* :func:`hd95_per_class` — 95th-percentile Hausdorff distance via MONAI, in voxels or mm
  (:func:`hd95_of_masks` of binary masks);
* :func:`flip_rate` — fraction of voxels whose predicted class changed.

Perturbation (volumes ``[B, C, H, W, D]`` in ``[0, 1]``): :func:`ssim` (3D, window 3),
:func:`psnr`, :func:`linf`, :func:`l2`, and :func:`zeroed_fraction` — the share of DCT
coefficients that a quantization table sends to zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from vafa.ops.frequency import block_dct, normalize_block_size
from vafa.ops.ssim import ssim3d

__all__ = [
    "confusion_matrix",
    "dice_of_masks",
    "dice_per_class",
    "dice_summary",
    "flip_rate",
    "hd95_of_masks",
    "hd95_per_class",
    "l2",
    "linf",
    "predict_labels",
    "psnr",
    "quantized_to_zero",
    "ssim",
    "zeroed_fraction",
]


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class map ``[B, 1, ...]`` (int64) of logits ``[B, K, ...]``: ``argmax`` over channels.

    Equal to ``logits.argmax(1, keepdim=True)`` (ties: the first maximal channel wins; NaN
    counts as the maximum) but faster on CPU, where reductions with indices over the channel
    axis of a volume are not vectorised: the maximum is taken without indices, and the first
    channel reaching it is found as the largest of the weights ``K − k`` of the channels equal
    to it. At ``[1, 4, 96³]``, 2 threads: 3.0 ms vs 6.3 ms for ``torch.max(dim=1)`` (which was
    already 8× faster than ``argmax``); ``[1, 14, 96³]``: 6.9 vs 20 ms. Logits holding NaN take
    ``torch.max``'s path, as do logits on a GPU (where it is one kernel).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if (
        logits.dim() < 2
        or logits.shape[1] == 0
        or logits.is_complex()
        or logits.dtype == torch.bool
    ):
        raise ValueError(f"logits must be a real tensor [B, K, ...], got {tuple(logits.shape)}")
    if logits.device.type != "cpu":  # one kernel there, and no host sync for the NaN check
        return torch.max(logits, dim=1, keepdim=True).indices
    top = torch.amax(logits, dim=1, keepdim=True)
    if logits.is_floating_point() and bool(torch.isnan(top).any()):
        return torch.max(logits, dim=1, keepdim=True).indices
    k = logits.shape[1]
    weight = torch.arange(k, 0, -1, dtype=torch.uint8 if k < 256 else torch.int32)
    weight = weight.view(1, k, *([1] * (logits.dim() - 2)))
    first = torch.amax(torch.eq(logits, top) * weight, dim=1, keepdim=True)
    return torch.rsub(first, k).long()


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample confusion matrices ``[B, K, K]`` (rows: ground truth, columns: prediction)."""
    _check_maps(pred, target)
    b = pred.shape[0]
    flat = torch.add(pred.reshape(b, -1).long(), target.reshape(b, -1).long(), alpha=num_classes)
    if b > 1:  # each sample's own range of K² bins
        flat += (torch.arange(b, device=pred.device) * num_classes * num_classes).view(b, 1)
    counts = torch.bincount(flat.flatten(), minlength=b * num_classes * num_classes)
    return counts.view(b, num_classes, num_classes)


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of every class ``[B, K]`` (float64); ``nan`` where the ground truth lacks the class."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    gt = cm.sum(2)
    pr = cm.sum(1)
    dice = 2 * tp / (gt + pr).clamp_min(1)
    return torch.where(gt > 0, dice, torch.full_like(dice, float("nan")))


def dice_of_masks(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of every channel ``[B, K]`` (float64) of binary masks ``[B, K, H, W, D]`` (non-zero
    = inside); ``nan`` where the target's channel is empty."""
    if pred.shape != target.shape or pred.dim() < 3:
        raise ValueError(
            f"masks must have the same shape [B, K, ...], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    p = (pred != 0).flatten(2)
    t = (target != 0).flatten(2)
    tp = (p & t).sum(2).double()
    gt = t.sum(2).double()
    dice = 2 * tp / (gt + p.sum(2).double()).clamp_min(1)
    return torch.where(gt > 0, dice, torch.full_like(dice, float("nan")))


def dice_summary(dice: torch.Tensor) -> dict[str, float]:
    """Means of a ``[B, K]`` or ``[K]`` Dice table: ``{"dice": all classes, "dice_fg": K ≥ 1}``.

    ``nan`` entries (absent classes) are left out of the means.
    """
    d = dice.reshape(-1, dice.shape[-1]).double()
    return {
        "dice": float(torch.nanmean(d).item()),
        "dice_fg": float(torch.nanmean(d[:, 1:]).item()) if d.shape[1] > 1 else float("nan"),
    }


def hd95_per_class(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    """95th-percentile Hausdorff distance ``[B, K]`` (MONAI), in mm when ``spacing`` is given.

    ``nan`` where the class is absent from the ground truth; ``inf`` where it is present in the
    ground truth but missing from the prediction.
    """
    from vafa.ops.losses import one_hot

    _check_maps(pred, target)
    return hd95_of_masks(one_hot(pred, num_classes), one_hot(target, num_classes), spacing)


def hd95_of_masks(
    p1h: torch.Tensor, t1h: torch.Tensor, spacing: Sequence[float] | None = None
) -> torch.Tensor:
    """:func:`hd95_per_class` of binary masks ``[B, K, H, W, D]`` (one channel per class or
    region): ``[B, K]``, ``nan`` where the target's channel is empty, ``inf`` where only the
    prediction's is."""
    from monai.metrics import compute_hausdorff_distance

    if p1h.shape != t1h.shape or p1h.dim() != 5:
        raise ValueError(
            f"masks must have the same shape [B, K, H, W, D], got {tuple(p1h.shape)} and "
            f"{tuple(t1h.shape)}"
        )
    p1h, t1h = (p1h != 0).float(), (t1h != 0).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for every empty class
        hd = compute_hausdorff_distance(
            p1h,
            t1h,
            include_background=True,
            percentile=95,
            spacing=list(spacing) if spacing else None,
        ).double()
    gt_present = t1h.flatten(2).sum(2) > 0
    pred_present = p1h.flatten(2).sum(2) > 0
    hd = torch.where(gt_present & ~pred_present, torch.full_like(hd, float("inf")), hd)
    return torch.where(gt_present, hd, torch.full_like(hd, float("nan")))


def flip_rate(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of voxels whose prediction differs between two maps ``[B, 1, …]`` (class
    maps) or ``[B, K, …]`` (region masks: a voxel counts once, whichever regions changed)."""
    if pred_a.shape != pred_b.shape or pred_a.dim() != 5:
        raise ValueError(
            f"predictions must be [B, 1 or K, H, W, D] of one shape, got {tuple(pred_a.shape)} "
            f"and {tuple(pred_b.shape)}"
        )
    return float((pred_a != pred_b).any(dim=1).double().mean().item())


def ssim(x: torch.Tensor, y: torch.Tensor, win_size: int = 3) -> torch.Tensor:
    """3D SSIM per sample ``[B]`` of volumes in [0, 1] (Gaussian window, σ 1.5)."""
    with torch.no_grad():
        return ssim3d(x.float(), y.float(), win_size=win_size)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample ``[B]`` in dB (``inf`` for identical volumes)."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def linf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest absolute difference per sample ``[B]``."""
    return (x.double() - y.double()).abs().flatten(1).amax(1)


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the difference per sample ``[B]``."""
    return (x.double() - y.double()).flatten(1).norm(dim=1)


def zeroed_fraction(
    images: torch.Tensor, q_tables: torch.Tensor, block_size: int | Sequence[int]
) -> torch.Tensor:
    """Share of block-DCT coefficients of ``images`` that ``q_tables`` quantize to zero.

    Args:
        images: ``[B, C, H, W, D]`` in [0, 1] (the clean volume the attack quantized).
        q_tables: ``[B, C, N, *block_size]`` (:attr:`vafa.AttackResult.q_tables`).
        block_size: the attack's block size.

    Returns:
        ``[B]`` fractions in [0, 1]; counts the DC term too (centred at 128 as in the attack).
    """
    mask = quantized_to_zero(images, q_tables, block_size)
    return mask.flatten(1).double().mean(1)


def quantized_to_zero(
    images: torch.Tensor, q_tables: torch.Tensor, block_size: int | Sequence[int]
) -> torch.Tensor:
    """Boolean ``[B, C, N, *block_size]``: coefficients with ``round(c / q) == 0``."""
    sizes = normalize_block_size(block_size)
    coeffs = block_dct(images.float() * 255.0 - 128.0, sizes)
    if coeffs.shape != q_tables.shape:
        raise ValueError(
            f"q_tables must have shape {tuple(coeffs.shape)} for these images and block_size "
            f"{sizes}, got {tuple(q_tables.shape)}"
        )
    return torch.floor(coeffs / q_tables.to(coeffs) + 0.5) == 0


def _check_maps(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"label maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dim() != 5 or a.shape[1] != 1:
        raise ValueError(f"label maps must have shape [B, 1, H, W, D], got {tuple(a.shape)}")
