import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch_dct
from hypothesis import given, settings
from hypothesis import strategies as st

from vafa.ops.frequency import (
    block_dct,
    block_idct,
    dct_matrix,
    from_blocks,
    layout_dct,
    pad_to_blocks,
    to_blocks,
)


def _reference_blocks(x: np.ndarray, block: tuple[int, ...]) -> list[np.ndarray]:
    """scipy DCT of every block, raster order, after replicate padding (independent reference)."""
    pads = [(0, (-s) % b) for s, b in zip(x.shape, block, strict=False)] + [(0, 0)] * (
        3 - len(block)
    )
    xp = np.pad(x, pads, mode="edge")
    out = []
    if len(block) == 3:
        for i in range(0, xp.shape[0], block[0]):
            for j in range(0, xp.shape[1], block[1]):
                for k in range(0, xp.shape[2], block[2]):
                    cube = xp[i : i + block[0], j : j + block[1], k : k + block[2]]
                    out.append(scipy.fft.dctn(cube, type=2, norm="ortho"))
    else:
        for i in range(0, xp.shape[0], block[0]):
            for j in range(0, xp.shape[1], block[1]):
                for k in range(xp.shape[2]):
                    sq = xp[i : i + block[0], j : j + block[1], k]
                    out.append(scipy.fft.dctn(sq, type=2, norm="ortho"))
    return out


@pytest.mark.parametrize(
    "shape,block",
    [
        ((16, 16, 16), (8, 8, 8)),
        ((10, 13, 7), (4, 5, 3)),
        ((12, 9, 5), (4, 4)),
        ((8, 8, 8), (8, 8, 8)),
    ],
)
def test_block_dct_matches_scipy(shape, block):
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    coeffs = block_dct(x, block)
    ref = np.stack(_reference_blocks(x[0, 0].numpy(), block))
    assert coeffs.shape == (1, 1, *ref.shape)
    np.testing.assert_allclose(coeffs[0, 0].numpy(), ref, rtol=1e-4, atol=1e-10)


def test_block_dct_matches_torch_dct():
    x = torch.rand(2, 3, 16, 24, 8)
    coeffs = block_dct(x, (8, 8, 8))
    blocks = (
        x.view(2, 3, 2, 8, 3, 8, 1, 8).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(2, 3, 6, 8, 8, 8)
    )
    ref = torch_dct.dct_3d(blocks, norm="ortho")
    torch.testing.assert_close(coeffs, ref, rtol=1e-4, atol=1e-4)


def test_dct_matrix_is_orthonormal():
    for n in (1, 3, 8, 32):
        m = dct_matrix(n, dtype=torch.float64)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64))


def test_dct_matrix_is_cached_per_size_and_dtype():
    assert dct_matrix(8) is dct_matrix(8)
    assert dct_matrix(8) is not dct_matrix(8, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)),
    block=st.one_of(
        st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
    ),
    batch=st.integers(1, 2),
)
def test_inverse_and_parseval_on_random_shapes(shape, block, batch):
    x = torch.randn(batch, 2, *shape, dtype=torch.float64)
    coeffs = block_dct(x, block)
    back = block_idct(coeffs, block, shape)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    # Parseval holds on the padded volume (orthonormal transform per block).
    padded = pad_to_blocks(x, block)
    torch.testing.assert_close((coeffs**2).sum(), (padded**2).sum(), rtol=1e-9, atol=1e-9)


def test_layout_and_blocks_round_trip():
    x = torch.randn(1, 1, 8, 12, 4)
    lay = layout_dct(x, (4, 4, 4))
    blocks = to_blocks(lay, (4, 4, 4))
    assert blocks.shape == (1, 1, 6, 4, 4, 4)
    torch.testing.assert_close(from_blocks(blocks, (4, 4, 4), (8, 12, 4)), lay)
    # DC coefficient of a block = mean * sqrt(n) for an orthonormal DCT
    torch.testing.assert_close(blocks[0, 0, 0, 0, 0, 0], x[0, 0, :4, :4, :4].mean() * math.sqrt(64))


def test_padding_replicates_edges():
    x = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2).contiguous()
    padded = pad_to_blocks(x, (4, 4, 4))
    assert padded.shape == (1, 1, 8, 4, 4)
    assert torch.all(padded[0, 0, 5:] == 4.0)


@pytest.mark.parametrize("bad", [0, -2, (8, 0, 8), (8, 8, 8, 8), (8,), 2.5, "8"])
def test_bad_block_sizes_are_refused(bad):
    with pytest.raises((ValueError, TypeError), match="block_size"):
        block_dct(torch.rand(1, 1, 8, 8, 8), bad)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="5 dims"):
        block_dct(torch.rand(8, 8, 8), 4)
    with pytest.raises(TypeError, match="floating point"):
        block_dct(torch.ones(1, 1, 8, 8, 8, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="blocks"):
        block_idct(torch.rand(1, 1, 3, 4, 4, 4), 4, (8, 8, 8))
