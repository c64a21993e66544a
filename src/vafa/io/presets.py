"""The architectures a model card can name (``ModelCard.architecture``): MONAI networks with the
paper's settings, the bundled demo UNet, the self-describing MONAI-bundle and nnU-Net wrappers.

:mod:`vafa.io.models` builds cards and networks from this table; ``register_preset`` there
adds to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from vafa.ops.messages import did_you_mean

__all__ = ["BTCV_CLASSES", "BTCV_WINDOW", "PRESETS", "Preset", "get_preset"]

#: The 14 Synapse/BTCV labels (index 0 first), as used by the VAFA paper.
BTCV_CLASSES = (
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal and splenic veins",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
)
#: The paper's CT window: [-175, 250] HU → [0, 1], clipped.
BTCV_WINDOW = {"type": "ct_window", "a_min": -175, "a_max": 250}


@dataclass(frozen=True)
class Preset:
    """An architecture cards can name: its constructor (lazy), default card fields, and an
    optional check of ``roi_size`` against the constructor arguments."""

    name: str
    constructor: Callable[[], Callable[..., nn.Module]]  # lazy: MONAI imports in ~6 s
    kwargs: dict[str, Any]
    class_names: tuple[str, ...]
    intensity: dict[str, Any]
    roi_size: tuple[int, ...]
    in_channels: int = 1
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    roi_check: Callable[[dict[str, Any], tuple[int, ...]], str | None] | None = None
    listed: bool = True  # offered by list_presets()


def _monai(class_name: str) -> Callable[[], Callable[..., nn.Module]]:
    def get() -> Callable[..., nn.Module]:
        import monai.networks.nets

        return getattr(monai.networks.nets, class_name)

    return get


def _roi_equals_img_size(kwargs: dict[str, Any], roi: tuple[int, ...]) -> str | None:
    img = kwargs.get("img_size")
    img = [img] * 3 if isinstance(img, int) else img
    if img is not None and list(img) != list(roi):
        return f"roi_size must equal kwargs['img_size'] for UNETR, got {list(roi)} and {list(img)}"
    return None


def _roi_multiple_of(factor: Callable[[dict[str, Any]], int | None]) -> Callable:
    def check(kwargs: dict[str, Any], roi: tuple[int, ...]) -> str | None:
        m = factor(kwargs)
        if m and any(r % m for r in roi):
            return f"roi_size must be a multiple of {m} for this architecture, got {list(roi)}"
        return None

    return check


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _unet_factor(kwargs: dict[str, Any]) -> int | None:
    strides = kwargs.get("strides") or []
    if not all(_int_or_none(s) for s in strides):
        return None
    return math.prod(strides)


def _wrapped(name: str) -> Callable[[], Callable[..., Any]]:
    def get() -> Callable[..., Any]:
        from vafa.io import wrapped

        return getattr(wrapped, name)

    return get


_BTCV = {
    "class_names": BTCV_CLASSES,
    "intensity": BTCV_WINDOW,
    "roi_size": (96, 96, 96),
    "spacing": (1.5, 1.5, 2.0),
    "orientation": "RAS",
}
PRESETS: dict[str, Preset] = {
    "unetr-btcv": Preset(
        "unetr-btcv",
        _monai("UNETR"),
        {
            "img_size": [96, 96, 96],
            "feature_size": 16,
            "hidden_size": 768,
            "mlp_dim": 3072,
            "num_heads": 12,
            "proj_type": "perceptron",
            "norm_name": "instance",
            "res_block": True,
            "dropout_rate": 0.0,
        },
        roi_check=_roi_equals_img_size,
        **_BTCV,
    ),
    "swin-unetr": Preset(
        "swin-unetr",
        _monai("SwinUNETR"),
        {"feature_size": 48, "spatial_dims": 3},
        roi_check=_roi_multiple_of(lambda kw: 16 * (_int_or_none(kw.get("patch_size", 2)) or 0)),
        **_BTCV,
    ),
    "segresnet": Preset(
        "segresnet",
        _monai("SegResNet"),
        {"spatial_dims": 3, "init_filters": 16},
        roi_check=_roi_multiple_of(lambda kw: 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1)),
        **_BTCV,
    ),
    "unet": Preset(
        "unet",
        _monai("UNet"),
        {
            "spatial_dims": 3,
            "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
        },
        roi_check=_roi_multiple_of(_unet_factor),
        **_BTCV,
    ),
    "demo-unet": Preset(
        "demo-unet",
        _monai("UNet"),
        {
            "spatial_dims": 3,
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 0,
            "norm": "batch",
        },
        roi_check=_roi_multiple_of(_unet_factor),
        **{**_BTCV, "spacing": (3.0, 3.0, 3.0)},
    ),
    # self-describing: the network comes from the card's kwargs (not offered as presets)
    "monai-bundle": Preset(
        "monai-bundle",
        _wrapped("build_monai_network"),
        {},
        ("background", "foreground"),
        BTCV_WINDOW,
        (96, 96, 96),
        listed=False,
    ),
    "nnunet": Preset(
        "nnunet",
        _wrapped("build_nnunet_network"),
        {},
        ("background", "foreground"),
        BTCV_WINDOW,
        (128, 128, 128),
        roi_check=lambda kw, roi: _wrapped("nnunet_roi_check")()(kw, roi),
        listed=False,
    ),
}


def get_preset(name: object) -> Preset:
    """The preset ``name`` (``TypeError``/``ValueError`` naming the known ones otherwise)."""
    if not isinstance(name, str):
        raise TypeError(f"architecture must be a preset name (str), got {type(name).__name__}")
    if name not in PRESETS:
        raise ValueError(
            f"architecture must be one of {sorted(PRESETS)}, got {name!r}"
            + did_you_mean(name, PRESETS)
        )
    return PRESETS[name]
