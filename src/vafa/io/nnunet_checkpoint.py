"""nnU-Net v2 checkpoints, read without unpickling anything beyond torch's allowlist.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing outside torch's
weights-only allowlist is imported or run. The other globals a checkpoint names (nnU-Net logs
numpy scalars) become inert placeholders, are listed in the card's provenance
(``checkpoint_refused``) and are never used; only ``network_weights`` (tensors) and the strings
``trainer_name`` and ``init_args.configuration``, the trainer's
``inference_allowed_mirroring_axes`` (what nnU-Net's predictor mirrors along) and the plans, which
:func:`vafa.io.nnunet_plans.nnunet_card` compares with ``plans.json``) are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vafa.ops.messages import short_text

__all__ = ["NnunetCheckpoint", "read_nnunet_checkpoint"]


@dataclass
class NnunetCheckpoint:
    """What vafa reads from an nnU-Net checkpoint (see the module docs).

    Attributes:
        weights: ``network_weights``, name → CPU tensor.
        configuration: ``init_args["configuration"]`` or None.
        trainer: ``trainer_name`` or None.
        plans: ``init_args["plans"]`` (a dict) or None.
        mirror_axes: ``inference_allowed_mirroring_axes``: the network axes the trainer allows
            test-time mirroring along (``(0, 1, 2)`` for nnUNetTrainer), None when it allows
            none (the ``NoMirroring`` trainers) or the checkpoint does not say (nnU-Net then
            does not mirror).
        refused: global name → how many objects of it were replaced by placeholders.
        unused: the top-level entries vafa does not use (optimizer state, logs, …).
    """

    weights: dict[str, torch.Tensor]
    configuration: str | None = None
    trainer: str | None = None
    plans: dict[str, Any] | None = None
    mirror_axes: tuple[int, ...] | None = None
    refused: dict[str, int] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)


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
            f"checkpoint {path} is not a readable PyTorch file: {short_text(err, 160)}"
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
    used = {"network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes"}
    return NnunetCheckpoint(
        weights={k.removeprefix("module."): v for k, v in weights.items()},
        configuration=configuration if isinstance(configuration, str) else None,
        trainer=trainer if isinstance(trainer, str) else None,
        plans=plans if isinstance(plans, Mapping) else None,
        mirror_axes=_mirror_axes(obj.get("inference_allowed_mirroring_axes"), path),
        refused=refused,
        unused=sorted(str(k) for k in obj if k not in used),
    )


def _mirror_axes(value: Any, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in value
    )
    if not ok or len(set(value)) != len(value):
        raise ValueError(f"checkpoint {path}: inference_allowed_mirroring_axes must be None or "
                         f"distinct network axes 0, 1, 2, got {short_text(value, 60)}")  # fmt: skip
    return tuple(value)


# ----------------------------------------------------------------------- placeholders
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
