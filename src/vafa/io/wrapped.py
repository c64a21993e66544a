"""Networks described by another framework's files, behind a first layer that takes [0, 1].

Attacks work on [0, 1] images (budgets in the paper's units). A MONAI bundle or an nnU-Net
model may expect other numbers — z-scores, ``[-1, 1]`` — and nnU-Net networks see the axes of
an image in reverse order (SimpleITK's ``(z, y, x)``). :class:`NormalizedInput` makes such a
network a vafa model: ``[B, C, H, W, D]`` in [0, 1] → ``x·scale + shift`` → the network's
axis order → network → logits ``[B, K, H, W, D]`` back in our axis order.

The two builders are the constructors of the model-card architectures ``"monai-bundle"`` and
``"nnunet"`` (:mod:`vafa.io.models`): a card carries the whole network description, so weights
saved with :func:`vafa.io.checkpoints.save_model` (e.g. after VAFT) load again without the
original bundle or result folder. Only allowlisted classes are ever imported: MONAI networks
(``monai.networks.nets``), nnU-Net's ``dynamic_network_architectures.architectures`` and
``torch.nn`` building blocks.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vafa.ops.checks import numbers_per_channel

__all__ = [
    "NetworkEnsemble",
    "NormalizedInput",
    "build_monai_network",
    "build_nnunet_network",
    "monai_network_class",
    "nnunet_roi_check",
]

#: Where nnU-Net network classes may come from.
NNUNET_NETWORK_PACKAGE = "dynamic_network_architectures.architectures."
#: Where the MONAI network classes of a bundle may come from.
MONAI_NETWORK_PACKAGE = "monai.networks.nets"
NNUNET_EXTRA_HINT = "install the nnU-Net extra: pip install 'napari-vafa[nnunet]'"


class NormalizedInput(nn.Module):
    """``network(permute(x·scale + shift))``, permuted back: a network fed from [0, 1].

    Args:
        network: maps ``[B, C, *spatial]`` (its own axis order) to logits ``[B, K, *spatial]``;
            a list/tuple output (deep supervision) uses its first entry.
        scale, shift: the affine map from the [0, 1] input to the network's input units: two
            numbers, or one number per input channel each (``C`` of ``[B, C, H, W, D]``; a
            multi-channel nnU-Net model normalises every channel its own way).
        axes: ``axes[n]`` is the axis of our ``(H, W, D)`` that is the network's spatial axis
            ``n``; ``(2, 1, 0)`` for nnU-Net, ``(0, 1, 2)`` (no permutation) for MONAI.

    The state dict holds the network's under the prefix ``network.``; scale, shift and axes
    are constants of the model card, not weights.
    """

    def __init__(
        self,
        network: nn.Module,
        scale: float | Sequence[float] = 1.0,
        shift: float | Sequence[float] = 0.0,
        axes: Sequence[int] = (0, 1, 2),
    ) -> None:
        super().__init__()
        scale, shift = numbers_per_channel("scale", scale), numbers_per_channel("shift", shift)
        if isinstance(scale, tuple) != isinstance(shift, tuple) or (
            isinstance(scale, tuple) and len(scale) != len(shift)
        ):
            raise ValueError(f"scale and shift must both be numbers or both one number per "
                             f"channel, got {scale!r} and {shift!r}")  # fmt: skip
        scales = scale if isinstance(scale, tuple) else (scale,)
        if 0 in scales:
            where = f" (channel {scales.index(0)})" if isinstance(scale, tuple) else ""
            raise ValueError(f"scale must not be 0{where}: the first layer would erase the input")
        axes = tuple(axes)
        if sorted(axes) != [0, 1, 2] or not all(isinstance(a, int) for a in axes):
            raise ValueError(f"axes must be a permutation of (0, 1, 2), got {axes!r}")
        self.network = network
        self.scale = scale
        self.shift = shift
        self.axes = axes
        self.inverse_axes = tuple(axes.index(i) for i in range(3))
        if isinstance(scale, tuple):  # per channel: made once, moved with the model
            view = (1, -1, 1, 1, 1)
            self.register_buffer("_scales", torch.tensor(scale).view(view), persistent=False)
            self.register_buffer("_shifts", torch.tensor(shift).view(view), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, tuple):
            if x.shape[1] != len(self.scale):
                raise ValueError(f"the first layer maps {len(self.scale)} channels, the input "
                                 f"has {x.shape[1]} (shape {list(x.shape)})")  # fmt: skip
            x = x * self._scales.to(x) + self._shifts.to(x)
        elif self.scale != 1.0 or self.shift != 0.0:
            x = x * self.scale + self.shift
        if self.axes != (0, 1, 2):
            x = x.permute(0, 1, *(2 + a for a in self.axes))
        out = self.network(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.axes != (0, 1, 2):
            out = out.permute(0, 1, *(2 + a for a in self.inverse_axes))
        return out

    def members(self) -> list[NormalizedInput]:
        """One model per network of a :class:`NetworkEnsemble` (sharing its modules, with this
        first layer), else ``[self]``: for predictors that combine whole predictions, as
        nnU-Net combines its folds'."""
        if not isinstance(self.network, NetworkEnsemble):
            return [self]
        members = [
            NormalizedInput(m, self.scale, self.shift, self.axes) for m in self.network.members
        ]
        if isinstance(self.scale, tuple):  # this model's buffers: already on its device
            for member in members:
                member._scales, member._shifts = self._scales, self._shifts
        return members

    def extra_repr(self) -> str:
        return f"scale={_numbers(self.scale)}, shift={_numbers(self.shift)}, axes={self.axes}"


class NetworkEnsemble(nn.Module):
    """Several networks of one architecture as one: the mean of their logits.

    nnU-Net's fold ensemble: ``nnUNetPredictor`` adds the folds' sliding-window logits and
    divides by their number (probabilities come after, from the mean logits). The sliding
    window is linear in the window logits, so averaging per window is the same prediction.

    Args:
        members: the networks, each ``[B, C, *spatial]`` → ``[B, K, *spatial]`` (a list/tuple
            output uses its first entry). State dict: ``members.<i>.<name>``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            out = member(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            total = out if total is None else total + out
        return total / len(self.members)


# ------------------------------------------------------------------------------ MONAI


def monai_network_class(target: str) -> type[nn.Module]:
    """The MONAI network class a bundle's ``_target_`` names (``"UNet"`` or a dotted path).

    Raises:
        ValueError: not a class of :data:`MONAI_NETWORK_PACKAGE` (nothing else is imported).
    """
    if not isinstance(target, str) or not target:
        raise ValueError(f"_target_ must name a MONAI network class, got {target!r}")
    if "." not in target:
        module_name, name = MONAI_NETWORK_PACKAGE, target
    elif target.startswith(MONAI_NETWORK_PACKAGE + "."):
        module_name, _, name = target.rpartition(".")
    else:
        raise ValueError(
            f"_target_ {target!r} is not a network of {MONAI_NETWORK_PACKAGE}; vafa builds only "
            "MONAI's own networks (a bundle's custom code is never imported)"
        )
    cls = _class_from(module_name, name, target)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"_target_ {target!r} is not a torch.nn.Module class")
    return cls


def build_monai_network(
    in_channels: int,
    out_channels: int,
    network: Mapping[str, Any],
    input_scale: float | Sequence[float] = 1.0,
    input_shift: float | Sequence[float] = 0.0,
) -> NormalizedInput:
    """The network of a MONAI bundle's ``network_def`` (card architecture ``"monai-bundle"``).

    Args:
        in_channels, out_channels: the card's channel counts (given to the class when its
            constructor takes ``in_channels``/``out_channels``).
        network: ``{"_target_": "monai.networks.nets.UNet", <constructor arguments>}``, JSON.
        input_scale, input_shift: the bundle's intensity transform after the [0, 1] window,
            e.g. ``ScaleIntensityRanged(b_min=-1, b_max=1)`` → scale 2, shift -1 (or one
            number per input channel each).

    Raises:
        ValueError: not a MONAI network, or its constructor rejected the arguments.
    """
    if not isinstance(network, Mapping) or "_target_" not in network:
        raise ValueError(f"network must be a dict with a '_target_', got {network!r}")
    cls = monai_network_class(network["_target_"])
    args = {k: v for k, v in network.items() if k != "_target_"}
    params = inspect.signature(cls).parameters
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if name in params:
            args[name] = value
    try:
        net = cls(**args)
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise ValueError(f"{cls.__name__}({_args_text(args)}) failed: {err}") from err
    return NormalizedInput(net, *_first_layer(input_scale, input_shift, in_channels))


# ----------------------------------------------------------------------------- nnU-Net


def build_nnunet_network(
    in_channels: int,
    out_channels: int,
    network_class: str,
    arch_kwargs: Mapping[str, Any],
    requires_import: Sequence[str] = (),
    input_scale: float | Sequence[float] = 1.0,
    input_shift: float | Sequence[float] = 0.0,
    axes: Sequence[int] = (2, 1, 0),
    folds: int = 1,
) -> NormalizedInput:
    """The network of an nnU-Net v2 plans configuration (card architecture ``"nnunet"``).

    What nnU-Net's ``get_network_from_plans`` builds for inference (deep supervision off),
    from the plans' ``architecture`` entry, without nnU-Net's random initialisation.

    Args:
        in_channels, out_channels: input channels and segmentation heads.
        network_class: e.g. ``"dynamic_network_architectures.architectures.unet.PlainConvUNet"``.
        arch_kwargs: the plans' ``arch_kwargs`` (JSON).
        requires_import: the plans' ``_kw_requires_import``: entries of ``arch_kwargs`` that
            name ``torch.nn`` classes (``"torch.nn.modules.conv.Conv3d"``).
        input_scale, input_shift: [0, 1] → nnU-Net's normalised intensities (one number
            each, or one per input channel: nnU-Net normalises each channel by its scheme).
        axes: our axis of each network axis (nnU-Net reads images as ``(z, y, x)``).
        folds: how many folds' networks (> 1: a :class:`NetworkEnsemble` of them, one per fold
            in the order chosen).

    Raises:
        ValueError: a class outside the allowlist, ``dynamic_network_architectures`` missing,
            or a constructor that rejects the arguments.
    """
    if not isinstance(network_class, str) or not network_class.startswith(NNUNET_NETWORK_PACKAGE):
        raise ValueError(
            f"network class must be one of {NNUNET_NETWORK_PACKAGE}*, got {network_class!r}"
        )
    module_name, _, name = network_class.rpartition(".")
    cls = _class_from(module_name, name, network_class, hint=NNUNET_EXTRA_HINT)
    kwargs = dict(arch_kwargs)
    for key in requires_import:
        if key not in kwargs:
            raise ValueError(f"_kw_requires_import names {key!r}, which arch_kwargs lacks")
        if kwargs[key] is not None:
            kwargs[key] = _torch_nn_class(kwargs[key], key)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be an integer >= 1, got {folds!r}")
    try:
        nets = [cls(input_channels=in_channels, num_classes=out_channels,
                    deep_supervision=False, **kwargs) for _ in range(folds)]  # fmt: skip
    except (TypeError, ValueError, RuntimeError, AssertionError, IndexError) as err:
        raise ValueError(f"{name}({_args_text(arch_kwargs)}) failed: {err}") from err
    scale, shift = _first_layer(input_scale, input_shift, in_channels)
    return NormalizedInput(nets[0] if folds == 1 else NetworkEnsemble(nets), scale, shift, axes)


def nnunet_roi_check(kwargs: dict[str, Any], roi: tuple[int, ...]) -> str | None:
    """Card check: the patch must be a multiple of the network's total stride on each axis."""
    strides = (kwargs.get("arch_kwargs") or {}).get("strides")
    axes = kwargs.get("axes", (2, 1, 0))
    try:
        per_net_axis = [math.prod(_as_triple(s)[n] for s in strides) for n in range(3)]
        factor = [0, 0, 0]
        for n, axis in enumerate(axes):
            factor[axis] = per_net_axis[n]
    except (TypeError, IndexError, ValueError):
        return None  # the builder reports a malformed description
    if any(f and r % f for r, f in zip(roi, factor, strict=True)):
        return f"roi_size must be a multiple of {factor} for this network, got {list(roi)}"
    return None


# ---------------------------------------------------------------------------------- helpers


def _first_layer(scale: Any, shift: Any, in_channels: int) -> tuple[Any, Any]:
    """``(scale, shift)`` of a card, checked: one number each or one per input channel."""
    return (
        numbers_per_channel("input_scale", scale, in_channels),
        numbers_per_channel("input_shift", shift, in_channels),
    )


def _numbers(value: float | tuple[float, ...]) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.6g}" for v in value) + ")"
    return f"{value:.6g}"


def _class_from(module_name: str, name: str, what: str, hint: str = "") -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name} for {what}: {err}" + (f" ({hint})" if hint else "")
        ) from None
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"{what}: {module_name} has no {name!r}")
    return cls


def _torch_nn_class(path: Any, key: str) -> type[nn.Module]:
    if not isinstance(path, str) or not path.startswith("torch.nn."):
        raise ValueError(f"arch_kwargs[{key!r}] must name a torch.nn class, got {path!r}")
    module_name, _, name = path.rpartition(".")
    cls = _class_from(module_name, name, f"arch_kwargs[{key!r}]")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"arch_kwargs[{key!r}] = {path!r} is not a torch.nn.Module class")
    return cls


def _as_triple(value: Any) -> tuple[int, int, int]:
    values = [value] * 3 if isinstance(value, int) else list(value)
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {value!r}")
    return tuple(int(v) for v in values)


def _args_text(args: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 200 else text[:197] + "…"
