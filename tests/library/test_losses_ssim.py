import math

import pytest
import torch
from monai.losses import DiceCELoss as MonaiDiceCE
from pytorch_msssim import ssim as msssim

from vafa.ops.frequency import to_blocks
from vafa.ops.losses import DiceCELoss, FrequencyConsistencyLoss, SSIMLoss, one_hot
from vafa.ops.ssim import BlockSSIM, block_ssim, ssim3d


def _reference_block_ssim(x, y, block, win_size=3):
    """pytorch-msssim on the blocks stacked as a batch, averaged per sample."""
    b = x.shape[0]
    xb = to_blocks(x, block).flatten(0, 2).unsqueeze(1)
    yb = to_blocks(y, block).flatten(0, 2).unsqueeze(1)
    per = msssim(
        xb, yb, data_range=1, win_size=win_size, win_sigma=1.5, size_average=False,
        nonnegative_ssim=True,
    )  # fmt: skip
    return per.view(b, -1).mean(1)


@pytest.mark.filterwarnings("ignore:Skipping Gaussian")
@pytest.mark.parametrize("block", [(8, 8, 8), (16, 8, 4), (32, 32, 32), (2, 4, 8)])
def test_block_ssim_matches_pytorch_msssim(block):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(
        block_ssim(x, y, block), _reference_block_ssim(x, y, block), rtol=1e-4, atol=1e-6
    )


@pytest.mark.filterwarnings("ignore:Skipping Gaussian")
@pytest.mark.parametrize(("block", "win"), [((8, 8, 8), 3), ((16, 8, 4), 5), ((16, 16, 2), 3)])
def test_block_ssim_gradient_matches_pytorch_msssim(block, win):
    """The filter's own backward (the adjoint of the tap sums) against autograd through
    pytorch-msssim's convolutions, also with a wider window and an axis left unfiltered."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 16, 16, 16, generator=g, dtype=torch.float64)
    y1 = (
        (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64))
        .clamp(0, 1)
        .requires_grad_()
    )
    y2 = y1.detach().clone().requires_grad_()
    BlockSSIM(x, block, win_size=win)(y1).sum().backward()
    _reference_block_ssim(x, y2, block, win).sum().backward()
    torch.testing.assert_close(y1.grad, y2.grad, rtol=1e-4, atol=1e-8)


def test_whole_volume_ssim_matches_pytorch_msssim():
    x = torch.rand(2, 1, 20, 18, 16, dtype=torch.float64)
    y = (x + 0.05).clamp(0, 1)
    ref = msssim(x, y, data_range=1, win_size=3, size_average=False, nonnegative_ssim=True)
    torch.testing.assert_close(ssim3d(x, y), ref, rtol=1e-4, atol=1e-6)


def test_ssim_identity_and_constant_volumes():
    x = torch.rand(1, 1, 16, 16, 16)
    assert ssim3d(x, x).item() == pytest.approx(1.0, abs=1e-5)
    flat = torch.full((1, 1, 16, 16, 16), 0.5)
    out = block_ssim(flat, flat + 0.0, 8)
    assert torch.isfinite(out).all() and out.item() == pytest.approx(1.0, abs=1e-5)


def test_block_ssim_refuses_other_shapes_and_bad_windows():
    ref = BlockSSIM(torch.rand(1, 1, 8, 8, 8), 4)
    with pytest.raises(ValueError, match="shape"):
        ref(torch.rand(1, 1, 8, 8, 4))
    with pytest.raises(ValueError, match="win_size"):
        BlockSSIM(torch.rand(1, 1, 8, 8, 8), 4, win_size=2)


def test_dice_ce_matches_monai_mean_and_per_sample():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 8, 9, 10, generator=g)
    labels = torch.randint(0, 4, (3, 1, 8, 9, 10), generator=g)
    monai_loss = MonaiDiceCE(
        to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-6
    )
    torch.testing.assert_close(DiceCELoss()(logits, labels), monai_loss(logits, labels))
    per_sample = DiceCELoss(reduction="none")(logits, labels)
    expected = torch.stack([monai_loss(logits[i : i + 1], labels[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(per_sample, expected)


@pytest.mark.parametrize(
    ("k", "reduction", "smooth_nr", "lambdas"),
    [(4, "mean", 0.0, (1.0, 1.0)), (3, "none", 1e-5, (0.7, 1.3)), (2, "mean", 0.0, (1.0, 0.0)),
     (5, "none", 0.0, (0.0, 1.0))],
)  # fmt: skip
def test_dice_ce_gradient_matches_monai(k, reduction, smooth_nr, lambdas):
    """The hand-derived backward against autograd through MONAI's loss (float64; MONAI's own
    float32 one-hot target leaves ~1e-10 between them) and through the same formula on a float64
    one-hot target, with a class absent from the target, both reductions and weights."""
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(2, k, 6, 7, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, k - 1, (2, 1, 6, 7, 5), generator=g)  # class k-1 absent
    monai_loss = MonaiDiceCE(
        to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=smooth_nr,
        smooth_dr=1e-6, lambda_dice=lambdas[0], lambda_ce=lambdas[1],
    )  # fmt: skip
    ours = DiceCELoss(reduction, smooth_nr=smooth_nr, lambda_dice=lambdas[0],
                      lambda_ce=lambdas[1])  # fmt: skip
    upstream = torch.tensor([0.3, -1.7], dtype=torch.float64)

    def grad(fn):
        z = logits.clone().requires_grad_(True)
        out = fn(z)
        total = (out * upstream).sum() if out.dim() else out * 2.5
        return out.detach(), torch.autograd.grad(total, z)[0]

    def monai(z):
        if reduction == "mean":
            return monai_loss(z, labels)
        return torch.stack([monai_loss(z[i : i + 1], labels[i : i + 1]) for i in range(2)])

    value, ours_grad = grad(lambda z: ours(z, labels))
    expected, monai_grad = grad(monai)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(ours_grad, monai_grad, rtol=1e-6, atol=1e-9)
    _, autograd_grad = grad(lambda z: ours(z, one_hot(labels, k, torch.float64)))
    torch.testing.assert_close(ours_grad, autograd_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dice_ce_of_half_logits_is_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, 8, generator=g).to(dtype)
    labels = torch.randint(0, 3, (1, 1, 8, 8, 8), generator=g)
    z = logits.clone().requires_grad_(True)
    loss = DiceCELoss()(z, labels)
    (grad,) = torch.autograd.grad(loss, z)
    ref = logits.float().requires_grad_(True)
    ref_loss = DiceCELoss()(ref, labels)
    (ref_grad,) = torch.autograd.grad(ref_loss, ref)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dice_ce_under_a_callers_autocast_is_the_float32_loss(dtype):
    """MONAI-style loops call the loss inside autocast: its per-class sums (here ~1.3e5, over
    float16's 65504) must not run in half precision."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 64, 64, 64, generator=g) * 4
    labels = torch.randint(0, 2, (1, 1, 64, 64, 64), generator=g)
    expected = DiceCELoss()(logits, labels)
    with torch.autocast("cpu", dtype=dtype):
        loss = DiceCELoss()(logits, labels)
    torch.testing.assert_close(loss, expected)


def test_dice_ce_counts_classes_beyond_float32_integers():
    """A whole CT volume has more than 2**24 voxels of one class; the Dice of equal logits
    against an all-background map is known in closed form: Dice 0.2 and 1 (absent class),
    cross-entropy ln 2."""
    n = 2**24 + 2**20
    logits = torch.zeros(1, 2, n, 1, 1)
    labels = torch.zeros(1, 1, n, 1, 1, dtype=torch.long)
    assert DiceCELoss()(logits, labels).item() == pytest.approx(0.6 + math.log(2), rel=1e-6)


def test_ssim_loss_is_one_minus_ssim():
    x = torch.rand(1, 1, 16, 16, 16)
    y = (x * 0.9).clamp(0, 1)
    torch.testing.assert_close(SSIMLoss(8)(x, y), 1 - block_ssim(x, y, 8).mean())


def test_frequency_consistency_loss_matches_torch_dct():
    import torch_dct

    a = torch.randn(2, 3, 8, 6, 4)
    b = torch.randn(2, 3, 8, 6, 4)
    ref = (torch_dct.dct_3d(a, norm="ortho") - torch_dct.dct_3d(b, norm="ortho")).abs().mean()
    torch.testing.assert_close(FrequencyConsistencyLoss()(a, b), ref, rtol=1e-4, atol=1e-5)
    assert FrequencyConsistencyLoss()(a, a).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        FrequencyConsistencyLoss()(a, b[:, :, :4])
