import math

import pytest
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance

from vafa.ops.losses import one_hot
from vafa.ops.metrics import (
    dice_per_class,
    dice_summary,
    flip_rate,
    hd95_per_class,
    l2,
    linf,
    psnr,
    quantized_to_zero,
    zeroed_fraction,
)


def _maps(seed=0, k=4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (2, 1, 12, 10, 8), generator=g)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.7,
        target,
        torch.randint(0, k, target.shape, generator=g),
    )
    return pred, target


def test_dice_matches_monai():
    pred, target = _maps()
    ours = dice_per_class(pred, target, 4)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    ref = metric(one_hot(pred, 4), one_hot(target, 4))
    torch.testing.assert_close(ours, ref.double())


def test_dice_marks_absent_classes_nan_and_summary_skips_them():
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2] = 1
    pred = target.clone()
    dice = dice_per_class(pred, target, 3)
    assert dice[0, 0] == 1 and dice[0, 1] == 1 and math.isnan(dice[0, 2])
    summary = dice_summary(dice)
    assert summary == {"dice": 1.0, "dice_fg": 1.0}


def test_hd95_matches_monai_and_flags_missing_classes():
    pred, target = _maps(1, 3)
    ours = hd95_per_class(pred, target, 3, spacing=(1.0, 2.0, 3.0))
    ref = compute_hausdorff_distance(
        one_hot(pred, 3),
        one_hot(target, 3),
        include_background=True,
        percentile=95,
        spacing=[1.0, 2.0, 3.0],
    )
    torch.testing.assert_close(ours, ref.double())
    empty_pred = torch.zeros_like(target)
    missing = hd95_per_class(empty_pred, target, 3)
    assert torch.isinf(missing[:, 1:]).all()


def test_perturbation_metrics():
    x = torch.zeros(1, 1, 4, 4, 4)
    y = x.clone()
    y[0, 0, 0, 0, 0] = 0.5
    assert linf(x, y).item() == pytest.approx(0.5)
    assert l2(x, y).item() == pytest.approx(0.5)
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(1 / (0.25 / 64)))
    assert flip_rate(torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)) == 1.0


def test_zeroed_fraction_counts_rounded_coefficients():
    x = torch.full((1, 1, 8, 8, 8), 128 / 255)  # centred DCT is exactly zero
    q = torch.full((1, 1, 1, 8, 8, 8), 10.0)
    assert zeroed_fraction(x, q, 8).item() == 1.0
    x2 = torch.rand(1, 1, 8, 8, 8)
    frac_small_q = zeroed_fraction(x2, torch.full_like(q, 1.0), 8).item()
    frac_big_q = zeroed_fraction(x2, torch.full_like(q, 1000.0), 8).item()
    assert frac_small_q < frac_big_q == 1.0
    with pytest.raises(ValueError, match="q_tables"):
        quantized_to_zero(x2, torch.ones(1, 1, 2, 8, 8, 8), 8)


def test_label_map_shape_checks():
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 3), 2)


def test_predict_labels_equals_argmax_including_ties():
    from vafa.ops.metrics import predict_labels

    g = torch.Generator().manual_seed(3)
    for k in (1, 2, 4, 14):
        logits = torch.randn(2, k, 6, 5, 4, generator=g)
        if k > 1:
            logits[:, 1, :2] = logits[:, 0, :2]  # exact ties: the lower class wins, as argmax
        assert torch.equal(predict_labels(logits), logits.argmax(1, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int16])
def test_predict_labels_equals_argmax_in_other_dtypes_and_many_classes(dtype):
    """Half-precision logits (AMP), integers, and more classes than a uint8 weight can count."""
    from vafa.ops.metrics import predict_labels

    g = torch.Generator().manual_seed(4)
    for k in (3, 300):
        logits = (torch.randn(1, k, 4, 3, 2, generator=g) * 4).to(dtype)
        logits[:, k - 1, 0] = logits[:, 0, 0]  # ties across the whole channel range
        assert torch.equal(predict_labels(logits), logits.argmax(1, keepdim=True))
