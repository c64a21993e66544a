"""Perceptual distance of volumes: LPIPS (Zhang et al., CVPR 2018) slice by slice, from local weights.

LPIPS compares deep features of two images: the five ReLU outputs of an AlexNet trunk are
unit-normalised over channels, their squared difference is weighted per channel by a learned
linear head, averaged over space and summed over the five layers (0 for identical images,
larger when they look more different). The VAFA paper reports it beside SSIM as a measure of
imperceptibility.

Nothing is downloaded here (the machine may be offline): :func:`load_lpips` reads the weights
from files the user has — the torchvision AlexNet checkpoint (``alexnet-owt-7be5be79.pth``, keys
``features.*``) and the linear heads shipped with the ``lpips`` package (``weights/v0.1/alex.pth``,
keys ``lin{n}.model.1.weight``), or one file holding both (e.g. a full ``lpips.LPIPS`` state dict,
or :meth:`LPIPS.state_dict` saved as safetensors). Files are read like checkpoints
(:func:`vafa.io.state_dicts.read_state_dict`: ``weights_only``, never arbitrary unpickling).

Volumes are compared slice by slice along their last (axial) axis: each slice in [0, 1] is
mapped to LPIPS's [-1, 1] range and repeated over the three colour channels
(:func:`volume_lpips`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "MIN_SLICE", "load_lpips", "volume_lpips"]

#: Channels of the five AlexNet layers LPIPS compares.
CHANNELS = (64, 192, 384, 256, 256)
#: Indices, in torchvision's ``alexnet().features``, of the ReLUs whose outputs are compared.
TAPS = (1, 4, 7, 9, 11)
#: LPIPS's fixed input scaling (after mapping to [-1, 1]): ``(x - shift) / scale`` per channel.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: Smallest slice side the AlexNet trunk accepts (three poolings after a stride-4 convolution).
MIN_SLICE = 31


def _alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional part, laid out as torchvision's (so its keys load unchanged)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
    )


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet trunk (weights from :func:`load_lpips`).

    ``forward(x, y)``: images ``[N, 3, H, W]`` in [-1, 1] (LPIPS's convention) → distances
    ``[N]``. ``H, W ≥`` :data:`MIN_SLICE`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS compares images [N, 3, H, W] of one shape, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SLICE:
            raise ValueError(
                f"LPIPS needs images of at least {MIN_SLICE}×{MIN_SLICE} pixels, got "
                f"{tuple(x.shape[-2:])}"
            )
        both = (torch.cat([x, y]) - self.shift) / self.scale
        total = x.new_zeros(x.shape[0])
        for head, feature in zip(self.heads, self._taps(both), strict=True):
            unit = feature / (feature.square().sum(1, keepdim=True).sqrt() + 1e-10)
            a, b = unit.chunk(2)
            total = total + head((a - b).square()).mean(dim=(1, 2, 3))
        return total


def load_lpips(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    device: str | torch.device = "cpu",
    *,
    trust: bool = False,
) -> LPIPS:
    """An :class:`LPIPS` metric from local weight files (never downloads).

    Args:
        paths: one file, or several whose tensors are merged: torchvision's AlexNet checkpoint
            (``features.N.weight/bias``; its ``classifier.*`` is ignored) and the ``lpips``
            package's ``alex.pth`` (``lin{n}.model.1.weight``); a full ``lpips.LPIPS`` state
            dict (``net.slice{n}.N.*``, ``lin{n}.*``/``lins.{n}.*``) or this class's own state
            dict work as one file. Read by :func:`vafa.io.state_dicts.read_state_dict`
            (``.safetensors`` or torch files, ``weights_only``).
        device: where the metric runs.
        trust: as for :func:`vafa.io.state_dicts.read_state_dict` (a torch file holding pickled
            torch objects, not only tensors).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file is not a readable state dict, or weights are missing or mis-shaped
            (the message names them).
    """
    from vafa.io.state_dicts import read_state_dict

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no LPIPS weight files given")
    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            tensors = read_state_dict(path, trust=trust)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"LPIPS weights: {err}") from err
        merged.update(_lpips_keys(tensors, path))
    metric = LPIPS()
    expected = metric.state_dict()
    missing = sorted(set(expected) - set(merged))
    if missing:
        shown = ", ".join(missing[:6]) + (" …" if len(missing) > 6 else "")
        raise ValueError(
            f"LPIPS weights incomplete in {', '.join(str(p) for p in paths)}: missing {shown}. "
            "Give torchvision's AlexNet checkpoint (alexnet-owt-7be5be79.pth) and the lpips "
            "package's weights/v0.1/alex.pth, or one file holding both"
        )
    for key, value in expected.items():
        if tuple(merged[key].shape) != tuple(value.shape):
            raise ValueError(
                f"LPIPS weight {key!r} has shape {tuple(merged[key].shape)}, expected "
                f"{tuple(value.shape)} (AlexNet weights are needed, not VGG or SqueezeNet)"
            )
    metric.load_state_dict({k: merged[k].float() for k in expected})
    return metric.to(device)


#: Key layouts of the files :func:`load_lpips` reads → this module's keys (``module.``
#: prefixes are already stripped by ``read_state_dict``).
_KEY_FORMS = (
    (re.compile(r"^features\.(\d+)\.(weight|bias)$"), "features.{0}.{1}"),
    (re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$"), "features.{0}.{1}"),
    (re.compile(r"^lins?\.?(\d)\.model\.1\.weight$"), "heads.{0}.weight"),
    (re.compile(r"^heads\.(\d)\.weight$"), "heads.{0}.weight"),
)


def _lpips_keys(tensors: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``tensors`` that LPIPS uses, under this module's key names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        for pattern, template in _KEY_FORMS:
            match = pattern.match(key)
            if match:
                out[template.format(*match.groups())] = value
                break
    if not out:
        raise ValueError(
            f"{path} holds no AlexNet or LPIPS weights (keys such as features.0.weight or "
            f"lin0.model.1.weight); its first keys: {', '.join(list(tensors)[:4]) or 'none'}"
        )
    return out


@torch.no_grad()
def volume_lpips(
    metric: LPIPS, x: torch.Tensor, y: torch.Tensor, *, batch: int = 16
) -> torch.Tensor:
    """Mean LPIPS over the axial slices (and the channels) of two volumes ``[B, C, H, W, D]``
    in [0, 1].

    Returns ``[B]``: for every volume, the mean over its ``D`` slices ``[:, c, :, k]`` and its
    ``C`` channels of the LPIPS distance between the two slices (each mapped to [-1, 1], grey
    repeated over RGB); ``batch`` slices go through the network at a time.

    Raises:
        ValueError: shapes differ or are not ``[B, C, H, W, D]``, or ``H, W <`` :data:`MIN_SLICE`.
    """
    if x.shape != y.shape or x.dim() != 5:
        raise ValueError(
            f"volume_lpips compares volumes [B, C, H, W, D] of one shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    channels = x.shape[1]
    x, y = x.flatten(0, 1)[:, None], y.flatten(0, 1)[:, None]  # each channel a grey volume
    device = next(metric.parameters()).device
    b, _, h, w, d = x.shape

    def slices(v: torch.Tensor) -> torch.Tensor:  # [B*D, 3, H, W] in [-1, 1]
        v = v.to(device=device, dtype=torch.float32).permute(0, 4, 1, 2, 3).reshape(b * d, 1, h, w)
        return (v * 2 - 1).expand(-1, 3, -1, -1)

    xs, ys = slices(x), slices(y)
    out = torch.cat([metric(xs[i : i + batch], ys[i : i + batch]) for i in range(0, b * d, batch)])
    return out.view(b // channels, channels * d).mean(1).cpu()
