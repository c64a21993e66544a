"""Multi-channel models in the Slicer modules: several scalar volumes in, one per channel out.

In Slicer's GUI each channel of a multi-channel model (BraTS: T1c, T1, T2, FLAIR) is its own
scalar volume: the attack and evaluate modules take the input volume as channel 1 and
``channel2``… (:data:`~vafa.slicer.modules.EXTRA_CHANNELS`) as the others, and write the
adversarial volume and the perturbation as ``adversarial``, ``adversarial2``… on the input's
grid, each channel in its own units. Slicer's ``scalar`` volume selector lists no vector
volumes, and Slicer reads a 4D NIfTI with channels on its last axis only as a sequence, so
scalar volumes are what a user has loaded and can pick.

A script (``slicer.cli.run``) may pass a vector volume node as the input instead: Slicer writes
it for the module as a 5D NIfTI ``(I, J, K, 1, C)`` with the ``vector`` intent, which
:func:`vafa.io.channels.load_image` reads (layout ``"vector"``); the adversarial volume and the
perturbation are then written the same way, which Slicer reads back into a vector volume node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from vafa.io.channels import Channels, channels_text, grid_mismatch, load_image, save_image
from vafa.io.volume import (
    READ_ERRORS,
    Volume,
    load_volume,
    save_volume,
)
from vafa.slicer.modules import CHANNEL_OUTPUTS, DCT_PICTURES, EXTRA_CHANNELS, MAX_CHANNELS

__all__ = [
    "channel_names",
    "channel_writers",
    "check_channel_outputs",
    "load_channels",
    "split_output",
]


def channel_names(first: str, prefix: str) -> list[str]:
    """The parameters of one image, channel by channel: ``first``, then ``{prefix}2``…"""
    return [first, *(f"{prefix}{c}" for c in EXTRA_CHANNELS)]


def load_channels(args, card, first: str, prefix: str) -> Volume | Channels | None:
    """The image of the parameters ``first``, ``{prefix}2``… for ``card``'s model.

    Args:
        args: the parsed module arguments.
        card: the model card (``in_channels``, ``channel_names``).
        first: the parameter of channel 1 (e.g. ``input``); alone it may also be a vector
            volume (or a 4D file) holding every channel.
        prefix: the parameters of channels 2… (e.g. ``channel`` for ``channel2``).

    Returns:
        A Volume (single-channel model), Channels, or None when no parameter is given.

    Raises:
        ValueError: a gap in the channels, a channel count different from the model's (its
            channels named), channels on different grids (the parameters named), unreadable
            files.
        FileNotFoundError: a file is missing.
    """
    names = channel_names(first, prefix)
    given = [(n, Path(v)) for n in names if (v := getattr(args, n, None))]
    if not given:
        return None
    if given[0][0] != first or [n for n, _ in given] != names[: len(given)]:
        missing = next(n for n in names if not getattr(args, n, None))
        raise ValueError(
            f"{given[-1][0]} is given but {missing} is not: give the channels in the model's "
            "order without gaps"
        )
    want, labels = card.in_channels, card.channel_names
    if len(given) == 1:
        path = given[0][1]
        if want > 1 and _is_3d(path):
            raise ValueError(
                f"{first} is one scalar volume but {channels_text(want, labels)}: "
                f"{_where(first, prefix, want)}"
            )
        return load_image(path, want, labels)
    if len(given) != want:
        listed = ", ".join(n for n, _ in given)
        raise ValueError(
            f"got {len(given)} volumes ({listed}) but {channels_text(want, labels)}: "
            f"{_where(first, prefix, want)}"
        )
    volumes = [load_volume(p) for _, p in given]
    _check_grids([n for n, _ in given], volumes)
    named = tuple(labels) if labels and len(labels) == len(volumes) else None
    return Channels(tuple(volumes), named, "files")


def check_channel_outputs(image: Volume | Channels, outputs: Sequence[str], card) -> None:
    """Refuse outputs that do not fit the image: channel outputs beyond the model's channels,
    per-channel outputs of a vector input.

    Raises:
        ValueError: the first output that does not fit (one line, before anything runs).
    """
    count = len(image) if isinstance(image, Channels) else 1
    for name in outputs:
        base, channel = split_output(name)
        if base not in CHANNEL_OUTPUTS or channel == 1:
            continue
        if isinstance(image, Channels) and image.layout != "files":
            raise ValueError(
                f"{name}: the input is one vector volume, so {base} is one vector volume too "
                "(leave the channel outputs empty)"
            )
        if channel > count:
            raise ValueError(f"{name}: {channels_text(count, card.channel_names)}")


def channel_writers(outcome, outputs: dict[str, Path]) -> dict[Path, Callable[[Path], Any]]:
    """``{path: write(tmp)}`` of the outputs that are channels of a multi-channel outcome
    (``adversarial``, ``perturbation2``, ``dct_clean3``, ``q_table4``…): one scalar volume per
    channel, or one vector volume for a vector input; float32 (the adversarial volume and the
    perturbation in each channel's units), on the input's grid."""
    writers: dict[Path, Callable[[Path], Any]] = {}
    if not isinstance(outcome.adversarial, Channels):
        return writers
    pictures: dict[str, Channels] = {}
    for name, path in outputs.items():
        base, channel = split_output(name)
        if base in DCT_PICTURES and not pictures:
            pictures = _channel_pictures(outcome)
        image = pictures[base] if base in DCT_PICTURES else getattr(outcome, base, None)
        if base not in CHANNEL_OUTPUTS or not isinstance(image, Channels):
            continue
        protect = tuple(outcome.inputs)
        if image.layout == "files":
            volume = image.volumes[channel - 1]
            writers[path] = lambda tmp, v=volume, p=protect: save_volume(
                v, tmp, overwrite=True, protect=p
            )
        else:  # Slicer reads one multi-channel file back only as a vector volume
            vector = Channels(image.volumes, image.names, "vector")
            writers[path] = lambda tmp, i=vector, p=protect: save_image(
                i, tmp, overwrite=True, protect=p
            )
    return writers


# ----------------------------------------------------------------------------- helpers
def _channel_pictures(outcome) -> dict[str, Channels]:
    """The DCT pictures of every channel of a multi-channel outcome, as Channels on the
    adversarial image's grid (``{"dct_clean": …, "dct_adversarial": …}``)."""
    from vafa.report.figures import channel_dct_pictures

    pairs = channel_dct_pictures(outcome)
    return {
        key: outcome.adversarial.with_array(np.stack([pair[i] for pair in pairs]))
        for i, key in enumerate(DCT_PICTURES)
    }


def split_output(name: str) -> tuple[str, int]:
    """``adversarial3`` → ``("adversarial", 3)``; ``adversarial`` → ``("adversarial", 1)``."""
    stem = name.rstrip("0123456789")
    return (stem, int(name[len(stem) :])) if stem != name else (name, 1)


def _is_3d(path: Path) -> bool:
    """Whether ``path`` holds one 3D volume (False when unreadable: the loader says why)."""
    try:
        shape = nib.load(path).shape
    except READ_ERRORS:
        return False
    return all(n == 1 for n in shape[3:])


def _check_grids(names: list[str], volumes: list[Volume]) -> None:
    mismatch = grid_mismatch(volumes, names)
    if mismatch is not None:
        name = names[mismatch[0]]
        raise ValueError(
            f"channels on different grids: {mismatch[1]}: resample {name} onto {names[0]} first "
            "(e.g. with Resample Scalar/Vector/DWI Volume)"
        )


def _where(first: str, prefix: str, want: int) -> str:
    """Where the channels go, in the module's parameters."""
    if want == 1:
        return f"give {first} only (leave {prefix}2… empty)"
    if want > MAX_CHANNELS:
        return (
            f"the Slicer modules take at most {MAX_CHANNELS} as separate volumes; give one "
            "vector volume, or use vafa attack / vafa evaluate"
        )
    return f"give {', '.join(channel_names(first, prefix)[:want])}, in that order"
