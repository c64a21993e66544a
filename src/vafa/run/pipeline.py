"""The attack workflow shared by the CLI, the napari plugin and the reports.

* :func:`run_attack` — tiled attack of the whole volume (:func:`vafa.run.tiling.attack_volume`),
  sliding-window predictions of clean and adversarial volumes by the model's own inference
  (``card.inference``: its framework's windows, weighting and mirroring; the published
  protocol's overlap 0.5 for plain weights), and the metrics, as an :class:`AttackOutcome`;
* :func:`evaluate` — the same metrics for a clean (and optionally an adversarial) volume.

File units ↔ model space live in :mod:`vafa.io.model_space`; the outcome's files are written
by :func:`vafa.io.outcome_files.write_outcome`.

Metrics are always computed on the model grid (the grid the model saw), with HD95 in mm.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vafa.attacks import build_attack
from vafa.attacks.base import Callback, StepEvent, drive
from vafa.io.channels import Channels, channel_volumes, each_channel
from vafa.io.model_space import (
    ModelInput,
    adversarial_model_input,
    back_to_source,
    labels_to_model_space,
    to_model_space,
    units_on_grid,
)
from vafa.io.models import ModelCard
from vafa.io.volume import Volume, resample_like
from vafa.ops.amp import with_amp
from vafa.run.outcome_metrics import (
    OutcomeMetrics,
    Pair,
    PerTile,
    Protocol,
    SegmentationScores,
    segmentation_scores,
)
from vafa.run.tiling import sliding_window_labels

__all__ = [
    "AttackOutcome",
    "evaluate",
    "evaluate_each",
    "iter_run_attack",
    "run_attack",
]


# ----------------------------------------------------------------------------- attack
@dataclass(eq=False)
class AttackOutcome:
    """Everything :func:`run_attack` produces (volumes in file units).

    Attributes:
        adversarial: the attacked image (float32), on the model grid, or on the input grid
            with ``resample_back=True``; a :class:`~vafa.io.channels.Channels` (same layout
            and channel order) for a multi-channel image, each channel in its own units.
        perturbation: ``adversarial − clean`` on the same grid (float32, file units).
        clean_prediction, adversarial_prediction: sliding-window class maps (whole numbers,
            ``original_dtype`` uint8) on the same grid.
        q_table: VAFA: the quantization step of every voxel's (block, frequency) position
            (:func:`vafa.run.tiling.q_table_layout`; 0 in tiles left clean by a cancel); None for
            other attacks.
        metrics: :class:`vafa.run.outcome_metrics.OutcomeMetrics` (see :func:`run_attack`;
            ``metrics.to_dict()`` is the ``"metrics"`` object of ``metrics.json``).
        settings: attack settings, tiling, card, device, seed.
        history: one row per attack step and tile batch: ``batch``, ``tiles`` (its 1-based
            tile indices), ``step``, ``loss``, ``dice``, ``ssim`` (+ ``alpha`` for VAFA).
        cancelled: the callback stopped the attack (later tiles are clean).
        model_input: the :class:`ModelInput` attacked.
        adversarial01: the attacked model input itself, ``[1, C, H, W, D]`` float32 in [0, 1] on
            the model grid (CPU): what the model saw, without a round trip through file units.
        inputs: files the outcome was made from (never overwritten by
            :func:`vafa.io.outcome_files.write_outcome`).
    """

    adversarial: Volume | Channels
    perturbation: Volume | Channels
    clean_prediction: Volume
    adversarial_prediction: Volume
    q_table: Volume | Channels | None
    metrics: OutcomeMetrics
    settings: dict[str, Any]
    history: list[dict[str, Any]]
    cancelled: bool
    model_input: ModelInput
    adversarial01: torch.Tensor | None = None
    inputs: tuple[Path, ...] = field(default_factory=tuple)


def run_attack(
    model: nn.Module,
    card: ModelCard,
    image: Volume | Channels,
    labels: Volume | None = None,
    *,
    attack: str = "vafa",
    options: Mapping[str, Any] | None = None,
    tile_batch: int = 1,
    device: str | torch.device = "auto",
    seed: int | None = None,
    callback: Callback | None = None,
    resample_back: bool = False,
    amp: str = "off",
    through: str = "tiles",
) -> AttackOutcome:
    """Attack a whole volume and measure the damage.

    Steps: :func:`to_model_space`; ``build_attack(attack, model, **options, seed, device)``;
    :func:`vafa.run.tiling.attack_volume` with ``roi = card.roi_size``; sliding-window predictions
    (``card.inference``) of the clean and adversarial volumes; metrics; back to file units.

    Args:
        model: the network of ``card`` (e.g. from :func:`vafa.io.checkpoints.load_model`).
        card: its model card.
        image: the volume to attack, in file units.
        labels: ground truth on ``image``'s grid, or None: the attack uses per-tile
            pseudo-labels and Dice is measured against the clean prediction.
        attack: ``"vafa"``, ``"vafa2d"``, ``"pgd"``, ``"fgsm"``, ``"bim"`` or ``"gn"``.
        options: hyper-parameters of the attack (e.g. ``{"q_max": 20, "steps": 20}``); None
            values are ignored; ``seed`` and ``device`` are separate arguments.
        tile_batch: tiles attacked together.
        device: ``"auto"`` runs where the model is; a name moves the model there.
        seed: seed of the attack's random generator.
        callback: progress/cancel callback, see :func:`vafa.run.tiling.attack_volume`.
        resample_back: return the volumes on the input's grid instead of the model grid.
        amp: mixed precision of the model passes (attack and predictions): ``"off"``,
            ``"bf16"`` or ``"fp16"`` (:func:`vafa.ops.amp.with_amp`; the frequency, SSIM and
            loss maths stay float32).
        through: the threat model (:mod:`vafa.run.through`): ``"tiles"`` (the paper: the
            attack on non-overlapping ROI tiles) or ``"sliding-window"`` (the attack on the
            whole volume through the deployed prediction, the card's sliding window).

    Returns:
        :class:`AttackOutcome`. ``metrics`` (:class:`~vafa.run.outcome_metrics.OutcomeMetrics`;
        its ``to_dict()`` has the same keys) holds: ``reference`` (``"labels"`` or
        ``"clean_prediction"``), ``class_names``, ``dice_per_class``/``hd95_per_class``
        (``{name: value}``; None where the class is absent from the reference — or, for HD95,
        missing from the prediction, listed in ``hd95_missed``), ``dice``, ``dice_fg``,
        ``hd95`` (mm, mean over finite values), each a :class:`~vafa.run.outcome_metrics.Pair`
        ``(clean, adversarial)``; ``ssim``, ``psnr`` (dB), ``linf`` and ``l2`` ([0, 1] units),
        ``linf_original_units`` (``linf`` × the window width, e.g. HU), ``flip_rate``,
        ``zeroed_fraction`` (VAFA), ``per_tile`` (:class:`~vafa.run.outcome_metrics.PerTile`:
        Dice of the stitched per-tile predictions the attack optimised against; None after a
        cancel), ``attack``, ``normalize``, ``steps``, ``steps_run``, ``cancelled``,
        ``tiles_done``, ``tiles_total``, ``protocol``
        (:class:`~vafa.run.outcome_metrics.Protocol`).

    Raises:
        TypeError, ValueError: invalid inputs or options (named).
    """
    return drive(
        iter_run_attack(
            model,
            card,
            image,
            labels,
            attack=attack,
            options=options,
            tile_batch=tile_batch,
            device=device,
            seed=seed,
            resample_back=resample_back,
            amp=amp,
            through=through,
        ),
        callback,
    )


def iter_run_attack(
    model: nn.Module,
    card: ModelCard,
    image: Volume | Channels,
    labels: Volume | None = None,
    *,
    attack: str = "vafa",
    options: Mapping[str, Any] | None = None,
    tile_batch: int = 1,
    device: str | torch.device = "auto",
    seed: int | None = None,
    resample_back: bool = False,
    amp: str = "off",
    through: str = "tiles",
) -> Generator[StepEvent, bool | None, AttackOutcome]:
    """:func:`run_attack` as a generator (for GUI workers): yields every step event,
    ``gen.send(False)`` cancels within one step, returns the :class:`AttackOutcome`."""
    from vafa.run.through import DeployedModel, check_through
    from vafa.run.tiling import iter_attack_volume

    _check_model(model)
    model = with_amp(model, amp)
    options = dict(options or {})
    for key in ("seed", "device"):
        if key in options:
            raise ValueError(f"options must not contain {key!r}: pass {key}= to run_attack")
    through = check_through(through)
    model_input = to_model_space(image, card)
    target = None if labels is None else labels_to_model_space(labels, model_input)
    roi = card.roi_size  # tiles; through the sliding window: the whole volume, one "tile"
    attacked = model
    if through == "sliding-window":
        attacked = DeployedModel(model, card.roi_size, card.inference)
        roi = tuple(model_input.tensor.shape[2:])
    built = build_attack(attack, attacked, **options, seed=seed, device=device, heads=card.heads())
    if device != "auto":
        model.to(built.device)
    result = yield from iter_attack_volume(
        built, model_input.tensor, target, roi=roi, tile_batch=tile_batch
    )
    result.settings["through"] = through
    adv01 = result.adversarial
    adv_grid = units_on_grid(model_input.unbatch(adv01), model_input)
    clean_pred = _predict(model, model_input.tensor, card)
    adv_pred = _predict(model, adv01, card)
    reference = clean_pred if target is None else card.heads().target(target, card.out_channels)
    clean_scores = _segmentation(card, model_input, clean_pred, reference)
    metrics = _outcome_metrics(
        card, model_input, labels, clean_pred, clean_scores, reference, adv01, adv_pred,
        **_attack_fields(result, reference, card),
    )  # fmt: skip
    q_layout = result.q_layout()
    adversarial = back_to_source(adv_grid, model_input) if resample_back else adv_grid
    clean = model_input.source if resample_back else model_input.grid
    settings = {
        "attack": result.settings,
        "card": card.architecture,
        "class_names": list(card.class_names),
        "intensity": model_input.mapping.to_dict(),
        "model_spacing": list(model_input.grid.spacing),
        "resampled": model_input.resampled,
        "resample_back": bool(resample_back),
        "device": str(_device_of(model)),
        "seed": seed,
        "amp": amp,
    }
    return AttackOutcome(
        adversarial=adversarial,
        perturbation=adversarial.with_array(adversarial.array - clean.array),
        clean_prediction=_label_volume(clean_pred, model_input, resample_back),
        adversarial_prediction=_label_volume(adv_pred, model_input, resample_back),
        q_table=None if q_layout is None else _q_volume(q_layout, model_input, resample_back),
        metrics=metrics,
        settings=settings,
        history=_history(result.tile_results),
        cancelled=result.cancelled,
        model_input=model_input,
        adversarial01=adv01.detach().to("cpu", torch.float32),
        inputs=_sources(image, labels),
    )


def evaluate(
    model: nn.Module,
    card: ModelCard,
    image: Volume | Channels,
    labels: Volume | None,
    adversarial: Volume | Channels | None = None,
    device: str | torch.device = "auto",
    amp: str = "off",
) -> OutcomeMetrics:
    """Metrics of the model on a clean volume and optionally on an adversarial version of it.

    Both volumes go through the clean image's model space (same grid, same fitted window);
    the adversarial volume must be on ``image``'s grid. ``amp``: mixed precision of the
    model passes, as in :func:`run_attack`. The fields are those of :func:`run_attack`'s
    metrics (attack fields keep their defaults: None, ``cancelled`` False; ``adversarial``
    entries and the perturbation measures are None without ``adversarial``).

    Raises:
        TypeError, ValueError: wrong types, or ``adversarial`` on another grid.
    """
    return evaluate_each(model, card, image, labels, [adversarial], device, amp)[0]


def evaluate_each(
    model: nn.Module,
    card: ModelCard,
    image: Volume | Channels,
    labels: Volume | None,
    adversarials: Sequence[Volume | Channels | None],
    device: str | torch.device = "auto",
    amp: str = "off",
) -> list[OutcomeMetrics]:
    """:func:`evaluate` of several adversarial versions of one image (e.g. one per attack),
    the clean image's model space and prediction made once; one metrics object each."""
    _check_model(model)
    model = with_amp(model, amp)
    if device != "auto":
        from vafa.ops.devices import resolve_device

        model.to(resolve_device(device))
    model_input = to_model_space(image, card)
    target = None if labels is None else labels_to_model_space(labels, model_input)
    clean_pred = _predict(model, model_input.tensor, card)
    reference = clean_pred if target is None else card.heads().target(target, card.out_channels)
    clean = _segmentation(card, model_input, clean_pred, reference)  # Dice, HD95: once
    out = []
    for adversarial in adversarials:
        adv01 = adv_pred = None
        if adversarial is not None:
            adv01 = adversarial_model_input(adversarial, model_input)[1]
            adv_pred = _predict(model, adv01, card)
        scores = _outcome_metrics(card, model_input, labels, clean_pred, clean, reference, adv01,
                                  adv_pred)  # fmt: skip
        out.append(scores)
    return out


# ----------------------------------------------------------------------------- helpers
def _predict(model: nn.Module, tensor01: torch.Tensor, card: ModelCard) -> torch.Tensor:
    return sliding_window_labels(model, tensor01, card.roi_size, card.inference, heads=card.heads())


def _outcome_metrics(
    card,
    model_input,
    labels,
    clean_pred,
    clean,
    reference,
    adv01,
    adv_pred,
    **attack,
) -> OutcomeMetrics:
    """The clean prediction's scores ``clean`` (:func:`_segmentation`: made once by the
    caller) with the adversarial prediction's, the perturbation measures (None without an
    adversarial volume), the protocol; ``attack``: the attack fields (:func:`_attack_fields`)."""
    adversarial = None
    if adv01 is not None:
        adversarial = _segmentation(card, model_input, adv_pred, reference)
    return OutcomeMetrics.from_scores(
        clean,
        adversarial,
        reference="clean_prediction" if labels is None else "labels",
        class_names=tuple(card.class_names),
        protocol=Protocol(
            overlap=card.inference.overlap,
            mode=card.inference.mode,
            inference=card.inference.to_dict(),
            roi=tuple(card.roi_size),
            spacing_mm=tuple(model_input.grid.spacing),
        ),
        **_perturbation(model_input, adv01, clean_pred, adv_pred),
        **attack,
    )


def _segmentation(card, model_input, pred, reference) -> SegmentationScores:
    return segmentation_scores(
        card.heads(), pred, reference, card.class_names, model_input.grid.spacing
    )


def _perturbation(model_input, adv01, clean_pred, adv_pred) -> dict[str, float | None]:
    """The perturbation measures (fields of :class:`OutcomeMetrics`; {} without ``adv01``)."""
    from vafa.ops import metrics as M

    if adv01 is None:
        return {}
    clean01 = model_input.tensor
    adv01 = adv01.to(clean01)
    return dict(
        ssim=_float(M.ssim(clean01, adv01)[0]),
        psnr=_float(M.psnr(clean01, adv01)[0]),
        linf=_float(M.linf(clean01, adv01)[0]),
        l2=_float(M.l2(clean01, adv01)[0]),
        # the model input's change in file units (e.g. HU): linf × window width; a voxel outside
        # the window that the attack moved inside changes more in the written file
        linf_original_units=_linf_units(model_input.mapping, clean01, adv01),
        flip_rate=M.flip_rate(clean_pred, adv_pred),
    )


def _attack_fields(result, reference, card) -> dict[str, Any]:
    """The attack fields of :class:`OutcomeMetrics` (settings, steps, tiles, per-tile Dice)."""

    rows = result.tile_results
    heads = card.heads()
    zeroed = [(r["zeroed_fraction"], r["voxels"]) for r in rows if r["zeroed_fraction"] is not None]
    weight = sum(v for _, v in zeroed)
    per_tile = None
    if not result.cancelled:
        means = {
            which: heads.summary(heads.dice(pred, reference, card.out_channels))
            for which, pred in (
                ("clean", result.tile_clean_prediction),
                ("adversarial", result.tile_adversarial_prediction),
            )
        }
        per_tile = PerTile(
            dice=Pair(_float(means["clean"]["dice"]), _float(means["adversarial"]["dice"])),
            dice_fg=Pair(
                _float(means["clean"]["dice_fg"]), _float(means["adversarial"]["dice_fg"])
            ),
        )
    settings = result.settings
    return {
        "attack": settings.get("attack"),
        "normalize": settings.get("normalize"),
        "steps": settings.get("steps"),
        "steps_run": sum({r["batch"]: r["steps_run"] for r in rows}.values()),
        "zeroed_fraction": sum(z * v for z, v in zeroed) / weight if zeroed else None,
        "per_tile": per_tile,
        "cancelled": result.cancelled,
        "tiles_done": result.tiles_done,
        "tiles_total": result.tiles_total,
    }


def _history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step and tile batch (tiles of a batch share their history)."""
    batches: dict[int, list[int]] = {}
    for r in rows:
        batches.setdefault(r["batch"], []).append(r["tile"])
    firsts = {tiles[0] for tiles in batches.values()}
    return [
        {"batch": r["batch"], "tiles": batches[r["batch"]], **row}
        for r in rows
        if r["tile"] in firsts
        for row in r["history"]
    ]


def _label_volume(pred: torch.Tensor, model_input: ModelInput, resample_back: bool) -> Volume:
    array = model_input.card.heads().merge(pred)[0, 0].cpu().numpy().astype(np.float32)
    vol = channel_volumes(model_input.grid)[0].with_array(array, np.uint8)
    if resample_back and model_input.resampled:
        vol = resample_like(vol, channel_volumes(model_input.source)[0], mode="nearest")
    return vol


def _q_volume(layout: torch.Tensor, model_input: ModelInput, resample_back: bool):
    """The q-table map like the image: a Volume, or Channels (one map per channel)."""
    vol = model_input.grid.with_array(model_input.unbatch(layout))
    if resample_back and model_input.resampled:
        like = channel_volumes(model_input.source)[0]
        vol = each_channel(vol, lambda v: resample_like(v, like, mode="nearest"))
    return vol


def _sources(*images: Volume | Channels | None) -> tuple[Path, ...]:
    """The files images came from (every channel's file), for write protection."""
    return tuple(
        v.source
        for image in images
        if image is not None
        for v in channel_volumes(image)
        if v.source
    )


def _linf_units(mapping, clean01: torch.Tensor, adv01: torch.Tensor) -> float | None:
    """The largest change in file units (e.g. HU): per channel, linf × its window's width; a
    voxel outside the window that the attack moved inside changes more in the written file."""
    per_channel = (adv01 - clean01).abs().flatten(2).amax(dim=2)[0].double().cpu().numpy()
    return _float(np.max(per_channel * mapping.widths))


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
