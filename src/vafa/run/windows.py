"""Sliding-window prediction as MONAI or nnU-Net make it, in plain torch operations.

A volume ``x`` (``[B, C, H, W, D]``) is padded up to the window where it is shorter (centred,
the odd voxel after, :func:`vafa.run.tiles.tile_padding`), cut into windows ``P_w x`` of the
model's ``roi``, each window's logits ``f(P_w x)`` (averaged over test-time flips) are weighted
by the importance map ``g`` and added where the window lies, and the sum is divided by the
summed weights ``n``::

    logits = crop( Σ_w P_wᵀ (g ⊙ f(P_w x)) / n )

The logits are averaged, never probabilities: MONAI's ``SlidingWindowInferer`` and nnU-Net
average the network's output and apply softmax/argmax or (MONAI bundles with overlapping
regions) sigmoid/threshold afterwards; :class:`vafa.ops.heads.Heads` reads the average.

Everything is torch arithmetic: called with gradients enabled it is differentiable, and
because the result is linear in the window logits an attack can take the exact gradient
window batch by window batch (recompute :meth:`WindowPlan.batches` with a graph, pass each
batch its slice of the incoming gradient times ``g / n``). :func:`windowed_logits` is the
loop; :func:`plan_windows`, :func:`window_logits` and :func:`add_windows` are its parts.

Window positions per axis of length ``size`` (after padding) for window ``roi``:

- ``windows="monai"`` (MONAI's ``dense_patch_slices``): every ``int(roi·(1 − overlap))``
  voxels (at least 1), the last window shifted inward to end at the edge;
- ``windows="nnunet"`` (nnU-Net's ``compute_steps_for_sliding_window``, tile step
  ``1 − overlap``): ``n = ⌈(size − roi) / (roi·step)⌉ + 1`` windows spread evenly, starts
  rounded to whole voxels.

Importance maps (``mode="gaussian"``, σ = ``sigma_scale · roi`` per axis):

- MONAI: ``exp(−x²/2σ²)`` per axis over ``x = −(roi−1)/2 … (roi−1)/2`` (the centre between
  voxels for an even roi), their product, raised to at least ``max(min, 10⁻³)``, float32;
- nnU-Net: a unit impulse at voxel ``roi // 2`` blurred by a normalised Gaussian kernel cut at
  4σ (so voxels farther than ``int(4σ + 0.5)`` get 0), scaled to a maximum of 10, rounded to
  float16, zeros raised to the smallest non-zero weight.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from vafa.io.inference import Inference
from vafa.io.wrapped import NormalizedInput
from vafa.ops.checks import numbers_per_channel, positive_int, positive_triple
from vafa.run.tiles import Slices, tile_padding

__all__ = [
    "WindowPlan",
    "add_windows",
    "importance_map",
    "plan_windows",
    "window_logits",
    "window_starts",
    "windowed_logits",
]


# --------------------------------------------------------------------------- where and how much
def window_starts(size: int, roi: int, overlap: float, windows: str = "monai") -> list[int]:
    """Start indices of the windows along one axis (``size >= roi``: padded first).

    Example:
        >>> window_starts(20, 16, 0.5), window_starts(20, 16, 0.5, "nnunet")
        ([0, 4], [0, 4])
        >>> window_starts(110, 64, 0.5, "nnunet"), window_starts(110, 64, 0.5)
        ([0, 23, 46], [0, 32, 46])
    """
    size, roi = positive_int("size", size), positive_int("roi", roi)
    if size <= roi:
        return [0]
    if windows == "nnunet":  # n windows spread evenly over size - roi, rounded
        step = roi * (1.0 - overlap)
        n = math.ceil((size - roi) / step) + 1
        return [round((size - roi) / (n - 1) * i) for i in range(n)]
    interval = max(int(roi * (1.0 - overlap)), 1)
    last = math.ceil((size - roi) / interval)
    return [min(d * interval, size - roi) for d in range(last + 1)]


def importance_map(roi: Sequence[int], inference: Inference) -> torch.Tensor:
    """The weight of every voxel of a window (see the module docs): ``[*roi]`` float32 CPU."""
    roi = positive_triple("roi", roi, cube=True)
    if inference.mode == "constant":
        return torch.ones(roi)
    return _gaussian(roi, inference.sigma_scales(), inference.windows).clone()


@lru_cache(maxsize=8)
def _gaussian(roi: tuple[int, ...], sigma_scales: tuple[float, ...], windows: str) -> torch.Tensor:
    sigmas = [r * s for r, s in zip(roi, sigma_scales, strict=True)]
    if windows == "monai":
        out = None
        for r, sigma in zip(roi, sigmas, strict=True):
            x = torch.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=torch.float)
            g = torch.exp(x**2 / (-2 * sigma**2))
            out = g if out is None else out.unsqueeze(-1) * g
        return out.clamp(min=max(float(out.min()), 1e-3))
    out = None
    for r, sigma in zip(roi, sigmas, strict=True):
        radius = int(4.0 * sigma + 0.5)  # the kernel's reach
        x = torch.arange(r, dtype=torch.float64) - r // 2
        g = torch.exp(-0.5 / (sigma * sigma) * x**2)
        norm = torch.exp(-0.5 / (sigma * sigma) * torch.arange(-radius, radius + 1.0) ** 2).sum()
        g = torch.where(x.abs() <= radius, g / norm, torch.zeros_like(g))
        out = g if out is None else out.unsqueeze(-1) * g
    half = (out / (out.max() / 10)).half()
    half[half == 0] = half[half > 0].min()
    return half.float()


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """The windows of a volume: where they lie and how they are weighted.

    Attributes:
        shape: the volume's spatial shape ``(H, W, D)``.
        roi: the window size.
        padding: ``(before, after)`` per axis that brings a short axis up to ``roi``.
        slices: every window's ``(slice_h, slice_w, slice_d)`` on the padded volume, in raster
            order (by default the first axis slowest).
        weights: ``[*roi]`` float32 CPU importance map.
        inference: the settings the plan follows.
    """

    shape: tuple[int, int, int]
    roi: tuple[int, int, int]
    padding: tuple[tuple[int, int], ...]
    slices: tuple[Slices, ...]
    weights: torch.Tensor
    inference: Inference

    @property
    def sum_dtype(self) -> torch.dtype | None:
        """The dtype of the sums: float16 for ``windows="nnunet"`` (nnU-Net adds the weighted
        window logits and the weights in float16), else None (the image's dtype)."""
        return torch.float16 if self.inference.windows == "nnunet" else None

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        """The spatial shape after padding."""
        return tuple(n + a + b for n, (a, b) in zip(self.shape, self.padding, strict=True))

    def batches(self) -> list[list[Slices]]:
        """The windows, ``inference.sw_batch_size`` at a time."""
        k = self.inference.sw_batch_size
        return [list(self.slices[i : i + k]) for i in range(0, len(self.slices), k)]

    def pad(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W, D]`` → padded ``[B, C, *padded_shape]`` (the plan's padding mode)."""
        if not any(a or b for a, b in self.padding):
            return image
        widths = [v for pair in reversed(self.padding) for v in pair]
        mode = self.inference.padding_mode
        cval = self.inference.cval
        if mode == "constant" and isinstance(cval, tuple):  # one value per channel, each channel
            # padded on its own (keeps its values exact); an Inference without a card checked here
            numbers_per_channel("inference.cval", cval, image.shape[1])
            return torch.cat(
                [F.pad(image[:, c : c + 1], widths, value=v) for c, v in enumerate(cval)], dim=1
            )
        if mode == "constant":
            return F.pad(image, widths, mode="constant", value=cval)
        return F.pad(image, widths, mode=mode)

    def crop(self, volume: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`pad`: ``[..., *padded_shape]`` → ``[..., *shape]``."""
        index = [slice(a, a + n) for n, (a, _) in zip(self.shape, self.padding, strict=True)]
        return volume[(..., *index)]

    def normalizer(self, device: torch.device | str = "cpu", dtype=torch.float32) -> torch.Tensor:
        """``n``: the summed weights of the windows at every voxel, ``[1, 1, *padded_shape]``."""
        n = torch.zeros((1, 1, *self.padded_shape), dtype=dtype, device=device)
        w = self.weights.to(device, dtype)
        for sl in self.slices:
            n[(0, 0, *sl)] += w
        return n


def plan_windows(
    shape: Sequence[int],
    roi: int | Sequence[int],
    inference: Inference,
    order: Sequence[int] = (0, 1, 2),
) -> WindowPlan:
    """The windows of a volume of spatial ``shape`` for window ``roi`` (see the module docs),
    listed with axis ``order[0]`` slowest (nnU-Net walks its network's axes: ``model.axes``)."""
    shape = positive_triple("shape", shape, cube=True)
    roi = positive_triple("roi", roi, cube=True)
    if not isinstance(inference, Inference):
        raise TypeError(f"inference must be a vafa Inference, got {type(inference).__name__}")
    padding = tuple(tile_padding(tuple(slice(0, n) for n in shape), roi))
    padded = [n + a + b for n, (a, b) in zip(shape, padding, strict=True)]
    starts = [
        window_starts(n, r, o, inference.windows)
        for n, r, o in zip(padded, roi, inference.overlaps(), strict=True)
    ]
    order = tuple(order)
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"order must be a permutation of (0, 1, 2), got {order!r}")
    slices = []
    for corner in itertools.product(*(starts[a] for a in order)):
        start = [0, 0, 0]
        for a, s in zip(order, corner, strict=True):
            start[a] = s
        slices.append(tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True)))
    weights = importance_map(roi, inference)
    return WindowPlan(shape, roi, padding, tuple(slices), weights, inference)


# ------------------------------------------------------------------------------- the loop
def window_logits(model: nn.Module, windows: torch.Tensor, inference: Inference) -> torch.Tensor:
    """The model's logits of a batch of windows ``[N, C, *roi]`` → ``[N, K, *roi]``, averaged
    over the test-time flips of ``inference.mirror_axes`` (each flipped back). A list/tuple
    output uses its first entry (deep supervision). Differentiable when grad is enabled."""
    out = _first(model(windows))
    for axes in inference.mirror_combinations():
        dims = [2 + a for a in axes]
        out = out + torch.flip(_first(model(torch.flip(windows, dims))), dims)
    return out / inference.passes if inference.mirror_axes else out


def add_windows(
    out: torch.Tensor, logits: torch.Tensor, batch: list[Slices], plan: WindowPlan
) -> None:
    """Add a batch's weighted logits into ``out`` ``[B, K, *padded_shape]`` in place.

    The products are taken in the logits' dtype and rounded to ``out``'s by the addition
    (``plan.sum_dtype``). ``logits`` is ``[len(batch)·B, K, *roi]``: the batch's windows in order, each for the B
    volumes (how :func:`windowed_logits` stacks them).
    """
    b = out.shape[0]
    weights = None if plan.inference.mode == "constant" else plan.weights.to(out.device)
    for j, sl in enumerate(batch):
        part = logits[j * b : (j + 1) * b].to(out.device)
        out[(slice(None), slice(None), *sl)] += part if weights is None else part * weights


def windowed_logits(
    model: nn.Module, image: torch.Tensor, roi: int | Sequence[int], inference: Inference
) -> torch.Tensor:
    """Logits of a volume of any size by the sliding window ``inference`` describes.

    Honours the current grad mode (differentiable with respect to ``image`` when enabled) and
    leaves the model's training flag alone (:func:`vafa.run.tiling.sliding_window_predict` is
    the no-grad, eval-mode call). Windows run where the model's parameters are; the logits are
    stitched on ``image``'s device in its dtype (summed in ``plan.sum_dtype``: float16 for
    nnU-Net, whose predictor does so, rounding weak window borders coarsely). With nnU-Net's
    windows and an nnU-Net network (:class:`~vafa.io.wrapped.NormalizedInput`) the windows are
    added in nnU-Net's order (its network's axes, :attr:`NormalizedInput.axes`) and a fold
    ensemble (:meth:`~vafa.io.wrapped.NormalizedInput.members`) is predicted fold by fold, the
    folds' float16 logits then averaged, as ``nnUNetPredictor`` does.

    Args:
        model: maps ``[N, C, *roi]`` to logits ``[N, K, *roi]``.
        image: ``[B, C, H, W, D]`` float tensor.
        roi: the window, normally ``card.roi_size``.
        inference: normally ``card.inference``.

    Returns:
        ``[B, K, H, W, D]`` logits.
    """
    nnunet = inference.windows == "nnunet" and isinstance(model, NormalizedInput)
    plan = plan_windows(image.shape[2:], roi, inference, model.axes if nnunet else (0, 1, 2))
    x = plan.pad(image)
    members = model.members() if nnunet else [model]
    total = None
    for member in members:
        logits = plan.crop(_stitch(member, x, plan, image))
        total = logits if total is None else total + logits
    if len(members) > 1:
        total = total / len(members)
    return total.to(image.dtype)


def _stitch(
    model: nn.Module, x: torch.Tensor, plan: WindowPlan, image: torch.Tensor
) -> torch.Tensor:
    """``Σ_w P_wᵀ (g ⊙ f(P_w x)) / n`` on the padded grid, in ``plan.sum_dtype``."""
    device = next((p.device for p in model.parameters()), image.device)
    dtype = plan.sum_dtype or image.dtype
    out = None
    for batch in plan.batches():
        parts = [x[(slice(None), slice(None), *sl)] for sl in batch]
        windows = (parts[0] if len(parts) == 1 else torch.cat(parts)).to(device)
        logits = window_logits(model, windows, plan.inference)
        if out is None:
            out = logits.new_zeros((image.shape[0], logits.shape[1], *plan.padded_shape),
                                   dtype=dtype, device=image.device)  # fmt: skip
        add_windows(out, logits, batch, plan)
    return out.div_(plan.normalizer(image.device, dtype))


def _first(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]
