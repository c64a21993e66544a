"""Matplotlib figures of an attack (headless: the Agg backend, never a window)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vafa.io.files import save_figure
from vafa.ops.frequency import layout_dct, normalize_block_size, pad_to_blocks
from vafa.run.outcome_metrics import OutcomeMetrics

if TYPE_CHECKING:
    from vafa.run.pipeline import AttackOutcome

__all__ = [
    "attack_figure",
    "channel_dct_pictures",
    "dct_log_magnitude",
    "dct_pictures",
    "label_colors",
]

#: Block side of the DCT pictures of an attack that has no blocks of its own (voxel attacks).
DISPLAY_BLOCK = 32


def dct_log_magnitude(volume01: np.ndarray, block_size: int | Sequence[int] = 32) -> np.ndarray:
    """``log(1 + |c|)`` of the block DCT of a ``[I, J, K]`` volume in [0, 1], in block layout.

    Every block's coefficients sit in place of its voxels (DC at the block's first corner), the
    picture of the per-block frequency content. Same shape as the input (padding cropped).
    """
    sizes = normalize_block_size(block_size)
    x = torch.as_tensor(np.asarray(volume01, dtype=np.float32))[None, None]
    coeffs = layout_dct(pad_to_blocks(x * 255.0 - 128.0, sizes), sizes)
    i, j, k = volume01.shape
    return torch.log1p(coeffs.abs())[0, 0, :i, :j, :k].numpy()


def dct_pictures(
    outcome: AttackOutcome, block_size: int | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The DCT pictures (:func:`dct_log_magnitude`) of an attack's clean and adversarial volume
    (a multi-channel image's first channel; every channel: :func:`channel_dct_pictures`).

    Both volumes are first mapped into [0, 1] by the model card's intensity mapping (what the
    model and the attack see), so the two pictures compare coefficient by coefficient.

    Args:
        outcome: a :func:`vafa.run.pipeline.run_attack` outcome.
        block_size: DCT block size; default: the attack's own (VAFA), else
            :data:`DISPLAY_BLOCK`.

    Returns:
        ``(clean, adversarial)``: float32 ``[I, J, K]`` on the grid of ``outcome.adversarial``
        (the input grid with ``resample_back=True``, else the model grid).
    """
    return channel_dct_pictures(outcome, block_size, first_only=True)[0]


def channel_dct_pictures(
    outcome: AttackOutcome, block_size: int | Sequence[int] | None = None, first_only=False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`dct_pictures` of every input channel (one pair for a single-channel image), or
    of the first only."""
    model_input = outcome.model_input
    if block_size is None:
        block_size = (outcome.settings.get("attack") or {}).get("block_size") or DISPLAY_BLOCK
    if model_input.resampled and outcome.settings.get("resample_back"):
        clean01 = model_input.mapping.forward(model_input.source.array)
    else:
        clean01 = model_input.tensor[0].numpy()
    adversarial01 = model_input.mapping.forward(outcome.adversarial.array)
    clean01 = clean01.reshape(-1, *clean01.shape[-3:])  # [C, I, J, K]
    adversarial01 = adversarial01.reshape(-1, *adversarial01.shape[-3:])
    count = 1 if first_only else len(clean01)
    return [
        (dct_log_magnitude(c, block_size), dct_log_magnitude(a, block_size))
        for c, a in zip(clean01[:count], adversarial01[:count], strict=True)
    ]


def label_colors(n: int) -> np.ndarray:
    """``[n, 4]`` RGBA colours: transparent background, a qualitative colour per class."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    colors = np.array([cmap(i % 20) for i in range(n)], dtype=float)
    colors[0, 3] = 0.0
    return colors


def attack_figure(
    clean01: np.ndarray,
    adversarial01: np.ndarray,
    clean_prediction: np.ndarray,
    adversarial_prediction: np.ndarray,
    metrics: OutcomeMetrics,
    path: str | os.PathLike,
    *,
    block_size: int | Sequence[int] = 32,
    amplify: float | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG: axial and coronal slices of clean, adversarial, amplified perturbation, DCT
    log-magnitude clean vs adversarial, both predictions over the image; Dice bars per class.

    Arrays are ``[I, J, K]`` in file voxel order (model grid): images in [0, 1], predictions
    as class indices. ``metrics``: a :func:`vafa.run.pipeline.run_attack` outcome's metrics.
    The figure is written atomically (temporary file, then rename).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    clean01, adversarial01 = np.asarray(clean01), np.asarray(adversarial01)
    perturbation = adversarial01 - clean01
    # scale so that the bulk of the perturbation is visible (a few edge voxels may saturate)
    limit = (
        float(np.percentile(np.abs(perturbation), 99.5)) or float(np.abs(perturbation).max()) or 1.0
    )
    amplify = amplify or max(1.0, round(0.5 / limit))
    names = list(metrics.class_names)
    n_classes = max(len(names), int(max(clean_prediction.max(), adversarial_prediction.max())) + 1)
    dct_clean = dct_log_magnitude(clean01, block_size)
    dct_adv = dct_log_magnitude(adversarial01, block_size)
    dct_max = float(np.percentile(dct_clean, 99.9))
    fg = np.argwhere(clean_prediction > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.array(clean01.shape) // 2
    views = {"axial": lambda a: a[:, :, centre[2]].T, "coronal": lambda a: a[:, centre[1], :].T}

    fig = plt.figure(figsize=(21, 9.5), dpi=90)
    grid = fig.add_gridspec(3, 7, height_ratios=[1, 1, 0.8])
    columns = [
        ("clean", clean01, dict(cmap="gray", vmin=0, vmax=1)),
        ("adversarial", adversarial01, dict(cmap="gray", vmin=0, vmax=1)),
        (
            f"perturbation ×{amplify:g}",
            perturbation * amplify,
            dict(cmap="RdBu_r", vmin=-1, vmax=1),
        ),
        ("DCT log|c| clean", dct_clean, dict(cmap="magma", vmin=0, vmax=dct_max)),
        ("DCT log|c| adversarial", dct_adv, dict(cmap="magma", vmin=0, vmax=dct_max)),
        ("clean prediction", None, clean_prediction),
        ("adversarial prediction", None, adversarial_prediction),
    ]
    labels_style = {"cmap": ListedColormap(label_colors(n_classes)), "vmax": n_classes - 1}
    _slice_panels(fig, grid, views, columns, clean01, labels_style)
    _dice_bars(fig.add_subplot(grid[2, :]), metrics)
    fig.suptitle(title or _summary_title(metrics), fontsize=12)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def _slice_panels(fig, grid, views, columns, clean01: np.ndarray, labels_style) -> None:
    """One row per view (a function cutting a slice), one column per ``(name, data, style)``;
    ``data`` None: the class map ``style`` over the clean slice, drawn with ``labels_style``."""
    for row, (view, cut) in enumerate(views.items()):
        for col, (name, data, style) in enumerate(columns):
            ax = fig.add_subplot(grid[row, col])
            if data is None:
                ax.imshow(cut(clean01), cmap="gray", vmin=0, vmax=1, origin="lower")
                ax.imshow(cut(style), vmin=0, origin="lower", interpolation="nearest",
                          alpha=0.8, **labels_style)  # fmt: skip
            else:
                ax.imshow(cut(data), origin="lower", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(view)


def _dice_bars(ax, metrics: OutcomeMetrics) -> None:
    clean = metrics.dice_per_class.clean or {}
    adv = metrics.dice_per_class.adversarial or {}
    names = [
        n for n in (metrics.class_names or clean) if n != "background" and clean.get(n) is not None
    ]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [clean.get(n) or 0 for n in names], 0.4, label="clean", color="#4477aa")
    ax.bar(x + 0.2, [adv.get(n) or 0 for n in names], 0.4, label="adversarial", color="#ee6677")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.legend(loc="upper right")


def _summary_title(metrics: OutcomeMetrics) -> str:
    parts = [str(metrics.attack or "attack")]
    fg = metrics.dice_fg
    if fg.clean is not None and fg.adversarial is not None:
        parts.append(f"foreground Dice {fg.clean:.3f} → {fg.adversarial:.3f}")
    if metrics.ssim is not None:
        parts.append(f"SSIM {metrics.ssim:.3f}")
    if metrics.normalize:
        parts.append(f"normalize={metrics.normalize}")
    return " · ".join(parts)
