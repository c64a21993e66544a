"""Frequency bands of a block DCT: which coefficients are "low", "middle" and "high".

A coefficient of a block of side ``b`` (per axis) sits at DCT index ``(u, v, w)``, each in
``[0, b − 1]``. Its normalised frequency is the mean of the per-axis fractions

    ``r = (u/(b_1 − 1) + v/(b_2 − 1) + w/(b_3 − 1)) / 3``  ∈ [0, 1]

(an axis of size 1 contributes 0; 2D blocks average over their two axes). The three bands split
``r`` into equal thirds:

* ``"low"``:    ``r < 1/3`` (includes the DC term, ``r = 0``);
* ``"middle"``: ``1/3 ≤ r < 2/3``;
* ``"high"``:   ``r ≥ 2/3``;
* ``"all"``:    every coefficient.

The three bands partition the block, so (with the orthonormal DCT) the energies of a signal in
the three bands sum to its total energy (Parseval). Band-limited attacks and the perturbation
band analysis share this one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["BANDS", "band_layout", "band_mask", "check_band", "normalized_frequency"]

#: The band names, in order of frequency (``"all"`` first: no restriction).
BANDS: tuple[str, ...] = ("all", "low", "middle", "high")

_EDGES = {"low": (0.0, 1.0 / 3.0), "middle": (1.0 / 3.0, 2.0 / 3.0), "high": (2.0 / 3.0, 1.01)}


def check_band(band: object) -> str:
    """``band`` if it is one of :data:`BANDS`, else ``ValueError`` naming the choices."""
    if not isinstance(band, str) or band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}; got {band!r}")
    return band


def normalized_frequency(
    block_size: Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """The normalised frequency ``r`` of every coefficient of a block.

    Args:
        block_size: the block's side per axis, e.g. ``(32, 32, 32)`` or ``(8, 8)``.

    Returns:
        float64 tensor of shape ``block_size``, values in ``[0, 1]``.
    """
    sizes = tuple(int(s) for s in block_size)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"block_size must be positive sides; got {block_size!r}")
    r = torch.zeros(sizes, dtype=torch.float64, device=device)
    for axis, n in enumerate(sizes):
        if n == 1:
            continue
        frac = torch.arange(n, dtype=torch.float64, device=device) / (n - 1)
        shape = [1] * len(sizes)
        shape[axis] = n
        r = r + frac.reshape(shape)
    return r / len(sizes)


def band_mask(
    block_size: Sequence[int], band: str, device: torch.device | str | None = None
) -> torch.Tensor:
    """Which coefficients of a block belong to ``band``.

    Args:
        block_size: the block's side per axis.
        band: one of :data:`BANDS`.

    Returns:
        bool tensor of shape ``block_size``.
    """
    check_band(band)
    r = normalized_frequency(block_size, device=device)
    if band == "all":
        return torch.ones_like(r, dtype=torch.bool)
    lo, hi = _EDGES[band]
    # A small tolerance keeps the edges stable for fractions like 1/3 computed in float.
    eps = 1e-9
    return (r >= lo - eps) & (r < hi - eps)


def band_layout(
    block_size: Sequence[int],
    shape: Sequence[int],
    band: str,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """:func:`band_mask` repeated over every block of a blockwise coefficient layout.

    The layout is that of :func:`vafa.ops.frequency.layout_dct`: every block's coefficients in
    place of its voxels. A 2D ``block_size`` ``(h, w)`` blocks the first two axes of a 3D
    ``shape`` and leaves the last one whole (the axial slices of VAFA-2D).

    Args:
        block_size: the block's side per axis (2 or 3 entries).
        shape: spatial shape of the layout, e.g. ``(H', W', D')``; the blocked axes must be
            multiples of the block sides (the padded shape).
        band: one of :data:`BANDS`.

    Returns:
        bool tensor of shape ``shape``.
    """
    sizes = tuple(int(s) for s in block_size)
    shape = tuple(int(s) for s in shape)
    blocked = shape[: len(sizes)]  # the leading axes are blocked; any others are broadcast
    if len(blocked) < len(sizes) or any(n % b for n, b in zip(blocked, sizes, strict=True)):
        raise ValueError(f"shape must be whole blocks of {sizes}; got {shape}")
    mask = band_mask(sizes, band, device=device)
    mask = mask.repeat(*(n // b for n, b in zip(blocked, sizes, strict=True)))
    for n in shape[len(sizes) :]:
        mask = mask.unsqueeze(-1).expand(*mask.shape, n)
    return mask
