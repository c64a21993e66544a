"""Training data of VAFT: datalists, cached model-space cases and random patches.

* :func:`read_datalist` — a decathlon-style JSON (``training`` / ``validation`` lists of
  ``{"image", "label"}``, paths relative to the JSON); every missing file is listed at once.
* :func:`load_cases` — image/label pairs (files or in-memory :class:`~vafa.io.volume.Volume`
  pairs) brought onto the model grid of a card (:func:`vafa.io.model_space.to_model_space`), in
  [0, 1], cached in memory (:class:`TrainingCase`).
* :class:`PatchSampler` — batches of random patches as in the paper's MONAI pipeline:
  ``RandCropByPosNegLabeld`` with the card's ROI (volumes smaller than the ROI are padded
  first), optional flips, small rotations and intensity jitter (``RandScaleIntensityd``,
  ``RandShiftIntensityd``). Every patch is drawn from a seed derived from
  ``(seed, rank, epoch, step, slot)``, so a resumed run draws exactly the patches the
  uninterrupted run would have drawn; cases are shared out among processes by
  ``DistributedSampler``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vafa.io.datalist import ImagePaths
from vafa.io.models import ModelCard
from vafa.io.volume import Volume
from vafa.ops.checks import number

__all__ = [
    "AXIS_NAMES",
    "Augmentation",
    "PatchSampler",
    "TrainingCase",
    "load_cases",
    "read_datalist",
    "resolve_flip_axes",
]

#: Anatomical names accepted by ``Augmentation.flip_axes`` (resolved with the card's orientation).
AXIS_NAMES = {"LR": "LR", "RL": "LR", "AP": "AP", "PA": "AP", "SI": "SI", "IS": "SI"}


@dataclass
class Augmentation:
    """Random patch transforms of VAFT training (paper: MONAI dictionary transforms).

    Attributes:
        crop_foreground: crop every case to its foreground (image > 0 on the model grid:
            ``CropForegroundd``) once, before caching (training and validation cases).
        pos, neg: ratio of patches centred on foreground / background voxels
            (``RandCropByPosNegLabeld``).
        flip_axes: axes to flip at random: model-grid indices ``0, 1, 2`` or anatomical names
            ``"SI"``, ``"AP"``, ``"LR"`` (resolved with the card's orientation). Default none:
            a left–right flip turns a left kidney into a right one, so it is wrong for
            lateralised organ labels (a warning says so when the class names say left/right).
        flip_prob: probability of each flip.
        rotate_degrees: maximum absolute rotation about every axis, in degrees (0: off).
        rotate_prob: probability of a rotation.
        scale_intensity: ``RandScaleIntensityd`` factor range ``±scale_intensity`` (0: off).
        scale_prob: its probability.
        shift_intensity: ``RandShiftIntensityd`` offset range ``±shift_intensity`` in [0, 1]
            units (0: off).
        shift_prob: its probability.

    Images are clamped to [0, 1] after the intensity jitter (attacks require [0, 1]).
    """

    crop_foreground: bool = False
    pos: float = 1.0
    neg: float = 1.0
    flip_axes: tuple[int | str, ...] = ()
    flip_prob: float = 0.1
    rotate_degrees: float = 10.0
    rotate_prob: float = 0.2
    scale_intensity: float = 0.1
    scale_prob: float = 0.1
    shift_intensity: float = 0.1
    shift_prob: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.flip_axes, (str, int)):
            self.flip_axes = (self.flip_axes,)
        self.flip_axes = tuple(self.flip_axes)
        for name in ("pos", "neg", "rotate_degrees", "scale_intensity", "shift_intensity"):
            number(name, getattr(self, name))
        if self.pos + self.neg <= 0:
            raise ValueError(f"pos + neg must be > 0, got {self.pos} and {self.neg}")
        for name in ("flip_prob", "rotate_prob", "scale_prob", "shift_prob"):
            value = getattr(self, name)
            number(name, value)
            if value > 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for axis in self.flip_axes:
            _check_axis(axis)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = asdict(self)
        out["flip_axes"] = list(self.flip_axes)
        return out


@dataclass(eq=False)
class TrainingCase:
    """One case on the model grid, cached in memory.

    Attributes:
        image: ``[1, H, W, D]`` float32 CPU tensor in [0, 1].
        labels: ``[1, H, W, D]`` float32 CPU tensor of class indices.
        name: the image file (or ``"<split> case <n>"`` for in-memory volumes).
    """

    image: torch.Tensor
    labels: torch.Tensor
    name: str


def read_datalist(path: str | os.PathLike) -> dict[str, list[tuple[ImagePaths, Path]]]:
    """Read a decathlon-style datalist for training (:func:`vafa.io.datalist.read_split`).

    Args:
        path: JSON file with ``"training"`` and optionally ``"validation"`` lists of
            ``{"image": ..., "label": ...}`` (paths relative to the JSON file's folder; an image
            may be a list of files, one per channel).

    Returns:
        ``{"training": [(image, label), ...], "validation": [...]}`` (validation may be empty).

    Raises:
        FileNotFoundError: the datalist, or any image/label file it names, does not exist (all
            missing files are listed in one message).
        ValueError: not valid JSON, no non-empty ``training`` list, an entry without both
            ``image`` and ``label``, or cases of different channels.
    """
    from vafa.io.datalist import check_same_kind, image_files, read_split
    from vafa.io.files import read_json

    path = Path(path)
    doc = read_json(path, "datalist")
    out = {"training": read_split(path, "training", labels=True), "validation": []}
    if isinstance(doc, dict) and doc.get("validation"):
        out["validation"] = read_split(path, "validation", labels=True)
    images = [image for pairs in out.values() for image, _ in pairs]
    names = [f"{split} case {n}" for split, pairs in out.items() for n in range(len(pairs))]
    check_same_kind(images, f"datalist {path}:", names)
    missing = [str(p) for pairs in out.values() for image, label in pairs
               for p in (*image_files(image), label) if not p.is_file()]  # fmt: skip
    if missing:
        raise FileNotFoundError(
            f"datalist {path}: {len(missing)} file(s) missing: {', '.join(missing)}"
        )
    return out  # type: ignore[return-value]


def load_cases(
    pairs: Sequence[tuple[Volume | str | os.PathLike, Volume | str | os.PathLike]],
    card: ModelCard,
    *,
    crop_foreground: bool = False,
    split: str = "training",
) -> list[TrainingCase]:
    """Load image/label pairs onto the card's model grid, in [0, 1].

    Args:
        pairs: ``(image, labels)`` file paths or :class:`~vafa.io.volume.Volume` pairs (labels on
            the image's grid).
        card: the model card (orientation, spacing, intensity mapping, ``out_channels``).
        crop_foreground: crop each case to ``image > 0`` (``CropForegroundd``).
        split: name used in messages and case names.

    Returns:
        One :class:`TrainingCase` per pair.

    Raises:
        TypeError: a pair is not two volumes or paths.
        ValueError: labels on another grid, non-integer, or holding a class ``>= card.out_channels``
            (the file — or the case — is named).
        FileNotFoundError: a file does not exist.
    """
    from vafa.io.channels import Channels, channel_volumes, load_image
    from vafa.io.datalist import describe
    from vafa.io.model_space import (
        check_label_classes,
        labels_to_model_space,
        load_model_labels,
        to_model_space,
    )

    if isinstance(pairs, (str, os.PathLike)) or not isinstance(pairs, Sequence):
        raise TypeError(f"{split} data must be a list of (image, labels) pairs, got {pairs!r}")
    cases = []
    for n, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"{split} case {n} must be an (image, labels) pair, got {pair!r}")
        image, labels = pair
        if not isinstance(image, (Volume, Channels)):
            image = load_image(image, card.in_channels, card.channel_names)
        sources = tuple(v.source for v in channel_volumes(image) if v.source is not None)
        name = describe(tuple(dict.fromkeys(sources))) if sources else f"{split} case {n}"
        if isinstance(labels, Volume):
            check_label_classes(labels, card, labels.source or f"labels of {name}")
        else:
            labels = load_model_labels(labels, image, card)
        model_input = to_model_space(image, card)
        target = labels_to_model_space(labels, model_input)
        case = {"image": model_input.tensor[0].float(), "label": target[0].float()}
        if crop_foreground:
            case = _crop_foreground(case, name)
        cases.append(TrainingCase(case["image"].clamp(0, 1), case["label"], name))
    return cases


def resolve_flip_axes(flip_axes: Sequence[int | str], card: ModelCard) -> tuple[int, ...]:
    """Model-grid axis indices of ``flip_axes`` (indices or ``"SI"``/``"AP"``/``"LR"``).

    Raises:
        ValueError: an anatomical name without an orientation on the card, or a bad axis.

    Warns:
        UserWarning: a left–right flip with class names that say "left"/"right".
    """
    axes = []
    for axis in flip_axes:
        _check_axis(axis)
        if isinstance(axis, str):
            if card.orientation is None:
                raise ValueError(
                    f"flip axis {axis!r} is anatomical but the card has no orientation; give "
                    "model-grid axis indices 0, 1, 2 instead"
                )
            wanted = AXIS_NAMES[axis.upper()]
            axis = next(i for i, c in enumerate(card.orientation) if c in wanted)
        axes.append(int(axis))
    for axis in sorted(set(axes)):
        code = card.orientation[axis] if card.orientation else None
        lateral = [n for n in card.class_names if "left" in n.lower() or "right" in n.lower()]
        if code in ("L", "R") and lateral:
            warnings.warn(
                f"flipping axis {axis} (left-right) swaps sides, but the classes "
                f"{lateral} are lateralised: their labels become wrong on flipped patches",
                UserWarning,
                stacklevel=2,
            )
    return tuple(sorted(set(axes)))


class PatchSampler:
    """Batches of random training patches ``[B, 1, *roi]`` (see the module docstring).

    Args:
        cases: the cached training cases.
        roi: patch size ``(h, w, d)`` (the card's ``roi_size``).
        augmentation: the random transforms.
        flip_axes: resolved model-grid axes to flip (:func:`resolve_flip_axes`).
        batch_size: patches per batch (one per drawn case).
        seed: base seed of the patch draws and the case order.
        rank, world_size: this process and the number of processes (cases are shared out by
            ``DistributedSampler``).
    """

    def __init__(
        self,
        cases: Sequence[TrainingCase],
        roi: Sequence[int],
        augmentation: Augmentation,
        flip_axes: Sequence[int] = (),
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        from monai.transforms import FgBgToIndicesd, SpatialPadd
        from torch.utils.data import DistributedSampler

        if not cases:
            raise ValueError("cases must not be empty: give at least one training case")
        self.roi = tuple(int(r) for r in roi)
        self.batch_size = int(batch_size)
        self.seed, self.rank = int(seed), int(rank)
        pad = SpatialPadd(keys=("image", "label"), spatial_size=self.roi, mode="constant")
        indices = FgBgToIndicesd(keys="label", image_key="image", image_threshold=0.0)
        self.cases = [indices(pad({"image": c.image, "label": c.labels})) for c in cases]
        self.sampler = DistributedSampler(
            range(len(cases)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.transform = _patch_transform(self.roi, augmentation, flip_axes)

    def default_iterations(self) -> int:
        """Iterations that draw every case of this process once: ``ceil(cases / batch)``."""
        return max(1, math.ceil(len(self.sampler) / self.batch_size))

    def batch(self, epoch: int, step: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The patches of ``step`` (0-based) of ``epoch`` (0-based) in an epoch of ``iterations``.

        Returns:
            ``(images [B, 1, *roi] float32 in [0, 1], labels [B, 1, *roi] int64)`` on the CPU.
        """
        order = self._epoch_order(epoch, iterations)
        chosen = order[step * self.batch_size : (step + 1) * self.batch_size]
        images, labels = [], []
        for slot, index in enumerate(chosen):
            seq = np.random.SeedSequence([self.seed, self.rank, epoch, step, slot])
            self.transform.set_random_state(seed=int(seq.generate_state(1)[0]))
            patch = self.transform(dict(self.cases[index]))
            patch = patch[0] if isinstance(patch, list) else patch
            images.append(_plain(patch["image"]).clamp(0.0, 1.0))
            labels.append(_plain(patch["label"]).round().long())
        return torch.stack(images), torch.stack(labels)

    def _epoch_order(self, epoch: int, iterations: int) -> list[int]:
        needed = iterations * self.batch_size
        order: list[int] = []
        cycle = 0
        while len(order) < needed:
            self.sampler.set_epoch(epoch * 100_003 + cycle)
            order += list(self.sampler)
            cycle += 1
        return order[:needed]


# ----------------------------------------------------------------------------- helpers
def _patch_transform(roi, aug: Augmentation, flip_axes: Sequence[int]):
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    transforms: list[Any] = [
        RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=roi,
            pos=aug.pos,
            neg=aug.neg,
            num_samples=1,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        )
    ]
    transforms += [RandFlipd(keys=keys, prob=aug.flip_prob, spatial_axis=a) for a in flip_axes]
    if aug.rotate_degrees > 0 and aug.rotate_prob > 0:
        angle = math.radians(aug.rotate_degrees)
        transforms.append(
            RandRotated(
                keys=keys,
                range_x=angle,
                range_y=angle,
                range_z=angle,
                prob=aug.rotate_prob,
                keep_size=True,
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            )
        )
    if aug.scale_intensity > 0 and aug.scale_prob > 0:
        transforms.append(
            RandScaleIntensityd(keys="image", factors=aug.scale_intensity, prob=aug.scale_prob)
        )
    if aug.shift_intensity > 0 and aug.shift_prob > 0:
        transforms.append(
            RandShiftIntensityd(keys="image", offsets=aug.shift_intensity, prob=aug.shift_prob)
        )
    return Compose(transforms)


def _crop_foreground(case: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    from monai.transforms import CropForegroundd

    if not bool((case["image"] > 0).any()):
        raise ValueError(f"{name}: crop_foreground found no voxel > 0 on the model grid")
    cropped = CropForegroundd(keys=("image", "label"), source_key="image", allow_smaller=True)(case)
    return {k: _plain(cropped[k]) for k in ("image", "label")}


def _plain(x) -> torch.Tensor:
    """A plain float32 tensor (MONAI returns MetaTensors)."""
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float().contiguous()


def _check_axis(axis) -> None:
    if isinstance(axis, str):
        if axis.upper() not in AXIS_NAMES:
            raise ValueError(
                f"flip axis must be 0, 1, 2 or one of {sorted(set(AXIS_NAMES.values()))}, "
                f"got {axis!r}"
            )
    elif isinstance(axis, bool) or not isinstance(axis, int) or axis not in (0, 1, 2):
        raise ValueError(f"flip axis must be 0, 1, 2 or 'SI'/'AP'/'LR', got {axis!r}")
