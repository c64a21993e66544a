"""Perturbation band analysis (vafa.run.band_analysis) against independent re-derivations:
scipy's orthonormal DCT per block with a numpy band mask written from the definition in the
vafa.ops.bands docstring, and MONAI's sliding window + DiceMetric on the filtered volumes."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn

from vafa.run.band_analysis import (
    ANALYSIS_BANDS,
    analyse_bands,
    analyse_outcome,
    band_energies,
    band_split,
)


def numpy_band(sizes, band):
    """r = mean over axes of u / (n − 1) (0 for n = 1); thirds: low < 1/3 ≤ middle < 2/3 ≤ high."""
    grids = np.meshgrid(*[np.arange(n) / max(n - 1, 1) for n in sizes], indexing="ij")
    r = sum(grids) / len(sizes)
    third = {"low": r < 1 / 3 - 1e-12, "high": r >= 2 / 3 - 1e-12}
    third["middle"] = ~third["low"] & ~third["high"]
    return third[band]


def scipy_split(delta, b):
    """Per block: zero-pad, dctn(norm="ortho"), mask, idctn; energies from the coefficients."""
    h, w, d = delta.shape
    padded = np.zeros([math.ceil(n / b) * b for n in delta.shape])
    padded[:h, :w, :d] = delta
    parts = {band: np.zeros_like(padded) for band in ("low", "middle", "high")}
    energy = dict.fromkeys(parts, 0.0)
    ranges = [range(0, n, b) for n in padded.shape]
    for i, j, k in itertools.product(*ranges):
        block = (slice(i, i + b), slice(j, j + b), slice(k, k + b))
        coeffs = dctn(padded[block], norm="ortho")
        for band in parts:
            mask = numpy_band((b, b, b), band)
            energy[band] += float((coeffs[mask] ** 2).sum())
            parts[band][block] = idctn(np.where(mask, coeffs, 0.0), norm="ortho")
    return {band: p[:h, :w, :d] for band, p in parts.items()}, energy


@pytest.mark.parametrize("shape,block", [((20, 18, 12), 8), ((16, 16, 16), 8), ((13, 9, 7), 4)])
def test_energies_and_split_match_an_independent_scipy_rederivation(shape, block):
    rng = np.random.default_rng(0)
    delta = rng.normal(0, 0.02, shape) * (rng.random(shape) < 0.5)
    tensor = torch.from_numpy(delta)[None, None]
    parts, energy = scipy_split(delta, block)
    ours = band_split(tensor, block)
    ours_energy = band_energies(tensor, block)
    for band in ("low", "middle", "high"):
        np.testing.assert_allclose(ours[band][0, 0].numpy(), parts[band], atol=1e-12)
        assert ours_energy[band] == pytest.approx(energy[band], rel=1e-10)
    # Parseval with the pad: the band energies sum to the plain sum of squares of δ
    total = float((delta**2).sum())
    assert ours_energy["all"] == pytest.approx(total, rel=1e-12)
    assert sum(ours_energy[b] for b in ("low", "middle", "high")) == pytest.approx(total, rel=1e-10)
    # the three filtered perturbations add up to δ
    summed = sum(ours[b] for b in ("low", "middle", "high"))
    np.testing.assert_allclose(summed[0, 0].numpy(), delta, atol=1e-12)
    assert all(float(ours[b].abs().max()) > 0 for b in ("low", "middle", "high"))


def test_a_single_band_perturbation_lands_in_that_band_only():
    """δ made of high-band coefficients in one 8³ block: all its energy is 'high'."""
    rng = np.random.default_rng(1)
    coeffs = np.where(numpy_band((8, 8, 8), "high"), rng.normal(size=(8, 8, 8)), 0.0)
    delta = np.zeros((16, 8, 8))
    delta[8:] = idctn(coeffs, norm="ortho")
    energy = band_energies(torch.from_numpy(delta)[None, None], 8)
    assert energy["high"] == pytest.approx(float((coeffs**2).sum()), rel=1e-12)
    assert energy["low"] < 1e-20 and energy["middle"] < 1e-20


def _monai_fg_dice(model, volume01, reference, classes, roi):
    """Independent: MONAI sliding_window_inference (overlap 0.5) + DiceMetric without the
    background, ignoring classes absent from the reference."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    with torch.no_grad():
        logits = sliding_window_inference(volume01, roi, 1, model, overlap=0.5)
    pred = logits.argmax(1, keepdim=True)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    values = metric(one_hot(pred, classes), one_hot(reference, classes))
    return float(torch.nanmean(values.as_tensor() if hasattr(values, "as_tensor") else values))


def test_dice_per_band_equals_monai_on_the_filtered_volumes(trained_model, synthetic_data):
    from vafa.attacks import build_attack

    images, labels = synthetic_data
    x, y = images[:1], labels[:1]
    adversarial = build_attack("pgd", trained_model, eps=16, steps=3, seed=0)(x, y).adversarial
    analysis = analyse_bands(
        trained_model, x, adversarial, y, num_classes=3, roi_size=(32, 32, 32), block_size=8
    )
    assert [row.band for row in analysis.rows] == list(ANALYSIS_BANDS)
    assert analysis.reference == "labels" and not analysis.cancelled
    delta = (adversarial - x)[0, 0].double().numpy()
    parts, _ = scipy_split(delta, 8)
    parts["all"] = delta
    clean = _monai_fg_dice(trained_model, x, y, 3, (32, 32, 32))
    assert analysis.dice_fg_clean == pytest.approx(clean, abs=1e-6)  # MONAI: float32
    for band in ANALYSIS_BANDS:
        filtered = (x + torch.from_numpy(parts[band]).float()[None, None]).clamp(0, 1)
        expected = _monai_fg_dice(trained_model, filtered, y, 3, (32, 32, 32))
        row = analysis.row(band)
        assert row.dice_fg == pytest.approx(expected, abs=1e-6), band
        assert row.dice_fg_drop == pytest.approx(clean - expected, abs=1e-6)  # MONAI: float32
    assert analysis.row("all").dice_fg < clean  # the attack worked on this tiny model
    fractions = [analysis.row(b).energy_fraction for b in ("low", "middle", "high")]
    assert sum(fractions) == pytest.approx(1.0) and analysis.row("all").energy_fraction == 1.0
    coefficient = [analysis.row(b).coefficient_fraction for b in ("low", "middle", "high")]
    assert coefficient == pytest.approx(
        [numpy_band((8,) * 3, b).mean() for b in parts if b != "all"]
    )


def test_outcome_analysis_agrees_with_the_pipeline_metrics(trained_model):
    """The 'all' band re-evaluates the attack itself: same Dice as run_attack's metrics."""
    from factories import tiny_card
    from monai.data import create_test_image_3d

    from vafa.io.volume import Volume
    from vafa.run.pipeline import run_attack

    card = tiny_card(
        roi=32,
        kwargs={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0},
        intensity={"type": "ct_window", "a_min": 0.0, "a_max": 1.0},
    )
    img, _ = create_test_image_3d(40, 36, 20, num_objs=5, rad_max=8, num_seg_classes=2,
                                  noise_max=0.2, random_state=np.random.RandomState(3))  # fmt: skip
    image = Volume(np.clip(img, 0, 1).astype(np.float32), np.eye(4))
    outcome = run_attack(trained_model, card, image, attack="pgd",
                         options={"eps": 8, "steps": 2}, seed=0)  # fmt: skip
    analysis = analyse_outcome(trained_model, outcome, block_size=8)
    metrics = outcome.metrics
    assert analysis.reference == "clean_prediction" and analysis.dice_fg_clean == 1.0
    adversarial_dice = metrics.dice_fg.adversarial
    assert analysis.row("all").dice_fg == pytest.approx(adversarial_dice, abs=1e-12)
    assert analysis.row("all").energy == pytest.approx(
        float(((outcome.adversarial01 - outcome.model_input.tensor).double() ** 2).sum()),
        rel=1e-9,
    )


def test_callback_cancels_between_bands_and_bad_pairs_are_named(trained_model):
    x = torch.rand(1, 1, 16, 16, 16)
    adversarial = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    seen = []

    def stop_at_middle(band):
        seen.append(band)
        return band != "middle"

    analysis = analyse_bands(
        trained_model, x, adversarial, num_classes=3, roi_size=16, block_size=8,
        callback=stop_at_middle,
    )  # fmt: skip
    assert seen == ["clean", "all", "low", "middle"] and analysis.cancelled
    assert analysis.row("low").dice_fg is not None and analysis.row("middle").dice_fg is None
    assert analysis.row("high").energy > 0  # energies are computed before any evaluation
    with pytest.raises(ValueError, match=r"same shape.*\(1, 1, 16, 16, 16\).*\(1, 1, 8, 8, 8\)"):
        analyse_bands(trained_model, x, x[..., :8, :8, :8], num_classes=3, roi_size=16)
    with pytest.raises(ValueError, match="reference must be a"):
        analyse_bands(trained_model, x, x, torch.zeros(1, 1, 8, 8, 8), num_classes=3, roi_size=16)
    for names in ("CT", ("CT", "PET")):  # one name per input channel, or none
        with pytest.raises(ValueError, match="channel_names must name the 1 input channel"):
            analyse_bands(trained_model, x, x, num_classes=3, roi_size=16, channel_names=names)
    with pytest.raises(ValueError, match="block_size must be 3D"):
        band_energies(x, (8, 8))
