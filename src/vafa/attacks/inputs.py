"""What an attack accepts: images ``[B, C, H, W, D]`` in [0, 1] and class-index labels
``[B, 1, H, W, D]`` (each refusal names the offending value)."""

from __future__ import annotations

import torch

__all__ = ["check_images", "check_labels"]


def check_images(images, clamp: bool) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``images`` is a finite float ``[B, C, H, W, D]``
    tensor in [0, 1] (any range when ``clamp``)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 5:
        raise ValueError(
            f"images must have shape [B, C, H, W, D] (5 dims), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating point tensor in [0, 1], got dtype {images.dtype}"
        )
    if images.numel() == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"images must be finite, got {bad} NaN/Inf voxel(s)")
    if not clamp:
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                "(map intensities first, or pass clamp_inputs=True)"
            )


def check_labels(labels, images) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``labels`` is a class-index map ``[B, 1, H, W, D]``
    matching ``images``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    expected = (images.shape[0], 1, *images.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels must have shape {expected} to match images, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        if not bool(torch.isfinite(labels).all()) or not bool((labels == labels.round()).all()):
            raise ValueError("labels must hold integer class indices, got non-integer values")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must be an integer class-index map, got dtype {labels.dtype}")
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be >= 0, got minimum {labels.min().item()}")
