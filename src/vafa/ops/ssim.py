"""Fast blockwise SSIM with pytorch-msssim semantics.

SSIM is computed independently in every ``h×w×d`` block (or ``h×w`` square of each axial slice),
as if the blocks were stacked as a batch and given to ``pytorch_msssim.ssim(..., win_size=3,
win_sigma=1.5, data_range=1, nonnegative_ssim=True, size_average=False)``: a separable Gaussian
window with *valid* filtering inside each block (axes shorter than the window are not filtered),
constants ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²``, the SSIM map averaged per block and channel,
negative values clamped to 0 per block, then averaged.

Filtering is done tap by tap along each axis inside every block (a few fused multiply-adds over
strided views, with the adjoint as its own backward: no convolution, no banded matrix) and the
statistics of the reference volume are computed once, so one evaluation costs three filtered
maps instead of five convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from vafa.ops.frequency import normalize_block_size, pad_to_blocks

__all__ = ["BlockSSIM", "block_ssim", "gaussian_window", "ssim3d"]


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1D Gaussian window ``[size]`` centred on ``size // 2`` (pytorch-msssim's)."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def _taps(win_size: int, sigma: float) -> tuple[float, ...]:
    return tuple(gaussian_window(win_size, sigma).tolist())


def _valid_filter(x: torch.Tensor, taps: Sequence[float], block: int, dim: int) -> torch.Tensor:
    """Valid filtering of every ``block`` consecutive samples along axis ``dim`` with ``taps``:
    ``[…, n·b, …] → […, n·(b − w + 1), …]``."""
    v = x.unflatten(dim, (x.shape[dim] // block, block))
    m = block - len(taps) + 1
    out = v.narrow(dim + 1, 0, m) * taps[0]
    for k, tap in enumerate(taps[1:], 1):
        out.add_(v.narrow(dim + 1, k, m), alpha=tap)
    return out.flatten(dim, dim + 1)


def _valid_filter_adjoint(
    g: torch.Tensor, taps: Sequence[float], block: int, dim: int
) -> torch.Tensor:
    """The adjoint of :func:`_valid_filter`: each tap's share added back at its offset."""
    m = block - len(taps) + 1
    g = g.unflatten(dim, (g.shape[dim] // m, m))
    shape = list(g.shape)
    shape[dim + 1] = block
    out = g.new_zeros(shape)
    for k, tap in enumerate(taps):
        out.narrow(dim + 1, k, m).add_(g, alpha=tap)
    return out.flatten(dim, dim + 1)


def _filtered_side(block: int, win_size: int) -> int:
    """A block side after valid filtering; sides shorter than the window are left unfiltered
    (as pytorch-msssim does)."""
    return block if block < win_size else block - win_size + 1


def _filtered(x: torch.Tensor, taps: Sequence[float], blocks: Sequence[int], adjoint=False):
    """:func:`_valid_filter` along every spatial axis whose block is at least the window (or
    the adjoint of that, in reverse order)."""
    axes = [(b, axis + 2) for axis, b in enumerate(blocks) if _filtered_side(b, len(taps)) != b]
    for block, dim in reversed(axes) if adjoint else axes:
        x = (_valid_filter_adjoint if adjoint else _valid_filter)(x, taps, block, dim)
    return x


class _Moments(torch.autograd.Function):
    """The filtered maps ``(μ, E[x²], E[x·ref])`` of ``x`` ``[B, C, H, W, D]`` (padded to
    whole blocks) against ``ref``; the backward is ``F*(g_μ) + 2x·F*(g_x²) + ref·F*(g_x·ref)``
    with ``F*`` the filter's adjoint."""

    @staticmethod
    def forward(ctx, x, ref, taps: tuple[float, ...], blocks: tuple[int, ...]):
        ctx.taps, ctx.blocks = taps, blocks
        ctx.save_for_backward(x, ref)
        stacked = x.new_empty((3, *x.shape))
        stacked[0].copy_(x)
        torch.mul(x, x, out=stacked[1])
        torch.mul(x, ref, out=stacked[2])
        filtered = _filtered(stacked.flatten(0, 1), taps, blocks)
        return filtered.unflatten(0, (3, x.shape[0])).unbind(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mu, g_ex2, g_exy):  # an unused output's gradient arrives as zeros
        x, ref = ctx.saved_tensors
        a_mu, a_ex2, a_exy = (
            _filtered(g, ctx.taps, ctx.blocks, adjoint=True) for g in (g_mu, g_ex2, g_exy)
        )
        return a_mu.addcmul_(a_ex2, x, value=2.0).addcmul_(a_exy, ref), None, None, None


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
        self._taps = _taps(win_size, float(sigma))
        self._out_block = [_filtered_side(b, win_size) for b in self.block_size]
        ref = pad_to_blocks(reference.detach(), self.block_size)
        mu = self._filter(ref)
        self._ref = ref
        self._mu_ref = mu
        self._mu_ref_sq = mu * mu
        self._var_ref = self._filter(ref * ref) - self._mu_ref_sq

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        return _filtered(x, self._taps, self.block_size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample SSIM ``[B]`` of ``x`` ``[B, C, H, W, D]`` against the reference."""
        if tuple(x.shape) != self.shape:
            raise ValueError(
                f"x must have the reference's shape {self.shape}, got {tuple(x.shape)}"
            )
        return self.padded(pad_to_blocks(x, self.block_size))

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`__call__` for ``x`` already padded to whole blocks (internal fast path)."""
        mu, ex2, exy = _Moments.apply(x, self._ref, self._taps, self.block_size)
        ssim_map = _SSIMMap.apply(
            mu, ex2, exy, self._mu_ref, self._mu_ref_sq, self._var_ref, self.c1, self.c2
        )
        per_block = _block_means(ssim_map, self._out_block)  # [B, C, nblocks]
        if self.nonnegative:
            per_block = torch.relu(per_block)
        return per_block.flatten(1).mean(1)


def _ssim_terms(mu, ex2, exy, mu_ref, mu_ref_sq, var_ref, c1: float, c2: float):
    """``(luminance, contrast·structure, den1, den2)`` maps from the filtered maps of ``x``
    (mean, mean of x², mean of x·ref) and the reference's mean, squared mean and variance (all
    of one shape); ``den1 = μ² + μ_ref² + C1`` and ``den2 = σ² + σ_ref² + C2`` are the two
    denominators."""
    cross2 = torch.mul(mu_ref, mu).mul_(2.0)
    mu_sq = mu * mu
    den1 = torch.add(mu_sq, mu_ref_sq).add_(c1)
    lum = torch.add(cross2, c1).div_(den1)
    den2 = torch.sub(ex2, mu_sq).add_(var_ref).add_(c2)
    cs = torch.mul(exy, 2.0).sub_(cross2).add_(c2).div_(den2)
    return lum, cs, den1, den2


class _SSIMMap(torch.autograd.Function):
    """The SSIM map with a hand-derived backward (with ``w`` the incoming gradient,
    ``i = w / den2``): ``∂/∂E[x·ref] = 2·lum·i``, ``∂/∂E[x²] = −lum·cs·i`` and
    ``∂/∂μ = 2w·cs·(μ_ref − lum·μ)/den1 − 2μ·∂/∂E[x²] − μ_ref·∂/∂E[x·ref]``: 14 passes over
    the maps where autograd's backward of the formula makes about 25."""

    @staticmethod
    def forward(ctx, mu, ex2, exy, mu_ref, mu_ref_sq, var_ref, c1: float, c2: float):
        lum, cs, den1, den2 = _ssim_terms(mu, ex2, exy, mu_ref, mu_ref_sq, var_ref, c1, c2)
        ctx.save_for_backward(mu, mu_ref, lum, cs, den1, den2)
        return lum * cs

    @staticmethod
    @once_differentiable  # the saved terms carry no graph: no second derivatives
    def backward(ctx, grad):
        mu, mu_ref, lum, cs, den1, den2 = ctx.saved_tensors
        inv2 = grad / den2
        g_exy = torch.mul(lum, inv2).mul_(2.0)
        g_ex2 = torch.mul(lum, cs).mul_(inv2).neg_()
        g_mu = torch.mul(lum, mu).sub_(mu_ref).mul_(cs).mul_(grad).div_(den1).mul_(-2.0)
        g_mu.addcmul_(mu, g_ex2, value=-2.0).addcmul_(mu_ref, g_exy, value=-1.0)
        return g_mu, g_ex2, g_exy, None, None, None, None, None


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
