"""Safe reading and writing of model weights and model cards.

Weights are read from ``.safetensors`` (preferred) or from PyTorch files (``.pt``, ``.pth``,
``.ckpt``, ``.bin``) with ``torch.load(weights_only=True)``: a file that holds pickled Python
objects is refused unless the caller says ``trust=True``. Keys are matched strictly, except the
few unused keys of checkpoints of the VAFA paper's code (a MONAI-0.7-era UNETR), which a
:class:`vafa.io.state_dicts.LegacyCheckpointWarning` reports: see :mod:`vafa.io.state_dicts`
(reading and strict loading).

Model folders: :func:`load_model` also takes a MONAI bundle folder (:mod:`vafa.io.bundles`) or
an nnU-Net v2 result folder (:mod:`vafa.io.nnunet`); those describe their network, card and
intensity mapping themselves (:mod:`vafa.io.model_folders`).

Card file convention: the card of ``model.safetensors`` is ``model.safetensors.json`` (what
:func:`save_model` writes, see :func:`card_path_for`); :func:`load_model` also accepts
``model.json`` when the former does not exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vafa.io.files import atomic_write
from vafa.io.models import ModelCard, build_model, list_presets
from vafa.io.state_dicts import (
    compare_state_dicts,
    existing_checkpoint,
    load_state_strict,
    mismatch_error,
    read_state_dict,
)
from vafa.ops.devices import resolve_device

__all__ = [
    "card_path_for",
    "find_card",
    "load_card",
    "load_card_or_preset",
    "load_model",
    "resolve_card",
    "save_card",
    "save_model",
]


def load_model(
    path: str | os.PathLike,
    card: ModelCard | str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    trust: bool = False,
    *,
    fold: int | str | None = None,
    checkpoint: str | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Build the network a card describes and load a weights file into it, strictly.

    Args:
        path: weights file, one of :data:`vafa.io.state_dicts.CHECKPOINT_SUFFIXES`. PyTorch
            files may hold ``{"model_state_dict": ...}``, ``{"state_dict": ...}``,
            ``{"model": ...}`` or a bare state dict; ``module.`` prefixes (DataParallel/DDP) are
            removed. Or a model folder:
            a MONAI bundle or an nnU-Net v2 result folder (:mod:`vafa.io.model_folders`), which
            brings its own card.
        card: a :class:`ModelCard`, a path to a card JSON file, the name of a preset (e.g.
            ``"unetr-btcv"``, :func:`vafa.io.models.list_presets`), or None to use the card beside
            the weights: ``<path>.json`` (e.g. ``model.safetensors.json``), else
            ``<path without suffix>.json`` (e.g. ``model.json``).
        device: ``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a
            :class:`torch.device`.
        trust: allow unpickling arbitrary Python objects from a PyTorch file (e.g. a whole
            module saved with ``torch.save(model)``). Only for files from a trusted source:
            unpickling can execute code. For a MONAI bundle it also lets MONAI evaluate the
            bundle's Python expressions.
        fold: nnU-Net folders only: the fold (``0``…, or ``"all"``); default: fold 0, or the
            only fold there is.
        checkpoint: nnU-Net folders only: ``"final"`` (default) or ``"best"``.

    Returns:
        ``(model, card)``: the model in eval mode on the device, float32, mapping
        ``[B, card.in_channels, H, W, D]`` inputs in [0, 1] to ``[B, card.out_channels, H, W, D]``
        logits; and the card used.

    Warns:
        vafa.io.state_dicts.LegacyCheckpointWarning: a VAFA-paper UNETR checkpoint was loaded
            (see module docs).

    Raises:
        FileNotFoundError: ``path`` (or the card file given) does not exist.
        TypeError: ``card`` has the wrong type.
        ValueError: unknown suffix, unreadable file, pickled objects without ``trust``, no card
            found, an invalid card, or keys that do not match the card's network (listed, with
            shapes, and a hint when the number of classes differs); for a folder: one that is
            neither kind, a missing fold, files that disagree, a network that cannot be built.
    """
    if Path(path).is_dir():
        from vafa.io.model_folders import load_model_folder

        if card is not None:
            raise ValueError(f"a card does not go with the model folder {path} (it has its own)")
        return load_model_folder(path, fold=fold, checkpoint=checkpoint, device=device, trust=trust)
    if fold is not None or checkpoint is not None:
        raise ValueError(f"fold and checkpoint are for nnU-Net result folders, not {path}")
    dev = resolve_device(device)
    path = existing_checkpoint(path)
    card = resolve_card(path, card)
    state = read_state_dict(path, trust=trust)
    model = build_model(card)
    load_state_strict(model, state, card, f"checkpoint {path}")
    return model.to(dev).eval(), card


def save_model(model: nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights as safetensors and ``card`` beside them, both atomically.

    The card goes to :func:`card_path_for` ``(path)`` (``model.safetensors`` →
    ``model.safetensors.json``), which :func:`load_model` finds first. Both files are written to
    temporary files in the same folder and renamed into place only once both are complete, so a
    failure leaves neither a partial file nor a temporary one. Existing files are replaced.

    Args:
        model: the network; its state dict must match the one ``build_model(card)`` creates.
        card: the card describing it.
        path: destination ending in ``.safetensors``.

    Returns:
        The weights path.

    Raises:
        TypeError: ``model`` or ``card`` has the wrong type.
        ValueError: ``path`` does not end in ``.safetensors``, or the model does not match the
            card (keys listed).
        FileNotFoundError: the destination folder does not exist.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"path must end with '.safetensors', got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} of {path} does not exist")
    state = model.state_dict()
    _check_against_card(state, card)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    from safetensors.torch import save_file

    metadata = {"format": "pt", "architecture": card.architecture}
    atomic_write(
        {
            path: lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
            card_path_for(path): lambda tmp: _write_card_json(card, tmp),
        }
    )
    return path


def load_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate a card JSON file (see :class:`vafa.io.models.ModelCard`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid JSON or not a valid card (message names the file).
    """
    from vafa.io.files import read_json

    path = Path(path)
    return ModelCard.from_dict(read_json(path, "model card"), source=path)


def save_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` as indented JSON, atomically (temp file in the same folder, then rename).

    Returns:
        The path written.

    Raises:
        TypeError: ``card`` is not a :class:`ModelCard`.
        FileNotFoundError: the destination folder does not exist.
    """
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    path = Path(path)
    atomic_write({path: lambda tmp: _write_card_json(card, tmp)})
    return path


def card_path_for(weights: str | os.PathLike) -> Path:
    """The card file that belongs to a weights file: ``<weights>.json``."""
    return Path(f"{os.fspath(weights)}.json")


def find_card(weights: str | os.PathLike) -> Path | None:
    """The existing card of a weights file: ``<weights>.json``, else ``<stem>.json``, else None."""
    weights = Path(weights)
    for candidate in (card_path_for(weights), weights.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------- helpers


def resolve_card(path: Path, card: ModelCard | str | os.PathLike | None) -> ModelCard:
    """The card of weights file ``path``: ``card`` itself, a card file or preset name, else
    the card beside the weights (:func:`find_card`).

    Raises:
        ValueError: no card given and none beside the weights (saying where it looked).
        TypeError: ``card`` of another type.
    """
    if isinstance(card, ModelCard):
        return card
    if isinstance(card, (str, os.PathLike)):
        return load_card_or_preset(card)
    if card is not None:
        raise TypeError(
            f"card must be a ModelCard, a card file path or None, got {type(card).__name__}"
        )
    found = find_card(path)
    if found is None:
        raise ValueError(
            f"no model card found for checkpoint {path}: looked for {card_path_for(path)} and "
            f"{path.with_suffix('.json')}. A card says which network to build and how to feed it; "
            "pass one with card=... (CLI: --card CARD.json), e.g. one written by "
            "save_card(ModelCard.from_preset('unetr-btcv'), 'model.safetensors.json')"
        )
    return load_card(found)


def load_card_or_preset(card: str | os.PathLike) -> ModelCard:
    """A card file, or else the name of a preset (``"unetr-btcv"``): a file of that name wins.

    Raises:
        FileNotFoundError: neither a file nor a preset (the presets are listed).
        ValueError: an invalid card file.
    """
    if Path(card).exists() or str(card) not in list_presets():
        try:
            return load_card(card)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err} (nor is {str(card)!r} a preset: {', '.join(list_presets())})"
            ) from None
    return ModelCard.from_preset(str(card))


def _check_against_card(state: Mapping[str, torch.Tensor], card: ModelCard) -> None:
    expected = build_model(card).state_dict()
    missing, unexpected, misshaped = compare_state_dicts(expected, state)
    if missing or unexpected or misshaped:
        raise mismatch_error("model", card, expected, state, missing, unexpected, misshaped)


def _write_card_json(card: ModelCard, path: Path) -> None:
    Path(path).write_text(_dumps(card.to_dict()) + "\n", encoding="utf-8")


def _dumps(value: object, level: int = 0) -> str:
    """JSON with one entry per line, except short lists of plain values (one line each)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    compact = json.dumps(value, allow_nan=False)
    if (
        isinstance(value, list)
        and value
        and (len(compact) > 72 or any(isinstance(v, (dict, list)) for v in value))
    ):
        items = [inner + _dumps(v, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return compact
