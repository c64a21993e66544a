import numpy as np
import pytest
from matplotlib.image import imread

from vafa.report.figures import attack_figure, dct_log_magnitude
from vafa.run.outcome_metrics import OutcomeMetrics


def test_dct_log_magnitude_matches_block_dct():
    import torch

    from vafa.ops.frequency import block_dct

    x = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    lay = dct_log_magnitude(x, 8)
    coeffs = block_dct(torch.from_numpy(x)[None, None] * 255 - 128, 8)
    assert lay.shape == x.shape
    assert lay[0, 0, 0] == pytest.approx(float(np.log1p(abs(coeffs[0, 0, 0, 0, 0, 0]))), rel=1e-5)


def test_attack_figure_writes_a_non_blank_png(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.random((24, 20, 16)).astype(np.float32)
    adv = np.clip(clean + rng.normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    pred = (clean > 0.5).astype(np.int64)
    metrics = OutcomeMetrics.from_dict(
        {
            "class_names": ["background", "organ"],
            "attack": "VAFA",
            "ssim": 0.97,
            "dice_per_class": {
                "clean": {"background": 1.0, "organ": 0.9},
                "adversarial": {"background": 0.9, "organ": 0.4},
            },
            "dice_fg": {"clean": 0.9, "adversarial": 0.4},
        }
    )
    path = attack_figure(clean, adv, pred, 1 - pred, metrics, tmp_path / "figure.png", block_size=8)
    image = imread(path)
    assert image.shape[0] > 400 and image.std() > 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
