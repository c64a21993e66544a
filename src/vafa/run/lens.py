"""The live lens: an attack of one cube around a point of interest, fast enough to follow sliders.

A whole volume takes tens of seconds on a CPU (the demo model, 20 VAFA steps: 24–32 s); a
64³ cube with 10 steps takes under a second. :func:`iter_lens` attacks such a cube of the model
input — the same attack, options and seed as a full run, on the cube alone (the model sees no
context beyond it) — and returns a :class:`LensResult` with both predictions, Dice and SSIM of
the cube and the run's :class:`~vafa.run.history.StepHistory` (for a step scrubber).

:func:`plan_lens` chooses the cube's size and the steps from a measured step time so that a
lens answers within a time budget (:func:`measure_step_seconds` times one forward and backward
pass of the model); bigger models get a smaller cube, then fewer steps, and the plan says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vafa.attacks import build_attack
from vafa.attacks.base import StepEvent
from vafa.ops.heads import SOFTMAX, Heads
from vafa.ops.metrics import ssim
from vafa.run.history import DEFAULT_HISTORY_CAP, StepHistory
from vafa.run.tiles import Slices
from vafa.run.tiling import iter_attack_volume

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_LENS_SIZE",
    "LensPlan",
    "LensResult",
    "iter_lens",
    "lens_region",
    "measure_step_seconds",
    "plan_lens",
]

#: Side of the lens cube (voxels of the model grid).
DEFAULT_LENS_SIZE = 64
#: Seconds a lens should take.
DEFAULT_BUDGET = 1.0
#: Smallest cube side the planner goes down to.
MIN_LENS_SIZE = 32
#: An attack step costs about this many model forward+backward passes (VAFA's DCT, SSIM and
#: bookkeeping: measured 1.2–1.5× on 2 CPU threads), and a run two more forwards (clean
#: prediction, final evaluation) ≈ one more pass.
STEP_OVERHEAD = 1.4
SETUP_PASSES = 1.0


@dataclass(frozen=True)
class LensPlan:
    """Size and steps of a lens, and why.

    Attributes:
        size: side of the cube (voxels).
        steps: attack steps.
        seconds: the predicted time of the lens.
        note: what was changed from the request to fit the budget ("" when nothing was).
    """

    size: int
    steps: int
    seconds: float
    note: str = ""


def lens_region(shape: Sequence[int], center: Sequence[float], size: int | Sequence[int]) -> Slices:
    """The cube of side ``size`` around ``center`` (voxel coordinates), inside ``shape``.

    An axis shorter than the cube is taken whole; a cube that would leave the volume is moved
    inward (like the tiling's edge tiles).
    """
    sizes = (int(size),) * 3 if isinstance(size, int | np.integer) else tuple(map(int, size))
    if len(shape) != 3 or len(center) != 3 or len(sizes) != 3:
        raise ValueError(f"shape, center and size must have 3 entries, got {shape}, {center}")
    region = []
    for n, c, s in zip(shape, center, sizes, strict=True):
        s = min(s, int(n))
        start = round(float(c)) - s // 2
        start = min(max(start, 0), int(n) - s)
        region.append(slice(start, start + s))
    return tuple(region)  # type: ignore[return-value]


def measure_step_seconds(
    model: nn.Module,
    size: int,
    channels: int = 1,
    device: str | torch.device | None = None,
    *,
    warmup: int = 3,
    passes: int = 2,
) -> float:
    """Seconds of one model forward and backward pass (input gradient) on a ``size``³ cube.

    The fastest of ``passes`` passes after ``warmup`` ones (a CPU library builds its kernels
    for a new shape over the first few passes: 5–10× slower). The model's training flag and
    ``requires_grad`` are restored.

    Raises:
        ValueError: the model does not accept a cube of this size (the message says so).
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, channels, size, size, size), generator=generator).to(device)
    x.requires_grad_(True)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        times = []
        for _ in range(warmup + passes):
            start = time.perf_counter()
            out = model(x)
            out = out if isinstance(out, torch.Tensor) else out[0]
            (grad,) = torch.autograd.grad(out.float().square().mean(), x)
            if grad.device.type == "cuda":
                torch.cuda.synchronize(grad.device)
            times.append(time.perf_counter() - start)
        return min(times[warmup:])
    except RuntimeError as err:
        raise ValueError(f"the model does not accept a {size}³ cube: {err}") from err
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def plan_lens(
    pass_seconds: float,
    *,
    size: int = DEFAULT_LENS_SIZE,
    steps: int,
    budget: float = DEFAULT_BUDGET,
    fixed_size: bool = False,
) -> LensPlan:
    """The lens that answers within ``budget`` seconds.

    Args:
        pass_seconds: one forward+backward pass on a ``size``³ cube
            (:func:`measure_step_seconds`); other sizes scale with the voxel count.
        size: the wanted side.
        steps: the wanted steps.
        budget: seconds.
        fixed_size: the model accepts only this size (e.g. a transformer with a fixed input):
            only the steps may shrink.

    Rule: the wanted size and steps when they fit; else the largest cube side (a multiple of
    16, at least :data:`MIN_LENS_SIZE`) that fits with all steps; else the smallest side with
    as many steps as fit (at least 1).
    """
    if pass_seconds <= 0 or not math.isfinite(pass_seconds):
        raise ValueError(f"pass_seconds must be a positive number, got {pass_seconds}")
    steps = max(int(steps), 0)

    def cost(side: int, n: int) -> float:
        t = pass_seconds * (side / size) ** 3
        return t * (STEP_OVERHEAD * n + SETUP_PASSES)

    if cost(size, steps) <= budget:
        return LensPlan(size, steps, cost(size, steps))
    sides = [] if fixed_size else [s for s in range(size - size % 16, MIN_LENS_SIZE - 1, -16)]
    for side in sides:
        if side < size and cost(side, steps) <= budget:
            note = f"cube {side}³ instead of {size}³ to answer within {budget:g} s"
            return LensPlan(side, steps, cost(side, steps), note)
    side = size if fixed_size or not sides else min(sides[-1], size)
    per_step = cost(side, 1) - cost(side, 0)
    fit = max(1, int((budget - cost(side, 0)) / per_step)) if per_step > 0 else steps
    fit = min(fit, steps) if steps else 0
    note = f"{fit} of {steps} steps" + ("" if side == size else f", cube {side}³")
    note += f" to answer within {budget:g} s"
    if cost(side, fit) > budget:
        note += f" (this model needs ≈{cost(side, fit):.1f} s even so)"
    return LensPlan(side, fit, cost(side, fit), note)


@dataclass
class LensResult:
    """One lens (arrays of the cube, model grid, ``(H, W, D)`` order).

    Attributes:
        region: the cube's slices in the model input.
        clean01, adversarial01: ``[C, h, w, d]`` float32 in [0, 1].
        clean_prediction, adversarial_prediction: ``[h, w, d]`` class maps of the cube alone.
        dice_clean, dice_adversarial: foreground Dice against the labels (or, without labels,
            the clean prediction: then ``dice_clean`` is 1).
        ssim: SSIM between the clean and the adversarial cube.
        q_table: VAFA: ``[C, h, w, d]`` the returned iterate's quantization step per voxel
            position (:func:`vafa.run.tiling.q_table_layout`), else None.
        returned_step: the step whose iterate was returned (``keep="best"``: the strongest).
        history: the run's iterates, step by step.
        settings: the attack's settings.
        cancelled: a newer request stopped it (the best iterate so far is returned).
        seconds: wall-clock time of the lens.
        plan: the :class:`LensPlan` it ran with (None when not planned).
    """

    region: Slices
    clean01: np.ndarray
    adversarial01: np.ndarray
    clean_prediction: np.ndarray
    adversarial_prediction: np.ndarray
    dice_clean: float
    dice_adversarial: float
    ssim: float
    q_table: np.ndarray | None
    returned_step: int | str | None
    history: StepHistory
    settings: dict[str, Any]
    cancelled: bool
    seconds: float
    plan: LensPlan | None = None
    labels_used: bool = field(default=False)


def iter_lens(
    model: nn.Module,
    x01: torch.Tensor,
    labels: torch.Tensor | None,
    region: Slices,
    *,
    num_classes: int,
    attack: str = "vafa",
    options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    device: str | torch.device = "auto",
    size: int | None = None,
    plan: LensPlan | None = None,
    history_cap: int = DEFAULT_HISTORY_CAP,
    heads: Heads | None = None,
) -> Generator[StepEvent, bool | None, LensResult]:
    """Attack the cube ``region`` of ``x01``; yields every step, ``send(False)`` cancels.

    Args:
        model: the segmentation network.
        x01: ``[1, C, H, W, D]`` the model input in [0, 1] (model grid).
        labels: ``[1, 1, H, W, D]`` class map on the same grid, or None (the model's own
            prediction of the cube is attacked).
        region: the cube (:func:`lens_region`).
        num_classes: classes the model predicts (Dice).
        attack, options, seed, device: as :func:`vafa.run.pipeline.run_attack`.
        size: side the cube is padded to when the volume is smaller (None: the region's
            largest side).
        plan: recorded in the result.
        history_cap: memory bound of the history (bytes).
        heads: how the outputs are read (``card.heads()``; None: softmax classes): sigmoid
            regions are attacked and scored per region, their predictions merged into labels.

    Returns:
        :class:`LensResult`.
    """
    start = time.perf_counter()
    index = (slice(None), slice(None), *region)
    crop = x01[index]
    target = None if labels is None else labels[index]
    side = size or max(s.stop - s.start for s in region)
    heads = SOFTMAX if heads is None else heads
    built = build_attack(attack, model, **dict(options or {}), seed=seed, device=device,
                         heads=heads)  # fmt: skip
    history = StepHistory(crop.detach().float().cpu(), built.steps, roi=(side,) * 3,
                          with_tables=attack.startswith("vafa"), cap_bytes=history_cap,
                          merge=heads.merge)  # fmt: skip
    result = yield from history.recording(iter_attack_volume(built, crop, target, roi=side))
    clean_masks, adv_masks = result.tile_clean_prediction, result.tile_adversarial_prediction
    reference = clean_masks if target is None else heads.target(target, num_classes)
    clean_pred, adv_pred = heads.merge(clean_masks)[0, 0], heads.merge(adv_masks)[0, 0]
    history.set_clean_prediction(clean_pred)
    adversarial = result.adversarial.detach().float().cpu()
    clean = crop.detach().float().cpu()
    q_layout = result.q_layout()
    tiles = result.tile_results
    returned = [row["step"] for row in tiles[0]["history"] if row.get("returned")] if tiles else []
    return LensResult(
        region=region,
        clean01=clean[0].numpy(),
        adversarial01=adversarial[0].numpy(),
        clean_prediction=clean_pred.cpu().numpy(),
        adversarial_prediction=adv_pred.cpu().numpy(),
        dice_clean=_foreground_dice(heads, clean_masks, reference, num_classes),
        dice_adversarial=_foreground_dice(heads, adv_masks, reference, num_classes),
        ssim=float(ssim(clean, adversarial)[0]),
        q_table=None if q_layout is None else q_layout[0].numpy(),
        returned_step=returned[0] if returned else None,
        history=history,
        settings=dict(result.settings),
        cancelled=result.cancelled,
        seconds=time.perf_counter() - start,
        plan=plan,
        labels_used=target is not None,
    )


def _foreground_dice(heads: Heads, prediction, reference, num_classes: int) -> float:
    """Mean foreground Dice (classes ≥ 1, or every region) of a prediction of ``heads``
    against a reference in the same form (absent classes left out)."""
    dice = heads.foreground(heads.dice(prediction, reference.to(prediction.device), num_classes))
    return float(torch.nanmean(dice[0].double())) if dice.numel() else float("nan")
