"""The DCT band definition (vafa.ops.bands) against a naive per-index re-derivation."""

import itertools

import pytest
import torch
from factories import band_of

from vafa.ops.bands import BANDS, band_mask, check_band


@pytest.mark.parametrize("sizes", [(8, 8, 8), (4, 6, 1), (7, 7), (32, 32, 32)])
def test_masks_match_naive_definition_and_partition_the_block(sizes):
    masks = {band: band_mask(sizes, band) for band in BANDS}
    assert all(m.shape == torch.Size(sizes) and m.dtype == torch.bool for m in masks.values())
    assert bool(masks["all"].all())
    total = masks["low"].int() + masks["middle"].int() + masks["high"].int()
    assert bool((total == 1).all()), "low/middle/high must partition the block"
    step = max(1, sizes[0] // 8)  # keep the naive loop small for 32³
    for index in itertools.product(*(range(0, n, step if n > 8 else 1) for n in sizes)):
        expected = band_of(index, sizes)
        got = [b for b in ("low", "middle", "high") if bool(masks[b][index])]
        assert got == [expected], (index, got, expected)


def test_dc_is_low_and_the_last_coefficient_is_high():
    assert bool(band_mask((8, 8, 8), "low")[0, 0, 0])
    assert bool(band_mask((8, 8, 8), "high")[7, 7, 7])


@pytest.mark.parametrize("bad", ["mid", "", None, 3])
def test_unknown_band_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="band must be one of all, low, middle, high"):
        check_band(bad)
    with pytest.raises(ValueError, match="band must be one of"):
        band_mask((8, 8, 8), bad)
