"""Perturbation band analysis: which DCT bands of ``δ = x_adv − x`` carry the damage.

Following the volumetric robustness benchmark of Malik et al. (BMVC 2024), the perturbation of
a clean/adversarial pair is split by frequency band, and the model is re-evaluated on the clean
volume plus one band of the perturbation at a time:

1. ``δ = x_adv − x`` in model-input units ([0, 1]);
2. blockwise orthonormal 3D DCT of ``δ`` (:mod:`vafa.ops.frequency`) in ``b×b×b`` blocks,
   **zero-padded** at the high end to whole blocks (not edge-replicated: a zero pad adds no
   energy, so the band energies sum to ``Σ δ²`` over the voxels exactly);
3. each coefficient goes to one band of :mod:`vafa.ops.bands` (``low`` / ``middle`` / ``high``,
   thirds of the normalised DCT index ``r`` within the block; no other band definition here);
4. per band: its energy ``Σ c²`` over the band's coefficients (Parseval: the same number as
   ``Σ δ_band²`` before cropping the pad), and ``δ_band`` = inverse DCT of the coefficients in
   the band, cropped to the volume. ``δ_low + δ_middle + δ_high = δ``;
5. the model's prediction (its own sliding window, ``card.inference``, as :mod:`vafa.run.pipeline`) on
   ``clamp(x + δ_band, 0, 1)`` for every band, and on ``x + δ`` (band ``"all"``, the attack
   itself) — foreground Dice against the labels or the clean prediction.

Default block: **32³**, VAFA's default and the block of the paper's experiments, so that a
band-limited VAFA analysed with its own block size shows its energy in its own band (up to the
[0, 1] clamp, where the attack's tiles align with the analysis blocks). The frequency a band
stands for hardly depends on the block side (index ``u`` of a block of side ``b`` is ``u / 2b``
cycles per voxel); smaller blocks (8³) localise better.

Note for reading the energy fractions: the bands hold unequal shares of the coefficients
(32³ blocks: 16.7 % low, 65.1 % middle, 18.3 % high; 8³: 16.4 %, 60.2 %, 23.4 %), so white
noise puts about that share of its energy in each band; :attr:`BandRow.coefficient_fraction`
gives this baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from vafa.ops.bands import band_layout, band_mask
from vafa.ops.frequency import (
    crop_padding,
    layout_dct,
    layout_idct,
    normalize_block_size,
    padded_shape,
)

if TYPE_CHECKING:
    from vafa.io.inference import Inference
    from vafa.io.models import ModelCard
    from vafa.io.volume import Volume
    from vafa.ops.heads import Heads
    from vafa.run.pipeline import AttackOutcome

__all__ = [
    "ANALYSIS_BANDS",
    "DEFAULT_BLOCK",
    "BandAnalysis",
    "BandRow",
    "analyse_bands",
    "analyse_outcome",
    "analyse_volumes",
    "band_energies",
    "band_split",
    "channel_energies",
]

#: The analysed bands, in order: ``"all"`` (the whole perturbation) then the three bands.
ANALYSIS_BANDS: tuple[str, ...] = ("all", "low", "middle", "high")
#: Default side of the analysis blocks (VAFA's default block).
DEFAULT_BLOCK = 32
_SPLIT = ANALYSIS_BANDS[1:]


@dataclass(frozen=True)
class BandRow:
    """One band of a :class:`BandAnalysis`.

    Attributes:
        band: ``"all"``, ``"low"``, ``"middle"`` or ``"high"``.
        energy: ``Σ c²`` of the perturbation's DCT coefficients in the band ([0, 1] units²;
            ``"all"``: ``Σ δ²`` over the voxels).
        energy_fraction: ``energy`` / total energy (0 when the perturbation is zero).
        coefficient_fraction: share of the block's DCT coefficients in the band (white noise's
            expected energy fraction).
        dice_fg: foreground Dice of the model on ``clamp(x + δ_band, 0, 1)`` (None when no
            foreground class is in the reference, or not evaluated after a cancel).
        dice_fg_drop: clean fg Dice − ``dice_fg`` (positive: the band hurts).
        channel_energy: per input channel, its part of ``energy`` (one entry for a
            one-channel model; they sum to ``energy``).
    """

    band: str
    energy: float
    energy_fraction: float
    coefficient_fraction: float
    dice_fg: float | None
    dice_fg_drop: float | None
    channel_energy: tuple[float, ...] = ()


@dataclass(frozen=True)
class BandAnalysis:
    """Result of :func:`analyse_bands`.

    Attributes:
        rows: one :class:`BandRow` per band of :data:`ANALYSIS_BANDS`, in that order.
        block_size: the analysis blocks ``(b, b, b)``.
        dice_fg_clean: foreground Dice of the clean prediction against the reference (1 when
            the reference is the clean prediction).
        reference: ``"labels"`` or ``"clean_prediction"``.
        cancelled: the callback stopped the evaluations (later bands have ``dice_fg`` None).
        channel_names: the model's input channels (``card.channel_names``), the order of every
            row's ``channel_energy``; empty when unknown.
    """

    rows: tuple[BandRow, ...]
    block_size: tuple[int, ...]
    dice_fg_clean: float | None
    reference: str
    cancelled: bool = False
    channel_names: tuple[str, ...] = ()

    def row(self, band: str) -> BandRow:
        """The row of ``band`` (``KeyError`` for another name)."""
        for row in self.rows:
            if row.band == band:
                return row
        raise KeyError(band)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the fields, rows as dicts."""
        return {
            "block_size": list(self.block_size),
            "dice_fg_clean": self.dice_fg_clean,
            "reference": self.reference,
            "cancelled": self.cancelled,
            "channel_names": list(self.channel_names),
            "rows": [dict(vars(row)) for row in self.rows],
        }


# ----------------------------------------------------------------------------- maths
def band_split(delta: torch.Tensor, block_size: int | Sequence[int] = DEFAULT_BLOCK):
    """The perturbation restricted to each DCT band.

    Args:
        delta: ``[B, C, H, W, D]`` float tensor.
        block_size: side of the 3D blocks (int or 3 ints).

    Returns:
        ``{"low": δ_low, "middle": δ_middle, "high": δ_high}``, each ``[B, C, H, W, D]`` in
        ``delta``'s dtype; their sum is ``delta`` (up to rounding).
    """
    coeffs, sizes = _coefficients(delta, block_size)
    out = {}
    for band in _SPLIT:
        mask = _layout_mask(sizes, band, coeffs)
        filtered = crop_padding(layout_idct(coeffs * mask, sizes), delta.shape[2:])
        out[band] = filtered.to(delta.dtype)
    return out


def band_energies(
    delta: torch.Tensor, block_size: int | Sequence[int] = DEFAULT_BLOCK
) -> dict[str, float]:
    """Energy ``Σ c²`` (float64) of the perturbation's DCT coefficients in each band.

    Args:
        delta: ``[B, C, H, W, D]`` float tensor (all samples and channels summed).
        block_size: side of the 3D blocks.

    Returns:
        ``{"all": Σ δ², "low": …, "middle": …, "high": …}``; the three bands sum to ``"all"``
        (Parseval; the zero pad adds nothing).
    """
    return {band: sum(values) for band, values in channel_energies(delta, block_size).items()}


def channel_energies(
    delta: torch.Tensor, block_size: int | Sequence[int] = DEFAULT_BLOCK
) -> dict[str, tuple[float, ...]]:
    """:func:`band_energies` of each input channel: ``{band: (channel 0's, channel 1's, …)}``
    (samples summed)."""
    coeffs, sizes = _coefficients(delta, block_size)
    energy = coeffs.square()
    out = {"all": _per_channel(delta.double().square())}
    for band in _SPLIT:
        out[band] = _per_channel(energy * _layout_mask(sizes, band, coeffs))
    return out


def _per_channel(values: torch.Tensor) -> tuple[float, ...]:
    """``[B, C, …]`` → per channel, the sum over everything else."""
    return tuple(float(v) for v in values.transpose(0, 1).flatten(1).sum(1))


def _coefficients(delta: torch.Tensor, block_size) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-padded blockwise DCT of ``delta`` in layout (float64)."""
    if not isinstance(delta, torch.Tensor) or not delta.is_floating_point():
        raise TypeError(f"delta must be a floating point torch.Tensor, got {type(delta).__name__}")
    if delta.dim() != 5:
        raise ValueError(f"delta must have shape [B, C, H, W, D], got {tuple(delta.shape)}")
    sizes = normalize_block_size(block_size)
    if len(sizes) != 3:
        raise ValueError(f"block_size must be 3D (an int or 3 ints), got {block_size!r}")
    target = padded_shape(delta.shape[2:], sizes)
    pads: list[int] = []
    for size, tgt in reversed(list(zip(delta.shape[2:], target, strict=True))):
        pads += [0, tgt - size]
    padded = F.pad(delta.double(), pads)  # zeros: no energy added
    return layout_dct(padded, sizes), sizes


def _layout_mask(sizes: tuple[int, ...], band: str, like: torch.Tensor) -> torch.Tensor:
    """The band's block mask tiled over the layout ``like`` ``[B, C, H', W', D']``."""
    return band_layout(sizes, like.shape[2:], band, device=like.device).to(like.dtype)


def _coefficient_fraction(sizes: tuple[int, ...], band: str) -> float:
    if band == "all":
        return 1.0
    return float(band_mask(sizes, band).double().mean())


# ----------------------------------------------------------------------------- analysis
def analyse_bands(
    model: nn.Module,
    clean01: torch.Tensor,
    adversarial01: torch.Tensor,
    reference: torch.Tensor | None = None,
    *,
    num_classes: int,
    roi_size: int | Sequence[int],
    block_size: int | Sequence[int] = DEFAULT_BLOCK,
    inference: Inference | None = None,
    callback: Callable[[str], bool | None] | None = None,
    heads: Heads | None = None,
    channel_names: Sequence[str] = (),
) -> BandAnalysis:
    """Energy per band of ``adversarial01 − clean01`` (and per channel) and the model's Dice
    per band.

    Args:
        model: the segmentation network (eval mode is set during predictions, then restored).
        clean01, adversarial01: ``[1, C, H, W, D]`` model inputs in [0, 1], same shape.
        reference: ``[1, 1, H, W, D]`` class map (labels on the model grid), or None: the
            clean prediction is the reference.
        num_classes: the model's output classes.
        roi_size: sliding-window size (``card.roi_size``).
        block_size: side of the analysis blocks (default :data:`DEFAULT_BLOCK`).
        inference: how the model predicts whole volumes (``card.inference``; None: MONAI's
            sliding window, overlap 0.5, constant weights).
        callback: called with the band name before each evaluation (``"clean"`` first);
            returning False stops (the rows keep their energies, ``dice_fg`` None).
        heads: how the outputs are read (``card.heads()``; None: softmax classes); with
            sigmoid regions, ``reference`` is a label map turned into region masks.
        channel_names: the input channels' names (``card.channel_names``), kept in the result.

    Returns:
        :class:`BandAnalysis`.

    Raises:
        TypeError, ValueError: wrong types, shapes or values (named).
    """
    from vafa.ops.heads import SOFTMAX
    from vafa.run.tiling import sliding_window_labels

    heads = SOFTMAX if heads is None else heads
    _check_pair(clean01, adversarial01, reference)
    if isinstance(channel_names, str) or len(channel_names) not in (0, clean01.shape[1]):
        raise ValueError(
            f"channel_names must name the {clean01.shape[1]} input channel(s) or be empty, got "
            f"{channel_names!r}"
        )
    sizes = normalize_block_size(block_size)
    clean = clean01.detach().float()
    delta = adversarial01.detach().float() - clean
    by_channel = channel_energies(delta, sizes)
    parts = {"all": delta, **band_split(delta, sizes)}
    device = next((p.device for p in model.parameters()), clean.device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_labels(model, x.to(device), roi_size, inference, heads=heads).cpu()

    def dice_fg(pred: torch.Tensor) -> float | None:
        value = heads.summary(heads.dice(pred, target, num_classes))["dice_fg"]
        return value if math.isfinite(value) else None

    cancelled = callback is not None and callback("clean") is False
    dice: dict[str, float | None] = dict.fromkeys(ANALYSIS_BANDS)
    clean_dice = None
    if not cancelled:
        clean_pred = predict(clean)
        target = clean_pred if reference is None else heads.target(reference.cpu(), num_classes)
        clean_dice = dice_fg(clean_pred)
        for band in ANALYSIS_BANDS:
            if callback is not None and callback(band) is False:
                cancelled = True
                break
            dice[band] = dice_fg(predict((clean + parts[band]).clamp(0.0, 1.0)))
    kind = "clean_prediction" if reference is None else "labels"
    rows = _rows(by_channel, sizes, dice, clean_dice)
    return BandAnalysis(rows, sizes, clean_dice, kind, cancelled, tuple(channel_names))


def _rows(by_channel, sizes, dice, clean_dice) -> tuple[BandRow, ...]:
    """The :class:`BandRow` of every band from its channels' energies and its Dice."""
    energies = {band: sum(values) for band, values in by_channel.items()}
    total = energies["all"]
    return tuple(
        BandRow(
            band=band,
            energy=energies[band],
            energy_fraction=energies[band] / total if total > 0 else 0.0,
            coefficient_fraction=_coefficient_fraction(sizes, band),
            dice_fg=dice[band],
            dice_fg_drop=None
            if dice[band] is None or clean_dice is None
            else clean_dice - dice[band],
            channel_energy=by_channel[band],
        )
        for band in ANALYSIS_BANDS
    )


def analyse_outcome(
    model: nn.Module,
    outcome: AttackOutcome,
    labels: Volume | None = None,
    *,
    block_size: int | Sequence[int] = DEFAULT_BLOCK,
    callback: Callable[[str], bool | None] | None = None,
) -> BandAnalysis:
    """:func:`analyse_bands` of a :func:`vafa.run.pipeline.run_attack` outcome (its model
    input and ``adversarial01``); ``labels`` on the attacked image's grid, or None."""
    from vafa.io.model_space import labels_to_model_space

    if outcome.adversarial01 is None:
        raise ValueError("the outcome holds no model-space adversarial (adversarial01 is None)")
    model_input = outcome.model_input
    reference = None if labels is None else labels_to_model_space(labels, model_input)
    return _analyse_for_card(
        model, model_input, outcome.adversarial01, reference, block_size, callback
    )


def analyse_volumes(
    model: nn.Module,
    card: ModelCard,
    image: Volume,
    adversarial: Volume,
    labels: Volume | None = None,
    *,
    block_size: int | Sequence[int] = DEFAULT_BLOCK,
    callback: Callable[[str], bool | None] | None = None,
) -> BandAnalysis:
    """:func:`analyse_bands` of a clean and an adversarial volume in file units (both through
    the clean image's model space, as :func:`vafa.run.pipeline.evaluate`).

    Raises:
        TypeError, ValueError: ``adversarial`` not on ``image``'s grid, bad labels, … (named).
    """
    from vafa.io.model_space import adversarial_model_input, labels_to_model_space, to_model_space

    model_input = to_model_space(image, card)
    _, adversarial01 = adversarial_model_input(adversarial, model_input)
    reference = None if labels is None else labels_to_model_space(labels, model_input)
    return _analyse_for_card(model, model_input, adversarial01, reference, block_size, callback)


def _analyse_for_card(model, model_input, adversarial01, reference, block_size, callback):
    """:func:`analyse_bands` of ``model_input.tensor`` and ``adversarial01`` with what the
    model's card says (classes, roi, inference, heads, channel names)."""
    card = model_input.card
    return analyse_bands(
        model,
        model_input.tensor,
        adversarial01,
        reference,
        num_classes=card.out_channels,
        roi_size=card.roi_size,
        block_size=block_size,
        inference=card.inference,
        callback=callback,
        heads=card.heads(),
        channel_names=card.channel_names or (),
    )


def _check_pair(clean01, adversarial01, reference) -> None:
    for name, x in (("clean01", clean01), ("adversarial01", adversarial01)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating point torch.Tensor, got {type(x).__name__}")
        if x.dim() != 5 or x.shape[0] != 1:
            raise ValueError(f"{name} must have shape [1, C, H, W, D], got {tuple(x.shape)}")
    if clean01.shape != adversarial01.shape:
        raise ValueError(
            f"clean01 and adversarial01 must have the same shape, got {tuple(clean01.shape)} "
            f"and {tuple(adversarial01.shape)}"
        )
    if reference is not None and (
        not isinstance(reference, torch.Tensor)
        or tuple(reference.shape) != (1, 1, *clean01.shape[2:])
    ):
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference)
        raise ValueError(
            f"reference must be a [1, 1, {', '.join(map(str, clean01.shape[2:]))}] class map, "
            f"got {shape}"
        )
