"""vafa.ops.checks: one rule and one message per kind of user-given value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vafa.ops.checks import numbers_per_channel


@pytest.mark.parametrize(
    ("value", "channels", "expected"),
    [(2, None, 2.0), (np.float32(0.5), 3, 0.5), ([1, 2], None, (1.0, 2.0)), ((0.0, -1.5), 2, (0.0, -1.5))],
)  # fmt: skip
def test_one_number_or_one_per_channel(value, channels, expected):
    got = numbers_per_channel("cval", value, channels)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "channels", "message"),
    [
        (True, None, "cval must be a finite number or one per channel, got True"),
        (math.nan, None, "cval must be a finite number or one per channel, got nan"),
        ([], None, r"cval must be a finite number or one per channel, got \[\]"),
        ([0.0, "1"], None, r"got \[0.0, '1'\]"),
        ([0.0, 1.0], 3, r"cval must be one number or one per input channel \(in_channels=3\), "
                         r"got 2 values: \[0.0, 1.0\]"),
    ],
)  # fmt: skip
def test_anything_else_is_one_line_naming_the_value(value, channels, message):
    with pytest.raises(ValueError, match=message):
        numbers_per_channel("cval", value, channels)
