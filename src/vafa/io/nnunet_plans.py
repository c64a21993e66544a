"""The model card of an nnU-Net v2 result folder, from its ``plans.json`` and ``dataset.json``.

:func:`nnunet_card` describes one configuration (and checks it against the plans stored in the
checkpoint) as :func:`vafa.io.nnunet.load_nnunet` loads it:

- network: the configuration's ``architecture`` (``dynamic_network_architectures``; the
  pre-2.4 plans keys ``UNet_class_name``… are converted as nnU-Net converts them);
- axes: nnU-Net reads images as ``(z, y, x)`` (SimpleITK's order, also for its nibabel
  readers) and applies ``transpose_forward``; the network gets our ``(i, j, k)`` tensor in that
  order and its logits come back in ours;
- spacing and patch size (roi) from the configuration, in our axis order; orientation: as is
  (``SimpleITKIO``, ``NibabelIO``) or ``RAS`` (the ``…WithReorient`` readers, and
  TotalSegmentator's models, whose tool reorients every image to RAS first);
- classes and names from ``dataset.json``'s ``labels`` (without ``ignore``);
- input channels from ``dataset.json``'s ``channel_names`` (nnU-Net's order ``"0"``, ``"1"``, …;
  ``modality`` in converted v1 datasets), one file each (``case_0000.nii.gz`` …);
- intensities by each channel's normalisation scheme (:mod:`vafa.io.nnunet_intensity`): the
  card's [0, 1] window per channel and a first layer that maps it back to nnU-Net's units
  (``CTNormalization`` exactly: clip to the foreground percentiles, z-score by the foreground
  mean and std);
- inference (:func:`nnunet_inference`): ``nnUNetPredictor``'s defaults — tile step 0.5 at
  nnU-Net's window positions, Gaussian weights (σ = patch/8), padding with the network's 0
  (each channel's own: :attr:`vafa.io.inference.Inference.cval` holds one value per channel),
  mirroring along the axes the checkpoint's trainer allows (``inference_allowed_mirroring_axes``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vafa.io.files import read_json
from vafa.io.inference import Inference
from vafa.io.models import ModelCard
from vafa.io.nnunet_checkpoint import NnunetCheckpoint
from vafa.io.nnunet_intensity import FirstLayer, channel_names, first_layer
from vafa.ops.messages import short_text

__all__ = ["nnunet_card", "nnunet_inference"]

_READERS = {  # plans' image_reader_writer → orientation the images had in training
    "SimpleITKIO": None,
    "NibabelIO": None,
    "SimpleITKIOWithReorient": "RAS",
    "NibabelIOWithReorient": "RAS",
}
#: ``nnUNetPredictor``'s defaults (also ``nnUNetv2_predict``'s): tile step and Gaussian σ / patch.
TILE_STEP = 0.5
SIGMA_SCALE = 1 / 8


def nnunet_card(folder: str | os.PathLike, ckpt: NnunetCheckpoint, path: Path) -> ModelCard:
    """The card of a result folder for the checkpoint ``ckpt`` read from ``path``.

    Raises:
        ValueError: see :func:`vafa.io.nnunet.load_nnunet`.
    """
    folder = Path(folder)
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = read_json(plans_path, "nnU-Net plans"), read_json(dataset_path, "dataset")
    name = _configuration_name(folder, ckpt, path)
    config = _configuration(plans, name, plans_path)
    _check_supported(config, dataset, name, plans_path, dataset_path)
    channels = channel_names(dataset, dataset_path)
    if ckpt.plans is not None:
        _compare_plans(ckpt.plans, config, name, path, plans_path)
    arch = _architecture(config, plans_path)
    class_names = _class_names(dataset, dataset_path)
    axes = [2 - int(t) for t in plans.get("transpose_forward", [0, 1, 2])]
    spacing, roi = [0.0] * 3, [0] * 3
    for n, axis in enumerate(axes):
        spacing[axis], roi[axis] = float(config["spacing"][n]), int(config["patch_size"][n])
    first = first_layer(plans, config, channels, plans_path)
    orientation, notes = _orientation(plans, plans_path)
    inference = nnunet_inference(ckpt, axes, first)
    notes = [*notes, *first.notes]
    provenance = {
        "source": "nnU-Net v2 result folder",
        "folder": folder.resolve().name,
        "dataset": plans.get("dataset_name"),
        "plans": plans.get("plans_name"),
        "configuration": name,
        "trainer": ckpt.trainer,
        "checkpoint": f"{path.parent.name}/{path.name}",
        "input_layer": first.layer,
        "checkpoint_unused": ckpt.unused,
        "checkpoint_refused": ckpt.refused,
        "notes": notes,
    }
    try:
        return ModelCard(
            architecture="nnunet",
            kwargs={"network_class": arch["network_class_name"], "arch_kwargs": arch["arch_kwargs"],
                    "requires_import": list(arch.get("_kw_requires_import", [])),
                    "input_scale": first.scale, "input_shift": first.shift, "axes": axes},
            in_channels=len(channels),
            channel_names=channels,
            out_channels=len(class_names),
            class_names=class_names,
            roi_size=roi,
            intensity=first.intensity,
            spacing=spacing,
            orientation=orientation,
            provenance={k: v for k, v in provenance.items() if v not in (None, [], {})},
            inference=inference,
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ValueError(f"{plans_path}: {err}") from None


def nnunet_inference(ckpt: NnunetCheckpoint, axes: list[int], first: FirstLayer) -> Inference:
    """What ``nnUNetPredictor`` does by default with this checkpoint, in our axis order.

    Args:
        ckpt: the checkpoint (its trainer's ``mirror_axes`` are network axes).
        axes: ``axes[n]`` is our axis of network axis ``n``.
        first: the first layer ([0, 1] → nnU-Net's units), so that padding with nnU-Net's 0
            is ``−shift/scale`` in ours (each channel its own).
    """
    allowed = () if ckpt.mirror_axes is None else tuple(sorted(axes[n] for n in ckpt.mirror_axes))
    return Inference(
        overlap=1.0 - TILE_STEP,
        mode="gaussian",
        sigma_scale=SIGMA_SCALE,
        padding_mode="constant",
        cval=first.padding[0] if len(first.padding) == 1 else tuple(first.padding),
        sw_batch_size=1,
        mirror_axes=allowed,
        windows="nnunet",
        allowed_mirror_axes=allowed,
    )


def _configuration_name(folder: Path, ckpt: NnunetCheckpoint, path: Path) -> str:
    parts = folder.resolve().name.split("__")
    from_folder = parts[2] if len(parts) == 3 else None
    if ckpt.configuration and from_folder and ckpt.configuration != from_folder:
        raise ValueError(
            f"checkpoint {path} was trained as configuration {ckpt.configuration!r}, but the "
            f"folder {folder.name} names {from_folder!r}"
        )
    name = ckpt.configuration or from_folder
    if name is None:
        raise ValueError(
            f"checkpoint {path} does not name its configuration, nor does the folder name "
            "(Trainer__Plans__configuration)"
        )
    return name


def _configuration(plans: Any, name: str, plans_path: Path) -> dict[str, Any]:
    configs = plans.get("configurations") if isinstance(plans, Mapping) else None
    if not isinstance(configs, Mapping):
        raise ValueError(f"{plans_path}: no 'configurations'")
    seen: list[str] = []
    merged: dict[str, Any] = {}
    while name is not None:
        if name in seen:
            raise ValueError(f"{plans_path}: circular inherits_from {' → '.join([*seen, name])}")
        if name not in configs:
            raise ValueError(f"{plans_path}: no configuration {name!r} (has: {', '.join(configs)})")
        seen.append(name)
        merged = {**copy.deepcopy(configs[name]), **merged}
        name = configs[name].get("inherits_from")
    merged.pop("inherits_from", None)
    return merged


def _compare_plans(
    stored: Mapping[str, Any], config: dict[str, Any], name: str, path: Path, plans_path: Path
) -> None:
    try:
        theirs = _configuration(stored, name, path)
    except ValueError:
        raise ValueError(
            f"checkpoint {path} was trained with plans that have no configuration {name!r}, "
            f"unlike {plans_path}"
        ) from None
    for key in ("architecture", "patch_size", "spacing", "normalization_schemes"):
        a = _architecture(theirs, path) if key == "architecture" else theirs.get(key)
        b = _architecture(config, plans_path) if key == "architecture" else config.get(key)
        if a != b:
            raise ValueError(
                f"checkpoint {path} and {plans_path} disagree on the configuration's {key} "
                f"({short_text(a, 80)} vs {short_text(b, 80)})"
            )


def _check_supported(
    config: dict[str, Any], dataset: Any, name: str, plans_path: Path, dataset_path: Path
) -> None:
    if len(config.get("patch_size", [])) != 3:
        raise ValueError(f"{plans_path}: configuration {name!r} is not 3D; vafa attacks volumes "
                         "(use a 3d_fullres or 3d_lowres model)")  # fmt: skip
    if config.get("previous_stage"):
        raise ValueError(f"{plans_path}: configuration {name!r} is a cascade stage (it needs "
                         "the previous stage's segmentation); use a single-stage model")  # fmt: skip
    if not isinstance(dataset, Mapping):
        raise ValueError(f"{dataset_path}: must be a JSON object")
    labels = dataset.get("labels")
    if dataset.get("regions_class_order") or (
        isinstance(labels, Mapping) and any(isinstance(v, (list, tuple)) for v in labels.values())
    ):
        raise ValueError(f"{dataset_path}: region-based models (overlapping sigmoid outputs) are "
                         "not supported")  # fmt: skip


def _architecture(config: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """The configuration's ``architecture``, converting pre-2.4 plans as nnU-Net does."""
    if "architecture" in config:
        arch = config["architecture"]
        if not isinstance(arch, Mapping) or not {"network_class_name", "arch_kwargs"} <= set(arch):
            raise ValueError(f"{where}: 'architecture' needs network_class_name and arch_kwargs")
        return dict(arch)
    try:
        kind = config["UNet_class_name"]
        classes = {
            "PlainConvUNet": ("unet.PlainConvUNet", "n_conv_per_stage"),
            "ResidualEncoderUNet": ("residual_unet.ResidualEncoderUNet", "n_blocks_per_stage"),
        }
        if kind not in classes:
            raise ValueError(f"{where}: unknown UNet_class_name {kind!r}")
        module, blocks = classes[kind]
        n = len(config["n_conv_per_stage_encoder"])
        base, top = config["UNet_base_num_features"], config["unet_max_num_features"]
        dim = len(config["patch_size"])
        arch_kwargs = {
            "n_stages": n,
            "features_per_stage": [min(base * 2**i, top) for i in range(n)],
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"],
            blocks: config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        }
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: the configuration has no 'architecture' ({err!r})") from None
    return {
        "network_class_name": f"dynamic_network_architectures.architectures.{module}",
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _class_names(dataset: Mapping[str, Any], dataset_path: Path) -> list[str]:
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{dataset_path}: 'labels' must map class names to values")
    pairs = sorted((v, str(k)) for k, v in labels.items() if k != "ignore")
    values = [v for v, _ in pairs]
    if values != list(range(len(values))):
        raise ValueError(f"{dataset_path}: label values must be 0, 1, … without gaps, got {values}")
    return [name for _, name in pairs]


def _orientation(plans: Mapping[str, Any], plans_path: Path) -> tuple[str | None, list[str]]:
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in _READERS:
        raise ValueError(f"{plans_path}: image reader {reader!r} is not supported (3D NIfTI "
                         f"readers only: {', '.join(_READERS)})")  # fmt: skip
    orientation, notes = _READERS[reader], []
    if orientation is None and "totalsegmentator" in str(plans.get("dataset_name", "")).lower():
        orientation = "RAS"
        notes.append("TotalSegmentator reorients every image to RAS before nnU-Net; so does vafa")
    return orientation, notes
