"""nnU-Net v2 result folders as vafa models: network, card and intensity mapping from the plans.

A result folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``; also what
TotalSegmentator downloads) holds ``dataset.json``, ``plans.json`` and ``fold_k/`` folders with
``checkpoint_final.pth`` (and ``checkpoint_best.pth``). :func:`load_nnunet` builds what
nnU-Net's predictor builds for one fold (deep supervision off) and the model card:

- network: the configuration's ``architecture`` (``dynamic_network_architectures``; the
  pre-2.4 plans keys ``UNet_class_name``… are converted as nnU-Net converts them);
- axes: nnU-Net reads images as ``(z, y, x)`` (SimpleITK's order, also for its nibabel
  readers) and applies ``transpose_forward``; the network gets our ``(i, j, k)`` tensor in that
  order and its logits come back in ours;
- spacing and patch size (roi) from the configuration, in our axis order; orientation: as is
  (``SimpleITKIO``, ``NibabelIO``) or ``RAS`` (the ``…WithReorient`` readers, and
  TotalSegmentator's models, whose tool reorients every image to RAS first);
- classes and names from ``dataset.json``'s ``labels`` (without ``ignore``);
- intensities, single-channel models, by the channel's normalisation scheme:

  =========================  ===================================  ============================
  nnU-Net scheme             [0, 1] window (card)                  first layer
  =========================  ===================================  ============================
  ``CTNormalization``        ``ct_window(percentile_00_5, _99_5)``  ``(lo + x·(hi − lo) − mean) / std``
  ``ZScoreNormalization``    ``zscore(k=5, nonzero=use_mask)``      ``(2x − 1)·5``
  ``RescaleTo01Normalization`` ``percentile(0, 100)``               ``x``
  ``RGBTo01Normalization``   ``ct_window(0, 255)``                  ``x``
  ``NoNormalization``        ``ct_window(min, max)`` (foreground)   ``min + x·(max − min)``
  =========================  ===================================  ============================

  ``CTNormalization`` (clip to the dataset's foreground percentiles, then z-score with the
  dataset's foreground mean and std) is reproduced exactly.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing outside torch's
weights-only allowlist is imported or run. The other globals a checkpoint names (nnU-Net logs
numpy scalars) become inert placeholders, are listed in the card's provenance
(``checkpoint_refused``) and are never used; only ``network_weights`` (tensors) and the strings
``trainer_name`` and ``init_args.configuration`` are read, and the plans stored in the
checkpoint are compared with ``plans.json``.

Not supported (one-line error): 2D configurations, cascades, region-based training, models
with several input channels, ensembles of folds (choose one fold), test-time mirroring (off).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vafa.io.files import read_json
from vafa.io.models import ModelCard, build_model
from vafa.io.state_dicts import load_state_strict

__all__ = [
    "CHECKPOINTS",
    "NnunetCheckpoint",
    "is_nnunet_folder",
    "load_nnunet",
    "nnunet_card",
    "read_nnunet_checkpoint",
]

#: ``checkpoint=`` values and their files.
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
#: Half-width (standard deviations) of the [0, 1] window of a z-score model.
ZSCORE_K = 5.0
_READERS = {  # plans' image_reader_writer → orientation the images had in training
    "SimpleITKIO": None,
    "NibabelIO": None,
    "SimpleITKIOWithReorient": "RAS",
    "NibabelIOWithReorient": "RAS",
}
_EPS = 1e-8  # nnU-Net's guard against a zero standard deviation


@dataclass
class NnunetCheckpoint:
    """What vafa reads from an nnU-Net checkpoint (see the module docs).

    Attributes:
        weights: ``network_weights``, name → CPU tensor.
        configuration: ``init_args["configuration"]`` or None.
        trainer: ``trainer_name`` or None.
        plans: ``init_args["plans"]`` (a dict) or None.
        refused: global name → how many objects of it were replaced by placeholders.
        unused: the top-level entries vafa does not use (optimizer state, logs, …).
    """

    weights: dict[str, torch.Tensor]
    configuration: str | None = None
    trainer: str | None = None
    plans: dict[str, Any] | None = None
    refused: dict[str, int] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)


def is_nnunet_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like an nnU-Net v2 result folder (dataset.json + plans.json)."""
    folder = Path(folder)
    return (folder / "dataset.json").is_file() and (folder / "plans.json").is_file()


def load_nnunet(
    folder: str | os.PathLike,
    *,
    fold: int | str | None = None,
    checkpoint: str | None = None,
    device: str | torch.device = "auto",
) -> tuple[nn.Module, ModelCard]:
    """One fold of an nnU-Net v2 result folder as a vafa model, and its card.

    Args:
        folder: the result folder (``dataset.json``, ``plans.json``, ``fold_k/``).
        fold: ``0``, ``1``, … or ``"all"``; default: fold 0, else the only fold present.
        checkpoint: ``"final"`` (default, ``checkpoint_final.pth``) or ``"best"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Returns:
        ``(model, card)``: a :class:`~vafa.io.wrapped.NormalizedInput` in eval mode on the
        device (``[B, 1, H, W, D]`` in [0, 1] → logits ``[B, K, H, W, D]``, what nnU-Net's
        predictor computes for one window without mirroring), and its card (architecture
        ``"nnunet"``).

    Raises:
        ValueError: not a result folder, a missing fold or checkpoint, an unreadable file,
            plans and checkpoint that disagree, an unsupported model — one line naming the file.
    """
    from vafa.ops.devices import resolve_device

    folder = Path(folder)
    path = _checkpoint_path(folder, fold, checkpoint)
    ckpt = read_nnunet_checkpoint(path)
    card = nnunet_card(folder, ckpt, path)
    dev = resolve_device(device)
    try:
        model = build_model(card)
    except ValueError as err:
        raise ValueError(f"{folder / 'plans.json'}: the network cannot be built: "
                         f"{err.__cause__ or err}") from None  # fmt: skip
    state = {f"network.{k}": v for k, v in ckpt.weights.items()}
    try:
        load_state_strict(model, state, card, f"checkpoint {path}")
    except ValueError as err:
        raise ValueError(f"plans.json/dataset.json and the checkpoint disagree: {err}") from None
    return model.to(dev).eval(), card


def nnunet_card(folder: str | os.PathLike, ckpt: NnunetCheckpoint, path: Path) -> ModelCard:
    """The card of a result folder for the checkpoint ``ckpt`` read from ``path``.

    Raises:
        ValueError: see :func:`load_nnunet`.
    """
    folder = Path(folder)
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = read_json(plans_path, "nnU-Net plans"), read_json(dataset_path, "dataset")
    name = _configuration_name(folder, ckpt, path)
    config = _configuration(plans, name, plans_path)
    _check_supported(config, dataset, name, plans_path, dataset_path)
    if ckpt.plans is not None:
        _compare_plans(ckpt.plans, config, name, path, plans_path)
    arch = _architecture(config, plans_path)
    class_names = _class_names(dataset, dataset_path)
    axes = [2 - int(t) for t in plans.get("transpose_forward", [0, 1, 2])]
    spacing, roi = [0.0] * 3, [0] * 3
    for n, axis in enumerate(axes):
        spacing[axis], roi[axis] = float(config["spacing"][n]), int(config["patch_size"][n])
    intensity, scale, shift, layer = _normalisation(plans, config, plans_path)
    orientation, notes = _orientation(plans, plans_path)
    provenance = {
        "source": "nnU-Net v2 result folder",
        "folder": folder.resolve().name,
        "dataset": plans.get("dataset_name"),
        "plans": plans.get("plans_name"),
        "configuration": name,
        "trainer": ckpt.trainer,
        "checkpoint": f"{path.parent.name}/{path.name}",
        "input_layer": layer,
        "checkpoint_unused": ckpt.unused,
        "checkpoint_refused": ckpt.refused,
        "notes": notes,
    }
    try:
        return ModelCard(
            architecture="nnunet",
            kwargs={"network_class": arch["network_class_name"], "arch_kwargs": arch["arch_kwargs"],
                    "requires_import": list(arch.get("_kw_requires_import", [])),
                    "input_scale": scale, "input_shift": shift, "axes": axes},
            in_channels=1,
            out_channels=len(class_names),
            class_names=class_names,
            roi_size=roi,
            intensity=intensity,
            spacing=spacing,
            orientation=orientation,
            provenance={k: v for k, v in provenance.items() if v not in (None, [], {})},
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ValueError(f"{plans_path}: {err}") from None


def read_nnunet_checkpoint(path: str | os.PathLike) -> NnunetCheckpoint:
    """Read an nnU-Net checkpoint without unpickling anything beyond torch's allowlist.

    Globals outside ``torch.load(weights_only=True)``'s allowlist are replaced by inert
    placeholders (nothing is imported or called) and counted in ``refused``.

    Raises:
        ValueError: unreadable file, or ``network_weights`` missing or not all tensors.
    """
    path = Path(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        placeholders = [(_placeholder(name), name) for name in names]
        with torch.serialization.safe_globals(placeholders):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: pickle, zip and torch errors
        blocked = re.search(r"GLOBAL (\S+) whose module \S+ is blocked", str(err))
        if blocked:  # os, sys, subprocess…: torch refuses them even as placeholders
            raise ValueError(
                f"checkpoint {path} names {blocked[1]}, which could run code; refused (nothing "
                "of the file was executed)"
            ) from None
        raise ValueError(
            f"checkpoint {path} is not a readable PyTorch file: {_short(err)}"
        ) from None
    if not isinstance(obj, Mapping) or "network_weights" not in obj:
        keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"checkpoint {path} has no 'network_weights' (nnU-Net format), got {keys}")
    weights = obj["network_weights"]
    if not isinstance(weights, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise ValueError(f"checkpoint {path}: 'network_weights' must map names to tensors")
    init = obj.get("init_args") if isinstance(obj.get("init_args"), Mapping) else {}
    configuration = init.get("configuration")
    plans = init.get("plans")
    trainer = obj.get("trainer_name")
    refused: dict[str, int] = {}
    _count_placeholders(obj, refused)
    used = {"network_weights", "init_args", "trainer_name"}
    return NnunetCheckpoint(
        weights={k.removeprefix("module."): v for k, v in weights.items()},
        configuration=configuration if isinstance(configuration, str) else None,
        trainer=trainer if isinstance(trainer, str) else None,
        plans=plans if isinstance(plans, Mapping) else None,
        refused=refused,
        unused=sorted(str(k) for k in obj if k not in used),
    )


# --------------------------------------------------------------------------- placeholders


class _Refused:
    """An object of a global that was not allowed: its arguments are kept, never used."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Refused:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # a dict subclass being filled
        pass

    def append(self, value: Any) -> None:  # a list subclass being filled
        pass

    def extend(self, values: Any) -> None:
        pass


def _placeholder(name: str) -> type:
    return type("Refused", (_Refused,), {"global_name": name})


def _count_placeholders(obj: Any, counts: dict[str, int], depth: int = 0) -> None:
    if depth > 50:
        return
    if isinstance(obj, _Refused):
        counts[obj.global_name] = counts.get(obj.global_name, 0) + 1
    elif isinstance(obj, Mapping):
        for value in obj.values():
            _count_placeholders(value, counts, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _count_placeholders(value, counts, depth + 1)


# ----------------------------------------------------------------------------- the folder


def _checkpoint_path(folder: Path, fold: int | str | None, checkpoint: str | None) -> Path:
    if not is_nnunet_folder(folder):
        raise ValueError(f"{folder}: not an nnU-Net result folder (no dataset.json and plans.json)")
    checkpoint = "final" if checkpoint is None else checkpoint
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {checkpoint!r}")
    folds = sorted(
        (p.name.removeprefix("fold_") for p in folder.glob("fold_*") if p.is_dir()),
        key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f),
    )
    if fold is None:
        if not folds:
            raise ValueError(f"{folder}: no fold_* folder (nothing trained here)")
        fold = "0" if "0" in folds or len(folds) > 1 else folds[0]
    fold = str(fold).strip()
    if not re.fullmatch(r"\d+|all", fold):
        raise ValueError(f"fold must be a whole number or 'all', got {fold!r}")
    fold_dir = folder / f"fold_{fold}"
    if not fold_dir.is_dir():
        there = ", ".join(folds) or "none"
        raise ValueError(f"{fold_dir}: no such fold (folds here: {there})")
    path = fold_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        there = ", ".join(sorted(p.name for p in fold_dir.glob("checkpoint_*.pth"))) or "none"
        raise ValueError(f"{path}: no such checkpoint (in {fold_dir.name}: {there})")
    return path


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
                f"({_short(a, 80)} vs {_short(b, 80)})"
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
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, Mapping) or len(channels) != 1:
        raise ValueError(f"{dataset_path}: vafa attacks single-channel models, this one takes "
                         f"{len(channels) if isinstance(channels, Mapping) else '?'} channels "
                         f"({channels})")  # fmt: skip
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


def _normalisation(
    plans: Mapping[str, Any], config: Mapping[str, Any], plans_path: Path
) -> tuple[dict[str, Any], float, float, str]:
    """Card intensity mapping, first-layer scale/shift and a description of that layer."""
    try:
        scheme = config["normalization_schemes"][0]
        use_mask = bool((config.get("use_mask_for_norm") or [False])[0])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{plans_path}: the configuration has no normalization_schemes") from None
    props = plans.get("foreground_intensity_properties_per_channel",
                      plans.get("foreground_intensity_properties_by_modality", {}))  # fmt: skip
    props = props.get("0", {}) if isinstance(props, Mapping) else {}

    def prop(key: str) -> float:
        value = props.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{plans_path}: {scheme} needs foreground_intensity_properties "
                             f"'{key}' of channel 0, got {value!r}")  # fmt: skip
        return float(value)

    if scheme == "CTNormalization":
        lo, hi, mean = prop("percentile_00_5"), prop("percentile_99_5"), prop("mean")
        std = max(prop("std"), _EPS)
        if not lo < hi:
            raise ValueError(f"{plans_path}: CT percentiles must differ, got {lo} and {hi}")
        layer = f"(({lo:g} + x·{hi - lo:g}) − {mean:g}) / {std:g}: clip, then z-score"
        window = {"type": "ct_window", "a_min": lo, "a_max": hi}
        return window, (hi - lo) / std, (lo - mean) / std, layer
    if scheme == "ZScoreNormalization":
        window = {"type": "zscore", "k": ZSCORE_K, "nonzero": use_mask}
        return window, 2 * ZSCORE_K, -ZSCORE_K, f"(2x − 1)·{ZSCORE_K:g}: the z-score"
    if scheme == "RescaleTo01Normalization":
        return {"type": "percentile", "p_low": 0.0, "p_high": 100.0}, 1.0, 0.0, "x"
    if scheme == "RGBTo01Normalization":
        return {"type": "ct_window", "a_min": 0.0, "a_max": 255.0}, 1.0, 0.0, "x"
    if scheme == "NoNormalization":
        lo, hi = prop("min"), prop("max")
        if not lo < hi:
            raise ValueError(f"{plans_path}: foreground min and max must differ, got {lo}, {hi}")
        layer = f"{lo:g} + x·{hi - lo:g}: the raw intensities"
        return {"type": "ct_window", "a_min": lo, "a_max": hi}, hi - lo, lo, layer
    raise ValueError(f"{plans_path}: normalisation scheme {scheme!r} is not supported")


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


def _short(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
