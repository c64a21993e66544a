"""The tile grid of a volume: where the tiles of a full-volume attack lie, and how one is cut.

A volume of spatial shape ``(H, W, D)`` is covered by non-overlapping tiles of the model's
``roi``, placed every ``roi`` voxels along each axis, the last tile of an axis shifted inward so
that it ends at the volume's edge (:func:`tile_starts`; the grid of MONAI's
``dense_patch_slices`` with ``scan_interval = roi``). Tiles are in raster order (the first axis
slowest); where a shifted tile overlaps an earlier one, the later tile owns the overlap
(:func:`owned_slices`). An axis shorter than ``roi`` is zero-padded, centred, as MONAI's
``sliding_window_inference`` pads it (:func:`tile_padding`, :func:`extract_tile`,
:func:`crop_tile`). The tiled attack itself: :mod:`vafa.run.tiling`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vafa.ops.checks import positive_int, positive_triple

__all__ = [
    "Slices",
    "crop_tile",
    "extract_tile",
    "owned_slices",
    "tile_grid",
    "tile_padding",
    "tile_starts",
]

#: One tile's ``(slice_h, slice_w, slice_d)`` on the volume.
Slices = tuple[slice, slice, slice]


def tile_starts(size: int, roi: int) -> list[int]:
    """Start indices of the tiles covering one axis of length ``size``.

    Tiles of length ``roi`` are placed every ``roi`` voxels; the last one is shifted inward so
    that it ends exactly at ``size`` (it then overlaps its neighbour). An axis shorter than
    ``roi`` gets one tile at 0 (the caller pads the volume to ``roi``).

    Example:
        >>> tile_starts(100, 32), tile_starts(96, 32), tile_starts(20, 32)
        ([0, 32, 64, 68], [0, 32, 64], [0])
    """
    size, roi = positive_int("size", size), positive_int("roi", roi)
    if size <= roi:
        return [0]
    starts = list(range(0, size - roi + 1, roi))
    if starts[-1] + roi < size:
        starts.append(size - roi)
    return starts


def tile_grid(shape: Sequence[int], roi: int | Sequence[int]) -> list[Slices]:
    """Tiles covering a volume of spatial ``shape`` ``(H, W, D)``, in raster order.

    Returns:
        One ``(slice_h, slice_w, slice_d)`` per tile, clipped to ``shape`` (a tile is shorter
        than ``roi`` only along an axis shorter than ``roi``). The first axis varies slowest,
        as in MONAI's ``dense_patch_slices``.
    """
    shape = positive_triple("shape", shape, cube=True)
    roi = positive_triple("roi", roi, cube=True)
    per_axis = [
        [slice(s, min(s + r, n)) for s in tile_starts(n, r)]
        for n, r in zip(shape, roi, strict=True)
    ]
    return [tuple(t) for t in itertools.product(*per_axis)]  # type: ignore[misc]


def owned_slices(shape: Sequence[int], roi: int | Sequence[int]) -> list[Slices]:
    """The part of every tile of :func:`tile_grid` that it finally owns after stitching.

    Under the "later tile wins" rule a voxel belongs to the last tile (raster order) holding
    it; the owned parts are disjoint and together cover the volume exactly.
    """
    shape = positive_triple("shape", shape, cube=True)
    roi = positive_triple("roi", roi, cube=True)
    per_axis = []
    for n, r in zip(shape, roi, strict=True):
        starts = tile_starts(n, r)
        ends = [*starts[1:], n]
        per_axis.append([slice(a, b) for a, b in zip(starts, ends, strict=True)])
    return [tuple(t) for t in itertools.product(*per_axis)]  # type: ignore[misc]


def tile_padding(sl: Slices, roi: Sequence[int]) -> list[tuple[int, int]]:
    """``(before, after)`` padding per axis that brings a tile up to ``roi``.

    Centred, with the odd voxel after — the convention of MONAI's ``sliding_window_inference``,
    so that a padded tile is the very input the sliding-window evaluation gives the model (a
    strided network is not shift-invariant: a perturbation crafted at another alignment barely
    transfers).
    """
    widths = []
    for s, r in zip(sl, roi, strict=True):
        missing = max(r - (s.stop - s.start), 0)
        widths.append((missing // 2, missing - missing // 2))
    return widths


def extract_tile(
    volume: torch.Tensor, sl: Slices, roi: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """One tile ``[B, C, *roi]`` of ``volume``, zero-padded (centred) where it is short."""
    tile = volume[(slice(None), slice(None), *sl)]
    widths = tile_padding(sl, roi)
    if not any(a or b for a, b in widths):
        return tile
    return F.pad(tile, [v for pair in reversed(widths) for v in pair], mode="constant", value=value)


def crop_tile(tile: torch.Tensor, sl: Slices, roi: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`extract_tile`'s padding: ``[..., *roi]`` → the tile's own extent."""
    index = [
        slice(a, a + (s.stop - s.start))
        for (a, _), s in zip(tile_padding(sl, roi), sl, strict=True)
    ]
    return tile[(..., *index)]
