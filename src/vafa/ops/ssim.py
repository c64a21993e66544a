"""Fast blockwise SSIM with pytorch-msssim semantics.

SSIM is computed independently in every ``h×w×d`` block (or ``h×w`` square of each axial slice),
as if the blocks were stacked as a batch and given to ``pytorch_msssim.ssim(..., win_size=3,
win_sigma=1.5, data_range=1, nonnegative_ssim=True, size_average=False)``: a separable Gaussian
window with *valid* filtering inside each block (axes shorter than the window are not filtered),
constants ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²``, the SSIM map averaged per block and channel,
negative values clamped to 0 per block, then averaged.

Filtering is done with banded ``[b − win + 1, b]`` matrices applied along each axis as batched
GEMMs (the same machinery as the block DCT) and the statistics of the reference volume are
computed once, so one evaluation costs three filtered maps instead of five convolutions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from vafa.ops.frequency import apply_along_axes, normalize_block_size, pad_to_blocks
from vafa.ops.fusion import fused

__all__ = ["BlockSSIM", "block_ssim", "gaussian_window", "ssim3d"]


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1D Gaussian window ``[size]`` centred on ``size // 2`` (pytorch-msssim's)."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


@functools.lru_cache(maxsize=64)
def _valid_filter(
    block: int, win_size: int, sigma: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    if block < win_size:
        return None  # pytorch-msssim skips axes shorter than the window
    g = gaussian_window(win_size, sigma)
    out = block - win_size + 1
    mat = torch.zeros(out, block, dtype=torch.float64)
    for i in range(out):
        mat[i, i : i + win_size] = g
    return mat.to(device=device, dtype=dtype)


class BlockSSIM:
    """Blockwise SSIM of volumes against a fixed reference.

    Args:
        reference: ``[B, C, H, W, D]`` volume in ``[0, data_range]``.
        block_size: ``(h, w, d)`` cubes or ``(h, w)`` axial squares (int = cube). Volumes whose
            sides are not multiples are padded (replicate) first.
        win_size: Gaussian window size (odd), default 3 as in the VAFA paper.
        sigma: Gaussian standard deviation, default 1.5.
        data_range: value range of the data, default 1.
        nonnegative: clamp each block's SSIM at 0 (pytorch-msssim's ``nonnegative_ssim``).

    Calling the object with ``x`` of the reference's shape returns the per-sample mean SSIM
    ``[B]`` (differentiable in ``x``).
    """

    def __init__(
        self,
        reference: torch.Tensor,
        block_size: int | Sequence[int],
        *,
        win_size: int = 3,
        sigma: float = 1.5,
        data_range: float = 1.0,
        nonnegative: bool = True,
        K: tuple[float, float] = (0.01, 0.03),
    ) -> None:
        if win_size < 1 or win_size % 2 == 0:
            raise ValueError(f"win_size must be a positive odd int, got {win_size!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        if data_range <= 0:
            raise ValueError(f"data_range must be > 0, got {data_range!r}")
        if reference.dim() != 5:
            raise ValueError(f"reference must be [B, C, H, W, D], got {tuple(reference.shape)}")
        self.block_size = normalize_block_size(block_size)
        self.shape = tuple(reference.shape)
        self.nonnegative = nonnegative
        self.c1 = (K[0] * data_range) ** 2
        self.c2 = (K[1] * data_range) ** 2
        self._filters = [
            _valid_filter(b, win_size, float(sigma), reference.device, reference.dtype)
            for b in self.block_size
        ]
        ref = pad_to_blocks(reference.detach(), self.block_size)
        self._out_block = [
            b if f is None else f.shape[0]
            for b, f in zip(self.block_size, self._filters, strict=True)
        ]
        mu = self._filter(ref)
        self._ref = ref
        self._mu_ref = mu
        self._mu_ref_sq = mu * mu
        self._var_ref = self._filter(ref * ref) - self._mu_ref_sq

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        return apply_along_axes(x, list(self._filters) + [None] * (3 - len(self._filters)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample SSIM ``[B]`` of ``x`` ``[B, C, H, W, D]`` against the reference."""
        if tuple(x.shape) != self.shape:
            raise ValueError(
                f"x must have the reference's shape {self.shape}, got {tuple(x.shape)}"
            )
        return self.padded(pad_to_blocks(x, self.block_size))

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`__call__` for ``x`` already padded to whole blocks (internal fast path)."""
        b = x.shape[0]
        stacked = torch.stack((x, x * x, x * self._ref), dim=0).flatten(0, 1)
        mu, ex2, exy = self._filter(stacked).unflatten(0, (3, b)).unbind(0)
        ssim_map = _ssim_map(
            mu, ex2, exy, self._mu_ref, self._mu_ref_sq, self._var_ref, self.c1, self.c2
        )
        per_block = _block_means(ssim_map, self._out_block)  # [B, C, nblocks]
        if self.nonnegative:
            per_block = torch.relu(per_block)
        return per_block.flatten(1).mean(1)


@fused
def _ssim_map(mu, ex2, exy, mu_ref, mu_ref_sq, var_ref, c1: float, c2: float) -> torch.Tensor:
    """SSIM map from the filtered maps of ``x`` (mean, mean of x², mean of x·ref) and the
    reference's mean, squared mean and variance (all of one shape)."""
    cross = mu_ref * mu
    mu_sq = mu * mu
    var = ex2 - mu_sq
    cov = exy - cross
    cs = (2 * cov + c2) / (var_ref + var + c2)
    return (2 * cross + c1) / (mu_ref_sq + mu_sq + c1) * cs


def _block_means(x: torch.Tensor, out_block: Sequence[int]) -> torch.Tensor:
    b, c, h, w, d = x.shape
    if len(out_block) == 3:
        bh, bw, bd = out_block
        v = x.reshape(b, c, h // bh, bh, w // bw, bw, d // bd, bd)
        return v.mean(dim=(3, 5, 7)).flatten(2)
    bh, bw = out_block
    v = x.reshape(b, c, h // bh, bh, w // bw, bw, d)
    return v.mean(dim=(3, 5)).flatten(2)


def block_ssim(
    x: torch.Tensor, y: torch.Tensor, block_size: int | Sequence[int], **kwargs
) -> torch.Tensor:
    """Per-sample blockwise SSIM ``[B]`` between ``x`` and ``y`` ``[B, C, H, W, D]``.

    Keyword arguments are those of :class:`BlockSSIM`; differentiable in ``y``.
    """
    return BlockSSIM(x, block_size, **kwargs)(y)


def ssim3d(x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """Whole-volume 3D SSIM ``[B]`` (window 3, σ 1.5 by default), pytorch-msssim semantics."""
    return BlockSSIM(x, tuple(x.shape[2:]), **kwargs)(y)
