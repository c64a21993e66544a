"""Typed metrics of an attack outcome: what :func:`vafa.run.pipeline.run_attack` and
:func:`vafa.run.pipeline.evaluate` measure, as frozen dataclasses.

Consumers read attributes (``metrics.dice_fg.adversarial``, ``metrics.per_tile.dice_fg.clean``,
``metrics.ssim``); dictionaries exist only at the JSON/CSV boundary:
:meth:`OutcomeMetrics.to_dict` gives the ``"metrics"`` object of ``metrics.json`` (``vafa attack``,
``vafa evaluate --format json``, the reports) key for key and in the same order, and
:meth:`OutcomeMetrics.from_dict` reads such an object back (a resumed batch case).

:func:`segmentation_scores` measures one prediction as the model's heads read it
(:class:`vafa.ops.heads.Heads`): softmax classes, or overlapping sigmoid regions — then per
output channel (region) and per label of the merged label map (``dice_per_label``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import torch

from vafa.ops.heads import Heads

__all__ = [
    "ClassValues",
    "OutcomeMetrics",
    "Pair",
    "PerTile",
    "Protocol",
    "SegmentationScores",
    "segmentation_scores",
]

T = TypeVar("T")
#: One value per class name (None where the class is absent from the reference, or for HD95
#: missing from the prediction).
ClassValues = Mapping[str, float | None]


@dataclass(frozen=True)
class Pair(Generic[T]):
    """A measure of the clean and of the adversarial prediction (``adversarial`` is None when
    there is no adversarial volume)."""

    clean: T
    adversarial: T | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"clean": _plain(self.clean), "adversarial": _plain(self.adversarial)}

    @classmethod
    def from_dict(cls, value: Any, convert: Callable[[Any], Any] | None = None) -> Pair:
        """``{"clean": …, "adversarial": …}`` (anything else: both None); ``convert`` is applied
        to the values that are not None."""
        value = value if isinstance(value, Mapping) else {}

        def one(v):
            return v if v is None or convert is None else convert(v)

        return cls(one(value.get("clean")), one(value.get("adversarial")))


@dataclass(frozen=True)
class SegmentationScores:
    """Segmentation metrics of one prediction against the reference (on the model grid).

    Attributes:
        dice_per_class, hd95_per_class: per class name (HD95 in mm).
        dice: mean Dice over the classes present, background included (the paper's DSC).
        dice_fg: the same without background.
        hd95: mean of the finite per-class HD95 (None when there is none).
        hd95_missed: classes of the reference that the prediction misses (infinite HD95).
        dice_per_label: sigmoid heads only: Dice per label value (``"1"``, ``"2"``, …) of the
            merged label maps (:meth:`vafa.ops.heads.Heads.merge`); None for softmax classes.

    With sigmoid heads the "classes" are the regions (one per output channel) and ``dice`` and
    ``dice_fg`` are both their mean (there is no background channel).
    """

    dice_per_class: ClassValues
    hd95_per_class: ClassValues
    dice: float | None
    dice_fg: float | None
    hd95: float | None
    hd95_missed: tuple[str, ...]
    dice_per_label: ClassValues | None = None


@dataclass(frozen=True)
class PerTile:
    """Dice of the stitched per-tile predictions the attack optimised against."""

    dice: Pair[float | None]
    dice_fg: Pair[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"dice": self.dice.to_dict(), "dice_fg": self.dice_fg.to_dict()}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PerTile:
        return cls(Pair.from_dict(value.get("dice")), Pair.from_dict(value.get("dice_fg")))


@dataclass(frozen=True)
class Protocol:
    """How the predictions were made: sliding window of ``roi`` with ``overlap``, blending
    ``mode``, on the ``grid`` (``"model"``) of spacing ``spacing_mm``; ``inference``: all the
    settings (``card.inference.to_dict()``: window positions, mirroring, what the user
    changed), None in files written before they were recorded."""

    overlap: float | tuple[float, ...]
    roi: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    prediction: str = "sliding_window"
    mode: str = "constant"
    grid: str = "model"
    inference: Mapping[str, Any] | None = None

    def summary(self) -> str | None:
        """The inference in one line (:meth:`vafa.io.inference.Inference.summary`), or None."""
        from vafa.io.inference import Inference

        return None if self.inference is None else Inference.from_dict(self.inference).summary()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "prediction": self.prediction,
            "overlap": list(self.overlap) if isinstance(self.overlap, tuple) else self.overlap,
            "mode": self.mode,
            "roi": list(self.roi),
            "grid": self.grid,
            "spacing_mm": list(self.spacing_mm),
        }
        if self.inference is not None:
            out["inference"] = dict(self.inference)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Protocol:
        return cls(
            overlap=value.get("overlap"),
            roi=tuple(value.get("roi") or ()),
            spacing_mm=tuple(value.get("spacing_mm") or ()),
            prediction=value.get("prediction", "sliding_window"),
            mode=value.get("mode", "constant"),
            grid=value.get("grid", "model"),
            inference=value.get("inference"),
        )


@dataclass(frozen=True)
class OutcomeMetrics:
    """The metrics of an outcome (:func:`vafa.run.pipeline.run_attack`) or of an evaluation
    (:func:`vafa.run.pipeline.evaluate`; the attack fields keep their defaults there).

    Attributes:
        reference: ``"labels"`` or ``"clean_prediction"`` (what Dice is measured against).
        class_names: the card's class names.
        dice_per_class, hd95_per_class, dice, dice_fg, hd95, hd95_missed: the
            :class:`SegmentationScores` fields of the clean and the adversarial prediction.
        protocol: how the predictions were made.
        ssim, psnr, linf, l2: the perturbation of the model input ([0, 1] units; PSNR in dB,
            None when infinite); ``linf_original_units``: ``linf`` × the window width (e.g. HU);
            ``flip_rate``: voxels whose predicted class changed. All None without an
            adversarial volume.
        attack, normalize, steps: the attack's settings; ``steps_run``: steps run over all
            tile batches; ``zeroed_fraction``: VAFA's quantized-to-zero DCT coefficients.
        per_tile: :class:`PerTile` (None after a cancel and for an evaluation).
        cancelled, tiles_done, tiles_total: how far the attack got.
        dice_per_label: sigmoid heads: the :class:`SegmentationScores` field of both
            predictions; None (and not in :meth:`to_dict`) for softmax classes.
    """

    reference: str | None
    class_names: tuple[str, ...]
    dice_per_class: Pair[ClassValues]
    hd95_per_class: Pair[ClassValues]
    dice: Pair[float | None]
    dice_fg: Pair[float | None]
    hd95: Pair[float | None]
    hd95_missed: Pair[tuple[str, ...]]
    protocol: Protocol | None
    ssim: float | None = None
    psnr: float | None = None
    linf: float | None = None
    l2: float | None = None
    linf_original_units: float | None = None
    flip_rate: float | None = None
    attack: str | None = None
    normalize: str | None = None
    steps: int | None = None
    steps_run: int | None = None
    zeroed_fraction: float | None = None
    per_tile: PerTile | None = None
    cancelled: bool = False
    tiles_done: int | None = None
    tiles_total: int | None = None
    dice_per_label: Pair[ClassValues] | None = None

    @classmethod
    def from_scores(
        cls,
        clean: SegmentationScores,
        adversarial: SegmentationScores | None,
        **others: Any,
    ) -> OutcomeMetrics:
        """Pair the scores of the clean and the adversarial prediction; ``others``: the other
        fields."""
        pairs = {
            f.name: Pair(
                getattr(clean, f.name),
                None if adversarial is None else getattr(adversarial, f.name),
            )
            for f in fields(SegmentationScores)
        }
        if clean.dice_per_label is None:
            pairs["dice_per_label"] = None
        return cls(**pairs, **others)

    def scores(self, which: str) -> SegmentationScores | None:
        """The :class:`SegmentationScores` of ``"clean"`` or ``"adversarial"`` (None: there is
        no adversarial prediction)."""
        if which not in ("clean", "adversarial"):
            raise ValueError(f"which must be 'clean' or 'adversarial', got {which!r}")
        values = {
            f.name: getattr(getattr(self, f.name), which)
            for f in fields(SegmentationScores)
            if getattr(self, f.name) is not None
        }
        if which == "adversarial" and values["dice_per_class"] is None:
            return None
        return SegmentationScores(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``metrics.json``'s ``"metrics"`` (plain dicts, lists and numbers;
        :func:`vafa.io.files.json_ready` makes what is left JSON-safe)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if f.name != "dice_per_label" or self.dice_per_label is not None
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> OutcomeMetrics:
        """Read back :meth:`to_dict` (a ``metrics.json``); keys that are missing take their
        defaults (None, ``cancelled`` False)."""
        known = {f.name for f in fields(cls)}
        scalars = {k: v for k, v in value.items() if k in known}
        protocol, per_tile = value.get("protocol"), value.get("per_tile")
        scalars.update(
            class_names=tuple(value.get("class_names") or ()),
            dice_per_class=Pair.from_dict(value.get("dice_per_class"), dict),
            hd95_per_class=Pair.from_dict(value.get("hd95_per_class"), dict),
            dice=Pair.from_dict(value.get("dice")),
            dice_fg=Pair.from_dict(value.get("dice_fg")),
            hd95=Pair.from_dict(value.get("hd95")),
            hd95_missed=Pair.from_dict(value.get("hd95_missed"), tuple),
            protocol=Protocol.from_dict(protocol) if isinstance(protocol, Mapping) else None,
            per_tile=PerTile.from_dict(per_tile) if isinstance(per_tile, Mapping) else None,
            dice_per_label=(
                Pair.from_dict(value["dice_per_label"], dict)
                if isinstance(value.get("dice_per_label"), Mapping)
                else None
            ),
        )
        scalars.setdefault("reference", None)
        return cls(**scalars)


def segmentation_scores(
    heads: Heads,
    prediction: torch.Tensor,
    reference: torch.Tensor,
    class_names: tuple[str, ...] | list[str],
    spacing: tuple[float, ...] | None = None,
) -> SegmentationScores:
    """The :class:`SegmentationScores` of one prediction against a reference (batch of one).

    Args:
        heads: how the model's outputs are read (``card.heads()``).
        prediction, reference: in the form of :meth:`Heads.predict
            <vafa.ops.heads.Heads.predict>` (``[1, 1, H, W, D]`` classes, or sigmoid region
            masks ``[1, K, H, W, D]``; a reference label map goes through
            :meth:`~vafa.ops.heads.Heads.target` first).
        class_names: one name per output channel (``card.class_names``).
        spacing: voxel spacing in mm for HD95 (None: voxels).
    """
    names = list(class_names)
    k = len(names)
    dice = heads.dice(prediction, reference, k)
    hd = heads.hd95(prediction, reference, k, spacing)[0]
    means = heads.summary(dice)
    finite = hd[torch.isfinite(hd)]
    by_label = heads.label_dice(prediction, reference)
    per_label = {str(v): _finite(d[0]) for v, d in by_label.items()} if by_label else None
    return SegmentationScores(
        dice_per_class={n: _finite(v) for n, v in zip(names, dice[0], strict=True)},
        hd95_per_class={n: _finite(v) for n, v in zip(names, hd, strict=True)},
        dice=_finite(means["dice"]),
        dice_fg=_finite(means["dice_fg"]),
        hd95=_finite(finite.mean()) if finite.numel() else None,
        hd95_missed=tuple(n for n, v in zip(names, hd.tolist(), strict=True) if v == math.inf),
        dice_per_label=per_label,
    )


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """A field's value as in the JSON: dataclasses by their ``to_dict``, mappings as dicts,
    tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
