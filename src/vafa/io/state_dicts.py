"""Reading weights files safely and loading them strictly into a network.

Weights are read from ``.safetensors`` (preferred) or from PyTorch files (``.pt``, ``.pth``,
``.ckpt``, ``.bin``) with ``torch.load(weights_only=True)``: a file that holds pickled Python
objects is refused unless the caller says ``trust=True``. Keys are matched strictly: every
missing, unexpected or mis-shaped key is an error, except the handful of keys by which
checkpoints of the VAFA paper's code (a MONAI-0.7-era UNETR) differ from MONAI 1.6's UNETR,
all of which belong to modules that the forward pass does not use:

- unexpected ``vit.patch_embedding.cls_token`` (no class token without ``classification``),
- unexpected ``encoder2.blocks.{0,1}.1.conv3.conv.weight`` and
  ``encoder3.blocks.0.1.conv3.conv.weight`` (old MONAI built a 1×1×1 shortcut convolution in
  every residual block; it was only applied when the channel count or stride changed, which is
  not the case in those blocks, and MONAI 1.6 no longer creates it),
- missing ``vit.blocks.{0..11}.norm_cross_attn.{weight,bias}`` (MONAI 1.6 creates this
  LayerNorm in every transformer block but applies it only with cross-attention, which UNETR
  does not use; it keeps its default initialisation).

When these are tolerated a :class:`LegacyCheckpointWarning` reports them once per load.
:mod:`vafa.io.checkpoints` (cards, :func:`~vafa.io.checkpoints.load_model`) builds on this.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vafa.io.models import ModelCard

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "LegacyCheckpointWarning",
    "compare_state_dicts",
    "existing_checkpoint",
    "load_state_strict",
    "mismatch_error",
    "read_state_dict",
]

#: File suffixes :func:`read_state_dict` understands.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


class LegacyCheckpointWarning(UserWarning):
    """A checkpoint of the paper's (MONAI 0.7) UNETR was loaded, tolerating unused keys."""


def read_state_dict(path: str | os.PathLike, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read the state dict of a weights file onto the CPU, without ``module.`` prefixes.

    Args:
        path: a file ending in one of :data:`CHECKPOINT_SUFFIXES`.
        trust: allow unpickling arbitrary objects from a PyTorch file (see :func:`load_model`);
            a pickled ``nn.Module`` then yields its state dict.

    Returns:
        Parameter/buffer name → CPU tensor.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown suffix, unreadable file, pickled objects without ``trust``, or no
            state dict inside.
    """
    path = existing_checkpoint(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(
                f"checkpoint {path} is not a readable safetensors file: {err}"
            ) from err
    else:
        state = _state_dict_from(_read_torch_file(path, trust), path)
    return _strip_module_prefix(state, path)


# ---------------------------------------------------------------------------------- helpers

_MODULE_PREFIX = "module."
_LIST_LIMIT = 10


def existing_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` as a Path, checked: a known suffix and an existing file."""
    path = Path(path)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"checkpoint must end with one of {list(CHECKPOINT_SUFFIXES)}, got {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def _read_torch_file(path: Path, trust: bool) -> object:
    try:
        if not trust:
            return torch.load(path, map_location="cpu", weights_only=True)
        # trust=True / --trust-checkpoint: still the restricted unpickler, but it may also
        # rebuild classes of torch and MONAI (a whole model saved with torch.save(model))
        with torch.serialization.safe_globals(_trusted_globals(path)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust and "unsupported global" in str(err).lower():
            raise ValueError(
                f"checkpoint {path} contains pickled Python objects (for example a whole model "
                "saved with torch.save(model)), not only tensors, and loading it can execute "
                "arbitrary code. If you trust this file, load it with trust=True (CLI: "
                "--trust-checkpoint); then re-save it as .safetensors with save_model"
            ) from None
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise ValueError(f"checkpoint {path} is not a readable PyTorch file: {reason}") from err
    except (RuntimeError, KeyError, EOFError, ValueError, AttributeError, ImportError) as err:
        raise ValueError(f"checkpoint {path} is not a readable PyTorch file: {err!r}") from err


#: Packages whose classes a trusted checkpoint may rebuild (nothing else is ever imported).
TRUSTED_PACKAGES = ("torch", "monai", "collections", "builtins")


def _trusted_globals(path: Path) -> list[object]:
    """The classes and functions ``path`` needs, if all come from :data:`TRUSTED_PACKAGES`.

    Raises:
        ValueError: the file names anything else (listed); nothing of it is imported.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    foreign = sorted(n for n in names if n.split(".")[0] not in TRUSTED_PACKAGES)
    if foreign:
        raise ValueError(
            f"checkpoint {path} would run code outside {', '.join(TRUSTED_PACKAGES)} when "
            f"loaded ({', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}); it is "
            "refused even with trust: load it in its own project and save the state dict"
        )
    found = []
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError) as err:
            raise ValueError(f"checkpoint {path} needs {name}, which is not available") from err
    return found


def _state_dict_from(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):  # only reachable with trust=True
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {path} must hold a state dict or a dict with 'model_state_dict', "
            f"'state_dict' or 'model', got {type(obj).__name__}"
        )
    for key in ("model_state_dict", "state_dict", "model"):
        if key in obj and not isinstance(obj[key], torch.Tensor):
            inner = obj[key]
            inner = inner.state_dict() if isinstance(inner, nn.Module) else inner
            return _tensor_dict(inner, path, f"[{key!r}]")
    return _tensor_dict(obj, path, "")


def _tensor_dict(obj: object, path: Path, where: str) -> dict[str, torch.Tensor]:
    rule = (
        "a state dict (names → tensors), {'model_state_dict': ...}, {'state_dict': ...} or "
        "{'model': ...}"
    )
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path}{where} must be {rule}, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ValueError(
            f"checkpoint {path}{where} must be {rule}; entries that are not name → tensor: "
            f"{_fmt_list([repr(k) for k in bad])} "
            f"(top-level keys: {_fmt_list([repr(k) for k in obj])})"
        )
    return dict(obj)


def _strip_module_prefix(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key
        while name.startswith(_MODULE_PREFIX):
            name = name[len(_MODULE_PREFIX) :]
        if name in out:
            raise ValueError(f"checkpoint {path} holds {name!r} twice (with and without 'module.')")
        out[name] = value
    return out


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and mis-shaped keys of ``got`` against ``expected`` (in its order)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [k for k in expected if k in got and got[k].shape != expected[k].shape]
    return missing, unexpected, misshaped


def load_state_strict(
    model: nn.Module, state: dict[str, torch.Tensor], card: ModelCard, what: str
) -> None:
    """Load ``state`` into ``model``: every key present, none extra, every shape equal (the
    paper's UNETR checkpoints excepted, see the module docs).

    Args:
        what: the source, named in the error (e.g. ``"checkpoint model.pt"``).

    Raises:
        ValueError: the keys do not match (listed, with shapes, and a hint when the number of
            classes differs).
    """
    expected = model.state_dict()
    missing, unexpected, misshaped = compare_state_dicts(expected, state)
    tol_missing, tol_unexpected = _legacy_unetr_keys(model, missing, unexpected, state)
    missing = [k for k in missing if k not in tol_missing]
    unexpected = [k for k in unexpected if k not in tol_unexpected]
    if missing or unexpected or misshaped:
        raise mismatch_error(what, card, expected, state, missing, unexpected, misshaped)
    full = {k: v for k, v in state.items() if k not in tol_unexpected}
    full.update({k: expected[k] for k in tol_missing})
    model.load_state_dict(full, strict=True)
    if tol_missing or tol_unexpected:
        tol_summary = [re.sub(r"blocks\.\d+\.", "blocks.*.", k) for k in tol_missing]
        warnings.warn(
            f"{what} was saved by an older MONAI UNETR (the VAFA paper's code): ignored "
            f"{len(tol_unexpected)} unused key(s) ({_fmt_list(tol_unexpected)}) and kept the "
            f"default initialisation of {len(tol_missing)} missing key(s) that the forward pass "
            f"does not use ({_fmt_list(sorted(set(tol_summary)))}); outputs are unaffected",
            LegacyCheckpointWarning,
            stacklevel=3,
        )


def _legacy_unetr_keys(
    model: nn.Module, missing: list[str], unexpected: list[str], state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """The missing/unexpected keys explained by a MONAI-0.7-era UNETR checkpoint (module docs)."""
    from monai.networks.nets import UNETR

    if not isinstance(model, UNETR):
        return [], []
    tol_unexpected = []
    for key in unexpected:
        shape = tuple(state[key].shape)
        if key == "vit.patch_embedding.cls_token":
            hidden = model.vit.norm.normalized_shape[0]
            if not getattr(model.vit, "classification", False) and shape == (1, 1, hidden):
                tol_unexpected.append(key)
            continue
        match = re.fullmatch(r"(encoder[23]\.blocks\.\d+\.1)\.conv3\.conv\.weight", key)
        block = _submodule(model, match[1]) if match else None
        if block is not None and not hasattr(block, "conv3") and hasattr(block, "conv1"):
            channels = block.conv1.conv.out_channels
            if shape == (channels, channels, 1, 1, 1):
                tol_unexpected.append(key)
    tol_missing = []
    for key in missing:
        match = re.fullmatch(r"(vit\.blocks\.\d+)\.norm_cross_attn\.(weight|bias)", key)
        block = _submodule(model, match[1]) if match else None
        if block is not None and getattr(block, "with_cross_attention", True) is False:
            tol_missing.append(key)
    return tol_missing, tol_unexpected


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def mismatch_error(
    what: str,
    card: ModelCard,
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    misshaped: list[str],
) -> ValueError:
    """The error that lists the missing, unexpected and mis-shaped keys of ``got`` (one line)."""
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_fmt_list(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_list(unexpected)}")
    if misshaped:
        shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}" for k in misshaped]
        parts.append(f"mis-shaped keys ({len(misshaped)}, found vs expected): {_fmt_list(shapes)}")
    last = next(reversed(expected), None)
    if last in misshaped and got[last].ndim >= 1 and expected[last].shape[0] == card.out_channels:
        parts.append(
            f"hint: the {what.split()[0]} has {got[last].shape[0]} output classes, card says "
            f"{card.out_channels}"
            " (fix out_channels and class_names in the card)"
        )
    return ValueError(
        f"{what} does not match the card's network ({card.architecture}, "
        f"{card.out_channels} output classes): " + "; ".join(parts)
    )


def _fmt_list(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f"{shown} and {more} more" if more > 0 else shown
