"""What a model's output channels mean, in one object that every consumer asks.

A segmentation network returns logits ``[B, K, H, W, D]``; the card's ``outputs``
(:func:`check_outputs`) says how to read them, and :class:`Heads` does everything that depends
on it:

* ``{"activation": "softmax"}`` (the default, and what cards written before the field get):
  K mutually exclusive classes, index 0 the background. Prediction: the class map ``argmax_k``
  ``[B, 1, …]`` int64. Dice per class, background column included. Attack loss: the paper's
  Dice-CE (:class:`vafa.ops.losses.DiceCELoss`).
* ``{"activation": "sigmoid", "threshold": 0.5, "regions": {name: [label values], …}}``:
  K overlapping regions, one per output channel, named by the card's ``class_names`` in
  channel order; each covers the listed values of a label map (MONAI's BraTS bundle:
  ``{"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}``, :data:`BRATS_REGIONS`). Without
  ``regions``, region ``k`` covers label ``k + 1``. Prediction: ``sigmoid(z_k) >= threshold``
  per channel (MONAI's ``Activations(sigmoid=True)`` then ``AsDiscrete(threshold=…)``), region
  masks ``[B, K, …]`` uint8. A label map ``[B, 1, …]`` becomes region masks by membership (for the BraTS regions:
  MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``). Dice per region (every channel is
  foreground). Attack loss: soft Dice of the sigmoid probabilities + binary cross-entropy with
  logits (:class:`vafa.ops.losses.DiceBCELoss`, how MONAI's ``DiceCELoss(sigmoid=True)``
  trains such models).

Sliding windows average the logits for both (:mod:`vafa.run.windows`): MONAI's
``SlidingWindowInferer`` averages the network's output and a bundle applies its activation
afterwards, so the heads act on averaged logits.

:meth:`Heads.merge` turns region masks into one label map (files, overlays): a voxel gets the
label whose regions are exactly the voxel's active regions; where no label matches (e.g. ET
without TC), the smallest active region (fewest label values; equal sizes: the later channel)
gives its own label (its label that lies in the fewest regions; equal: the smaller value); no
active region: 0. Labels lying in the same regions cannot be told apart: the smaller value.
For BraTS this is the usual post-processing (WT → 2, TC → 1, ET → 4, painted in that order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F

from vafa.ops.losses import DiceBCELoss, DiceCELoss
from vafa.ops.messages import did_you_mean
from vafa.ops.metrics import (
    dice_of_masks,
    dice_per_class,
    dice_summary,
    hd95_of_masks,
    hd95_per_class,
    predict_labels,
)

__all__ = [
    "ACTIVATIONS",
    "BRATS_REGIONS",
    "BRATS_REGION_NAMES",
    "MAX_REGIONS",
    "SOFTMAX",
    "Heads",
    "check_heads",
    "check_outputs",
]

#: The activations a card's ``outputs`` may name.
ACTIVATIONS = ("softmax", "sigmoid")
#: Most sigmoid regions (a voxel's active regions are one int64 bit mask).
MAX_REGIONS = 62
#: The BraTS tumour regions as unions of BraTS label values (1: necrotic and non-enhancing
#: tumour core, 2: peritumoral edema, 4: GD-enhancing tumour; BraTS 2018–2022, 2023 numbers the
#: enhancing tumour 3): tumour core TC = {1, 4}, whole tumour WT = {1, 2, 4}, enhancing tumour
#: ET = {4}. MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` makes the training targets of
#: BraTS models (the Model Zoo's ``brats_mri_segmentation`` bundle) this way, so sigmoid outputs
#: with these names read label maps with this table (:func:`vafa.io.bundle_inferer.read_outputs`).
BRATS_REGIONS = {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}
#: The BraTS regions' spelled-out names (lower case) → their keys in :data:`BRATS_REGIONS`; the
#: Model Zoo bundle's metadata names its outputs "Tumor core", "Whole tumor", "Enhancing tumor".
BRATS_REGION_NAMES = {
    "tumor core": "TC",
    "tumour core": "TC",
    "whole tumor": "WT",
    "whole tumour": "WT",
    "enhancing tumor": "ET",
    "enhancing tumour": "ET",
}


def check_outputs(value: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """The canonical ``outputs`` dict of a card whose output channels are ``class_names``.

    None or ``{"activation": "softmax"}`` → ``{"activation": "softmax"}``; a sigmoid dict gets
    ``threshold`` (default 0.5) and ``regions`` (default: region ``k`` covers label ``k + 1``)
    filled in, its regions in channel order.

    Raises:
        TypeError, ValueError: one line naming the bad value (an unknown activation or key with
            a "did you mean" hint; regions that do not match ``class_names``; a threshold
            outside (0, 1); label values that are not integers >= 1).
    """
    if value is None:
        return {"activation": "softmax"}
    if not isinstance(value, Mapping):
        raise TypeError(f"outputs must be a dict, got {type(value).__name__}")
    activation = value.get("activation", "softmax")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"outputs activation must be one of {list(ACTIVATIONS)}, got {activation!r}"
            + did_you_mean(activation, ACTIVATIONS)
        )
    allowed = ("activation",) if activation == "softmax" else ("activation", "threshold", "regions")
    for key in value:
        if key not in allowed:
            raise ValueError(
                f"outputs key {key!r} is unknown for {activation}; allowed: {list(allowed)}"
                + did_you_mean(key, allowed)
            )
    if activation == "softmax":
        return {"activation": "softmax"}
    threshold = value.get("threshold", 0.5)
    if not isinstance(threshold, Real) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise ValueError(f"outputs threshold must be a number in (0, 1), got {threshold!r}")
    names = list(class_names)
    if len(names) > MAX_REGIONS:
        raise ValueError(f"sigmoid outputs take at most {MAX_REGIONS} regions, got {len(names)}")
    regions = value.get("regions")
    if regions is None:
        regions = {name: [k + 1] for k, name in enumerate(names)}
    return {"activation": "sigmoid", "threshold": float(threshold),
            "regions": _regions(regions, names)}  # fmt: skip


def _regions(regions: Any, names: list[str]) -> dict[str, list[int]]:
    if not isinstance(regions, Mapping):
        raise TypeError(f"outputs regions must be a dict {{name: [label values]}}, got {regions!r}")
    if set(regions) != set(names):
        raise ValueError(
            f"outputs regions must name the output channels (class_names) {names}, "
            f"got {list(regions)}"
        )
    out = {}
    for name in names:
        values = regions[name]
        ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
        if not ok or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise ValueError(
                f"outputs region {name!r} must be a non-empty list of label values >= 1, "
                f"got {values!r}"
            )
        out[name] = sorted({int(v) for v in values})
    return out


@dataclass(frozen=True, eq=False)
class Heads:
    """How logits ``[B, K, H, W, D]`` are read (module docstring); build with
    :meth:`from_outputs` (or ``card.heads()``); ``Heads()`` is softmax.

    Attributes:
        activation: ``"softmax"`` or ``"sigmoid"``.
        threshold: sigmoid probability at or above which a region is predicted.
        regions: sigmoid: per output channel, the label values it covers; None for softmax.
        names: the output channels' names (the card's ``class_names``), or None.
    """

    activation: str = "softmax"
    threshold: float = 0.5
    regions: tuple[tuple[int, ...], ...] | None = None
    names: tuple[str, ...] | None = None

    @classmethod
    def from_outputs(cls, outputs: Any, class_names: Sequence[str]) -> Heads:
        """The heads of a card's ``outputs`` dict (checked by :func:`check_outputs`)."""
        canonical = check_outputs(outputs, class_names)
        if canonical["activation"] == "softmax":
            return cls(names=tuple(class_names))
        regions = tuple(tuple(canonical["regions"][n]) for n in class_names)
        return cls("sigmoid", canonical["threshold"], regions, tuple(class_names))

    @property
    def sigmoid(self) -> bool:
        """Whether the outputs are overlapping sigmoid regions."""
        return self.activation == "sigmoid"

    @property
    def first_foreground(self) -> int:
        """Index of the first foreground column of :meth:`dice` (softmax 1, sigmoid 0)."""
        return 0 if self.sigmoid else 1

    def check_logits(self, logits: torch.Tensor) -> int:
        """K of logits ``[B, K, …]``; ValueError when a sigmoid model's K is not its regions'."""
        k = int(logits.shape[1])
        if self.sigmoid and k != len(self.regions):
            raise ValueError(
                f"the model returns {k} output channels but its outputs name "
                f"{len(self.regions)} sigmoid regions {list(self.names or ())}"
            )
        return k

    # ----------------------------------------------------------------- predictions
    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K, …]`` → softmax: class map ``[B, 1, …]`` int64; sigmoid: region masks
        ``[B, K, …]`` uint8 (``sigmoid(z) >= threshold``)."""
        if not self.sigmoid:
            return predict_labels(logits)
        self.check_logits(logits)
        return (torch.sigmoid(logits.float()) >= self.threshold).to(torch.uint8)

    def target(self, labels: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        """A label map ``[B, 1, …]`` (integer values) in the form of :meth:`predict`.

        Softmax: int64 ``[B, 1, …]`` (checked against ``num_outputs`` classes); sigmoid: region
        masks ``[B, K, …]`` uint8 (voxel in region k iff its label is one of region k's values).

        Raises:
            ValueError: a label the model cannot predict (softmax: ``>= num_outputs``; sigmoid: a
                value no region covers, other than 0).
        """
        labels = labels.long()
        if not self.sigmoid:
            if num_outputs is not None and int(labels.max()) >= num_outputs:
                raise ValueError(
                    f"labels hold class {int(labels.max())} but the model predicts "
                    f"{num_outputs} classes (0..{num_outputs - 1})"
                )
            return labels
        stray = self.stray_labels(torch.unique(labels).tolist())
        if stray:
            raise ValueError(
                f"labels hold value(s) {stray} that no output region covers "
                f"(regions {self.region_dict()})"
            )
        masks = [
            torch.isin(labels[:, 0], torch.tensor(r, device=labels.device)) for r in self.regions
        ]
        return torch.stack(masks, dim=1).to(torch.uint8)

    @property
    def label_values(self) -> tuple[int, ...]:
        """Sigmoid: the label values the regions cover, ascending; softmax: ``()``."""
        return tuple(sorted({v for r in self.regions or () for v in r}))

    def stray_labels(self, values) -> list[int]:
        """Sigmoid: the ``values`` (ints) other than 0 that no region covers; softmax: ``[]``."""
        if not self.sigmoid:
            return []
        covered = set(self.label_values)
        return sorted({int(v) for v in values if v != 0 and int(v) not in covered})

    def region_dict(self) -> dict[str, list[int]]:
        """Sigmoid: ``{name: [label values]}`` in channel order; softmax: ``{}``."""
        if not self.sigmoid:
            return {}
        names = self.names or tuple(f"channel_{k}" for k in range(len(self.regions)))
        return {n: list(r) for n, r in zip(names, self.regions, strict=True)}

    def merge(self, prediction: torch.Tensor) -> torch.Tensor:
        """One label map ``[B, 1, …]`` int64 of a prediction (softmax: itself; sigmoid: the
        rule of the module docstring)."""
        if not self.sigmoid:
            return prediction.long()
        k = len(self.regions)
        if prediction.dim() < 2 or prediction.shape[1] != k:
            raise ValueError(
                f"prediction must be region masks [B, {k}, ...], got {tuple(prediction.shape)}"
            )
        bits = (2 ** torch.arange(k, dtype=torch.int64, device=prediction.device)).view(
            1, k, *([1] * (prediction.dim() - 2))
        )
        codes = ((prediction != 0).long() * bits).sum(dim=1, keepdim=True)
        unique, inverse = torch.unique(codes, return_inverse=True)
        table = self._merge_table()
        labels = torch.tensor([table(int(c)) for c in unique.tolist()], dtype=torch.int64)
        return labels.to(prediction.device)[inverse]

    def _merge_table(self):
        """``code → label`` for a bit mask of active regions (the module docstring's rule)."""
        values = self.label_values
        membership = {v: sum(1 << k for k, r in enumerate(self.regions) if v in r) for v in values}
        exact: dict[int, int] = {}
        for v in values:  # ascending: the smaller of labels in the same regions
            exact.setdefault(membership[v], v)
        own = [min(r, key=lambda v: (bin(membership[v]).count("1"), v)) for r in self.regions]

        def label(code: int) -> int:
            if code == 0:
                return 0
            if code in exact:
                return exact[code]
            active = [k for k in range(len(self.regions)) if code >> k & 1]
            smallest = min(active, key=lambda k: (len(self.regions[k]), -k))
            return own[smallest]

        return label

    # ----------------------------------------------------------------- measures
    def dice(
        self, prediction: torch.Tensor, target: torch.Tensor, num_outputs: int | None = None
    ) -> torch.Tensor:
        """Dice ``[B, K]`` float64 of a prediction against a target (both in the form of
        :meth:`predict`); ``nan`` where the target lacks the class/region. Softmax needs
        ``num_outputs`` (:func:`vafa.ops.metrics.dice_per_class`, background included)."""
        if self.sigmoid:
            return dice_of_masks(prediction, target)
        if num_outputs is None:
            raise ValueError("num_outputs is needed for the Dice of softmax classes")
        return dice_per_class(prediction, target, num_outputs)

    def hd95(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        num_outputs: int | None = None,
        spacing: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """HD95 ``[B, K]`` (MONAI; in mm with ``spacing``) of each class or region, in the form
        of :meth:`dice`: ``nan`` where the target lacks it, ``inf`` where only the prediction
        does."""
        if self.sigmoid:
            return hd95_of_masks(prediction, target, spacing)
        if num_outputs is None:
            raise ValueError("num_outputs is needed for the HD95 of softmax classes")
        return hd95_per_class(prediction, target, num_outputs, spacing)

    def label_dice(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[int, torch.Tensor]:
        """Sigmoid heads: Dice ``[B]`` of each label value of the merged maps (:meth:`merge`),
        the per-label view of overlapping regions; softmax: ``{}`` (the classes are the
        labels)."""
        if not self.sigmoid:
            return {}
        values = self.label_values
        merged = dice_per_class(self.merge(prediction), self.merge(target), values[-1] + 1)
        return {v: merged[:, v] for v in values}

    def foreground(self, dice: torch.Tensor) -> torch.Tensor:
        """The foreground columns of a ``[B, K]`` :meth:`dice` table (softmax: without 0)."""
        return dice[:, self.first_foreground :]

    def summary(self, dice: torch.Tensor) -> dict[str, float]:
        """``{"dice", "dice_fg"}`` means of a ``[B, K]`` table, ``nan`` left out (softmax:
        :func:`vafa.ops.metrics.dice_summary`; sigmoid: both the mean over the regions)."""
        if not self.sigmoid:
            return dice_summary(dice)
        mean = float(torch.nanmean(dice.double()).item()) if dice.numel() else math.nan
        return {"dice": mean, "dice_fg": mean}

    # ----------------------------------------------------------------- losses
    def loss_function(self) -> torch.nn.Module:
        """The attack's segmentation loss, per sample ``[B]``: Dice-CE (softmax, the paper's)
        or Dice + BCE with logits (sigmoid), both with the paper's smoothing."""
        return DiceBCELoss(reduction="none") if self.sigmoid else DiceCELoss(reduction="none")

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[B]`` :meth:`loss_function` of logits ``[B, K, …]`` against a :meth:`target`."""
        return self.loss_function()(logits, target)

    def voxel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-voxel cross-entropy: softmax ``[B, H, W, D]``; sigmoid ``[B, K, H, W, D]`` (each
        region a binary classifier: BCE with logits)."""
        if self.sigmoid:
            return F.binary_cross_entropy_with_logits(
                logits.float(), target.float(), reduction="none"
            )
        return F.cross_entropy(logits.float(), target[:, 0], reduction="none")

    def voxel_wrong(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 where the prediction misses the target, 0 where it is right (float32, the shape
        of :meth:`voxel_loss`)."""
        if self.sigmoid:
            return (self.predict(logits) != target).float()
        return (logits.max(dim=1).indices != target[:, 0]).float()  # max: argmax is slow

    def voxel_cosine(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """CosPGD's weight, the shape of :meth:`voxel_loss`, without a graph: the cosine of the
        predicted distribution and the one-hot target. Softmax: ``p_y / ‖p‖`` over the classes;
        sigmoid, per region (two classes, p and 1 − p): ``p_y / √(p² + (1 − p)²)``."""
        with torch.no_grad():
            if self.sigmoid:
                p = torch.sigmoid(logits.float())
                p_target = torch.where(target.bool(), p, 1.0 - p)
                return p_target * (p * p + (1.0 - p) * (1.0 - p)).rsqrt()
            probabilities = torch.softmax(logits.float(), dim=1)
            # cos(p, onehot(y)) = p_y / ‖p‖ (‖onehot‖ = 1; ‖p‖ ≥ 1/√K, never near 0)
            p_target = probabilities.gather(1, target).squeeze(1)
            # (a channel sum: torch.linalg.vector_norm over dim 1 is ~6x slower on CPU)
            return p_target * (probabilities * probabilities).sum(dim=1).rsqrt()


#: The default heads: softmax classes.
SOFTMAX = Heads()


def check_heads(value: Any) -> Heads:
    """``value`` as :class:`Heads` (None: :data:`SOFTMAX`); TypeError otherwise."""
    if value is None:
        return SOFTMAX
    if not isinstance(value, Heads):
        raise TypeError(f"heads must be a vafa Heads or None, got {type(value).__name__}")
    return value
