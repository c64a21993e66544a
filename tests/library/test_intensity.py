"""Tests for vafa.io.intensity: windows, percentile scaling, exact inverse, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vafa.io.intensity import CTWindow, IntensityMapping, PercentileScaling, mapping_from_dict


@pytest.fixture
def hu() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1100, 1500, size=(9, 8, 7)).astype(np.float32)


def test_window_forward_matches_numpy_reference(hu):
    out = CTWindow(-175, 250).forward(hu)
    expected = np.clip((hu.astype(np.float64) + 175.0) / 425.0, 0.0, 1.0)
    assert out.dtype == np.float32
    assert out.shape == hu.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_window_forward_does_not_mutate_input(hu):
    before = hu.copy()
    CTWindow(-175, 250).forward(hu)
    np.testing.assert_array_equal(hu, before)


def test_window_forward_accepts_integer_arrays():
    out = CTWindow(0, 100).forward(np.array([[[-5, 0, 25, 100, 200]]], dtype=np.int16))
    np.testing.assert_array_equal(out, np.array([[[0, 0, 0.25, 1, 1]]], dtype=np.float32))


def test_inverse_keeps_untouched_saturated_voxels(hu):
    window = CTWindow(-175, 250)
    back = window.inverse(window.forward(hu), hu)
    assert back.dtype == np.float32
    outside = (hu < -175) | (hu > 250)
    assert outside.sum() > 50  # the fixture really has saturated voxels
    np.testing.assert_array_equal(back[outside], hu[outside])
    np.testing.assert_allclose(back[~outside], hu[~outside], rtol=0, atol=1e-3)


def test_inverse_maps_moved_voxels_linearly():
    window = CTWindow(-100, 300)
    original = np.array([-1000.0, -1000.0, 900.0, 900.0, 50.0, 50.0]).reshape(1, 2, 3)
    mapped = np.array([0.0, 0.25, 1.0, 0.5, 0.0, 1.0]).reshape(1, 2, 3)
    back = window.inverse(mapped, original)
    # untouched below-window, moved, untouched above-window, moved, inside-window at both bounds
    expected = np.array([-1000.0, 0.0, 900.0, 100.0, -100.0, 300.0]).reshape(1, 2, 3)
    np.testing.assert_array_equal(back, expected.astype(np.float32))


def test_inverse_below_window_pushed_to_top_is_not_kept():
    # a voxel below the window that the attack moved to exactly 1 is not "untouched"
    back = CTWindow(0, 10).inverse(np.array([1.0, 0.0]), np.array([-50.0, 50.0]))
    np.testing.assert_array_equal(back, np.array([10.0, 0.0], dtype=np.float32))


def test_remapping_inverse_gives_model_input_back(hu):
    window = CTWindow(-175, 250)
    rng = np.random.default_rng(1)
    adversarial = np.clip(window.forward(hu) + rng.normal(0, 0.05, hu.shape), 0, 1)
    adversarial = adversarial.astype(np.float32)
    adversarial[0] = window.forward(hu)[0]  # a slab the attack did not touch
    exported = window.inverse(adversarial, hu)
    np.testing.assert_allclose(window.forward(exported), adversarial, rtol=0, atol=1e-6)


def test_inverse_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        CTWindow(0, 1).inverse(np.zeros((2, 2)), np.zeros((2, 3)))


def test_numpy_only():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"array must be a numpy\.ndarray, got Tensor"):
        CTWindow(0, 1).forward(torch.zeros(3))


@pytest.mark.parametrize(
    ("a_min", "a_max", "error", "pattern"),
    [
        (250, -175, ValueError, "a_min must be < a_max"),
        (5, 5, ValueError, "a_min must be < a_max"),
        (float("nan"), 1, ValueError, "a_min must be finite"),
        (0, float("inf"), ValueError, "a_max must be finite"),
        ("0", 1, TypeError, "a_min must be a real number"),
        (True, 2, TypeError, "a_min must be a real number"),
    ],
)
def test_window_validation(a_min, a_max, error, pattern):
    with pytest.raises(error, match=pattern):
        CTWindow(a_min, a_max)


def test_percentile_fit_uses_numpy_percentiles(hu):
    window = PercentileScaling(2, 98).fit(hu)
    low, high = np.percentile(hu, [2, 98])
    assert window == CTWindow(float(low), float(high))
    expected = np.clip((hu.astype(np.float64) - low) / (high - low), 0, 1)
    np.testing.assert_allclose(PercentileScaling(2, 98).forward(hu), expected, atol=1e-6)


def test_percentile_defaults_and_inverse(hu):
    scaling = PercentileScaling()
    assert (scaling.p_low, scaling.p_high) == (0.5, 99.5)
    back = scaling.inverse(scaling.forward(hu), hu)
    np.testing.assert_allclose(back, hu, rtol=0, atol=1e-3)


def test_percentile_constant_volume_is_an_error():
    with pytest.raises(ValueError, match="constant volume"):
        PercentileScaling().forward(np.full((3, 3, 3), 7.0))


@pytest.mark.parametrize(("p_low", "p_high"), [(-1, 50), (50, 50), (60, 40), (0, 100.5)])
def test_percentile_validation(p_low, p_high):
    with pytest.raises(ValueError, match="0 <= p_low < p_high <= 100"):
        PercentileScaling(p_low, p_high)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "ct_window", "a_min": -175, "a_max": 250}, CTWindow(-175.0, 250.0)),
        ({"type": "percentile", "p_low": 0.5, "p_high": 99.5}, PercentileScaling(0.5, 99.5)),
        ({"type": "percentile"}, PercentileScaling(0.5, 99.5)),
        ({"type": "percentile", "p_high": 95}, PercentileScaling(0.5, 95.0)),
    ],
)
def test_from_dict(data, expected):
    mapping = mapping_from_dict(data)
    assert isinstance(mapping, IntensityMapping)
    assert mapping == expected


@pytest.mark.parametrize("mapping", [CTWindow(-175, 250), PercentileScaling(1, 99)])
def test_to_dict_json_round_trip(mapping):
    text = json.dumps(mapping.to_dict())
    assert mapping_from_dict(json.loads(text)) == mapping


def test_to_dict_exact_form():
    assert CTWindow(-175, 250).to_dict() == {"type": "ct_window", "a_min": -175, "a_max": 250}
    assert PercentileScaling().to_dict() == {"type": "percentile", "p_low": 0.5, "p_high": 99.5}


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (
            {"type": "ct_windw", "a_min": 0, "a_max": 1},
            "type must be one of .*did you mean 'ct_window'",
        ),
        (
            {"type": "histogram"},
            r"type must be one of \['ct_window', 'percentile', 'zscore'\], got 'histogram'$",
        ),
        ({"type": "zscore", "k": 0}, "k must be finite and > 0"),
        ({"type": "ct_window", "a_min": 0, "a_max": 1, "zero_to": 2}, "zero_to must be in"),
        ({"type": "ct_window", "a_min": 0, "a_maxx": 1}, "'a_maxx'.*did you mean 'a_max'"),
        (
            {"type": "percentile", "window": 3},
            "field 'window' is not allowed for type 'percentile'",
        ),
        ({"type": "ct_window", "a_min": 0}, "field 'a_max' is required"),
        ({"a_min": 0, "a_max": 1}, "must have a 'type' field"),
        ({"type": "ct_window", "a_min": 1, "a_max": 0}, "a_min must be < a_max"),
    ],
)
def test_from_dict_errors(data, pattern):
    with pytest.raises(ValueError, match=pattern):
        mapping_from_dict(data)


def test_from_dict_rejects_non_mapping():
    with pytest.raises(TypeError, match="must be a dict, got list"):
        mapping_from_dict([("type", "ct_window")])


def test_zscore_window_maps_x_to_a_fixed_z_score():
    """x in [0, 1] is the z-score (2x − 1)·k for every volume (the first layer of z-score
    models), and with nonzero only nonzero voxels count while zeros stay at z = 0."""
    from vafa.io.intensity import ZScoreWindow

    rng = np.random.default_rng(0)
    for mean, std in ((0.0, 1.0), (300.0, 40.0)):
        array = rng.normal(mean, std, size=(20, 20, 20))
        x = ZScoreWindow(k=5).forward(array)
        z = (array - array.mean()) / array.std()
        np.testing.assert_allclose((2 * x - 1) * 5, z, atol=1e-4)
    array = rng.normal(300, 40, size=(20, 20, 20))
    array[:5] = 0
    mapping = ZScoreWindow(k=6, nonzero=True)
    x = mapping.forward(array)
    inside = array != 0
    z = (array[inside] - array[inside].mean()) / array[inside].std()
    np.testing.assert_allclose((2 * x[inside] - 1) * 6, z, atol=1e-4)
    assert np.all(x[~inside] == 0.5)
    np.testing.assert_array_equal(mapping.inverse(x, array)[~inside], 0)  # zeros come back
    assert mapping_from_dict(mapping.to_dict()) == mapping
    window = mapping.fit(array)
    assert mapping_from_dict(window.to_dict()) == window and window.zero_to == 0.5
    with pytest.raises(ValueError, match="non-constant"):
        ZScoreWindow().fit(np.ones((4, 4, 4)))
