"""Blockwise orthonormal DCT-II of volumes, as small matrix products.

A volume ``[B, C, H, W, D]`` is cut into non-overlapping ``h×w×d`` cubes (or ``h×w`` squares of
every axial slice when ``block_size`` has two entries). Sides that are not multiples of the block
size are padded by replicating the edge voxels and cropped back after the inverse.

Two layouts of the coefficients are used:

* **blocks** ``[B, C, N, h, w, d]``: the blocks stacked in raster order (``N = n_h·n_w·n_d``;
  for 2D blocks ``[B, C, N, h, w]`` with ``N = n_h·n_w·D``). This is what :func:`block_dct`
  returns and the shape of the VAFA quantization tables.
* **layout** ``[B, C, H', W', D']``: every block's coefficients written in place of its voxels
  (``H' = n_h·h`` …, the padded shape). Cheap to compute (no transposes) and the natural picture of
  the per-block frequency content; :func:`to_blocks` / :func:`from_blocks` convert.

The DCT along an axis is one batched matrix product with an ``n×n`` orthonormal DCT matrix
(cached per size, device and dtype), so a 3D block transform is three small GEMMs with no Python
loop over blocks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "apply_along_axes",
    "block_dct",
    "block_idct",
    "crop_padding",
    "dct_matrix",
    "from_blocks",
    "layout_dct",
    "layout_idct",
    "normalize_block_size",
    "pad_to_blocks",
    "padded_shape",
    "to_blocks",
]


def normalize_block_size(block_size: int | Sequence[int], spatial_dims: int = 3) -> tuple[int, ...]:
    """Validate a block size: an int (cube) or 2 / 3 positive ints.

    Raises:
        ValueError: a non-positive or non-integer entry, or a sequence of the wrong length.
    """
    if isinstance(block_size, bool):
        raise TypeError(f"block_size must be an int or a sequence of ints, got {block_size!r}")
    if isinstance(block_size, int):
        sizes: tuple = (block_size,) * spatial_dims
    else:
        try:
            sizes = tuple(block_size)
        except TypeError as err:
            raise TypeError(
                f"block_size must be an int or a sequence of ints, got {block_size!r}"
            ) from err
    if len(sizes) not in (2, 3):
        raise ValueError(f"block_size must have 2 or 3 entries, got {block_size!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise ValueError(f"block_size entries must be positive ints, got {block_size!r}")
    return sizes


def dct_matrix(
    n: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``M`` of size ``[n, n]``: ``M @ v`` is the DCT of ``v``.

    ``M.T`` is the inverse (DCT-III). Cached per ``(n, device, dtype)``; do not modify in place.
    """
    return _dct_matrix(int(n), torch.device(device or "cpu"), dtype)


@functools.lru_cache(maxsize=64)
def _dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(device=device, dtype=dtype).contiguous()


def padded_shape(shape: Sequence[int], block_size: Sequence[int]) -> tuple[int, ...]:
    """Spatial shape rounded up to multiples of the block size (2D blocks leave ``D`` alone)."""
    out = [math.ceil(shape[i] / b) * b for i, b in enumerate(block_size)]
    return tuple(out) + tuple(shape[len(block_size) :])


def pad_to_blocks(x: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """Pad ``x`` ``[B, C, H, W, D]`` at the high end (replicate) to multiples of ``block_size``."""
    target = padded_shape(x.shape[2:], block_size)
    if tuple(target) == tuple(x.shape[2:]):
        return x
    pads: list[int] = []
    for size, tgt in reversed(list(zip(x.shape[2:], target, strict=True))):
        pads += [0, tgt - size]
    return F.pad(x, pads, mode="replicate")


def crop_padding(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``x`` ``[B, C, H', W', D']`` cropped back to the spatial ``shape`` ``(H, W, D)`` that
    :func:`pad_to_blocks` padded; ``x`` itself when nothing was padded (a slice would cost a
    zero-filled copy in its backward)."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    h, w, d = shape
    return x[:, :, :h, :w, :d]


def apply_along_axes(
    x: torch.Tensor, matrices: Sequence[torch.Tensor | None], *, transpose: bool = False
) -> torch.Tensor:
    """Apply a block matrix along each spatial axis of ``x`` ``[B, C, H, W, D]``.

    ``matrices[i]`` has shape ``[m, b]`` and acts on consecutive groups of ``b`` samples along
    spatial axis ``i`` (so the axis must be a multiple of ``b``), giving ``m`` samples per group.
    ``None`` leaves an axis unchanged. With ``transpose=True`` the transposed matrices are applied.

    Returns:
        ``[B, C, H·m_h/b_h, W·m_w/b_w, D·m_d/b_d]``.
    """
    for axis, mat in enumerate(matrices):
        if mat is None:
            continue
        if transpose:
            mat = mat.transpose(0, 1)
        x = _apply_along_axis(x, mat, axis + 2)
    return x


def _apply_along_axis(x: torch.Tensor, mat: torch.Tensor, dim: int) -> torch.Tensor:
    m, b = mat.shape
    shape = list(x.shape)
    n = shape[dim] // b
    pre = math.prod(shape[:dim])
    post = math.prod(shape[dim + 1 :])
    if post == 1:  # last axis: one GEMM over all groups
        y = x.reshape(pre * n, b) @ mat.transpose(0, 1)
    else:
        y = torch.matmul(mat, x.reshape(pre * n, b, post))
    shape[dim] = n * m
    return y.reshape(shape)


def _dct_matrices(block_size: Sequence[int], device, dtype) -> list[torch.Tensor]:
    return [dct_matrix(b, device=device, dtype=dtype) for b in block_size]


def layout_dct(x: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """Blockwise DCT of an already padded ``x`` ``[B, C, H', W', D']``, coefficients in layout."""
    return apply_along_axes(x, _dct_matrices(block_size, x.device, x.dtype))


def layout_idct(coeffs: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`layout_dct` (same shape in and out)."""
    mats = _dct_matrices(block_size, coeffs.device, coeffs.dtype)
    return apply_along_axes(coeffs, mats, transpose=True)


def to_blocks(layout: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """Layout ``[B, C, H', W', D']`` → blocks ``[B, C, N, *block_size]`` (raster block order)."""
    b, c, h, w, d = layout.shape
    if len(block_size) == 3:
        bh, bw, bd = block_size
        v = layout.reshape(b, c, h // bh, bh, w // bw, bw, d // bd, bd)
        v = v.permute(0, 1, 2, 4, 6, 3, 5, 7)
        return v.reshape(b, c, -1, bh, bw, bd)
    bh, bw = block_size
    v = layout.reshape(b, c, h // bh, bh, w // bw, bw, d).permute(0, 1, 2, 4, 6, 3, 5)
    return v.reshape(b, c, -1, bh, bw)


def from_blocks(
    blocks: torch.Tensor, block_size: Sequence[int], padded: Sequence[int]
) -> torch.Tensor:
    """Blocks ``[B, C, N, *block_size]`` → layout ``[B, C, *padded]`` (inverse of :func:`to_blocks`)."""
    b, c = blocks.shape[:2]
    h, w, d = padded
    if len(block_size) == 3:
        bh, bw, bd = block_size
        v = blocks.reshape(b, c, h // bh, w // bw, d // bd, bh, bw, bd)
        return v.permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(b, c, h, w, d)
    bh, bw = block_size
    v = blocks.reshape(b, c, h // bh, w // bw, d, bh, bw).permute(0, 1, 2, 5, 3, 6, 4)
    return v.reshape(b, c, h, w, d)


def block_dct(x: torch.Tensor, block_size: int | Sequence[int]) -> torch.Tensor:
    """Orthonormal DCT-II of every block of ``x``.

    Args:
        x: ``[B, C, H, W, D]`` real tensor (any float dtype).
        block_size: ``(h, w, d)`` for 3D cubes or ``(h, w)`` for 2D squares of each axial slice;
            an int means a cube. Sides that are not multiples are padded (replicate).

    Returns:
        ``[B, C, N, h, w, d]`` (3D) or ``[B, C, N, h, w]`` (2D) coefficients, blocks in raster
        order over the padded volume.

    Example:
        >>> x = torch.rand(1, 1, 16, 16, 16)
        >>> block_dct(x, 8).shape
        torch.Size([1, 1, 8, 8, 8, 8])
    """
    _check_volume(x)
    sizes = normalize_block_size(block_size)
    return to_blocks(layout_dct(pad_to_blocks(x, sizes), sizes), sizes)


def block_idct(
    coeffs: torch.Tensor, block_size: int | Sequence[int], shape: Sequence[int]
) -> torch.Tensor:
    """Inverse of :func:`block_dct`.

    Args:
        coeffs: ``[B, C, N, *block_size]`` blockwise coefficients.
        block_size: as given to :func:`block_dct`.
        shape: spatial shape ``(H, W, D)`` of the original volume (padding is cropped off).

    Returns:
        ``[B, C, H, W, D]``.
    """
    sizes = normalize_block_size(block_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be the 3 spatial sizes (H, W, D), got {shape!r}")
    padded = padded_shape(shape, sizes)
    expected = math.prod(padded[i] // b for i, b in enumerate(sizes)) * math.prod(
        padded[len(sizes) :]
    )
    if coeffs.dim() != 3 + len(sizes) or tuple(coeffs.shape[3:]) != sizes:
        raise ValueError(
            f"coeffs must have shape [B, C, N, {', '.join(map(str, sizes))}], "
            f"got {tuple(coeffs.shape)}"
        )
    if coeffs.shape[2] != expected:
        raise ValueError(
            f"coeffs hold {coeffs.shape[2]} blocks but shape {shape} with block_size {sizes} "
            f"needs {expected}"
        )
    volume = layout_idct(from_blocks(coeffs, sizes, padded), sizes)
    return crop_padding(volume, shape)


def _check_volume(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"x must have shape [B, C, H, W, D] (5 dims), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor, got dtype {x.dtype}")
