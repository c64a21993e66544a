import math

import pytest
import torch

from vafa.ops.quantization import AlphaSchedule, cubic_round, quantize, tanh_round


def _tanh_round_reference(x: float, alpha: float) -> float:
    k = math.log(2 / alpha - 1)
    s = 1 / (1 - alpha)
    f = math.floor(x)
    return (s * math.tanh(k * (x - f - 0.5)) + 1) / 2 + f


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.005])
def test_tanh_round_matches_formula_and_hits_integers(alpha):
    xs = torch.tensor([-3.7, -0.2, 0.0, 0.4, 0.5, 0.6, 2.0, 7.49], dtype=torch.float64)
    got = tanh_round(xs, alpha)
    ref = torch.tensor([_tanh_round_reference(float(v), alpha) for v in xs], dtype=torch.float64)
    torch.testing.assert_close(got, ref)
    # At integer inputs the rounding is exact (s·tanh(k/2) = 1 by construction).
    torch.testing.assert_close(
        tanh_round(torch.tensor([3.0], dtype=torch.float64), alpha),
        torch.tensor([3.0], dtype=torch.float64),
    )


def test_tanh_round_approaches_hard_rounding():
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    x = x[(x - x.floor() - 0.5).abs() > 0.3]  # away from the half-way points (k grows like ln 1/α)
    err = (tanh_round(x, 1e-6) - torch.round(x)).abs().max()
    assert err < 1e-3
    assert torch.equal(tanh_round(x, 0.0), torch.floor(x + 0.5))


def test_cubic_round():
    x = torch.tensor([0.2, 1.5, -2.3], dtype=torch.float64)
    torch.testing.assert_close(cubic_round(x), torch.round(x) + (x - torch.round(x)) ** 3)


@pytest.mark.parametrize("rounding", ["tanh", "cubic"])
def test_quantize_gradients_match_autograd_of_formula(rounding):
    torch.manual_seed(0)
    c = (torch.randn(64, dtype=torch.float64) * 40).requires_grad_(True)
    q = (torch.rand(64, dtype=torch.float64) * 15 + 5).requires_grad_(True)
    torch.autograd.gradcheck(lambda c, q: quantize(c, q, 0.07, rounding), (c, q))
    out = quantize(c, q, 0.07, rounding)
    ref = tanh_round(c / q, 0.07) * q if rounding == "tanh" else cubic_round(c / q) * q
    torch.testing.assert_close(out, ref)


def test_quantize_broadcasts_q_and_reduces_its_gradient():
    c = torch.randn(2, 8, dtype=torch.float64) * 30
    q = torch.full((1, 8), 10.0, dtype=torch.float64, requires_grad=True)
    quantize(c, q, 0.1).sum().backward()
    assert q.grad.shape == (1, 8)


def test_alpha_schedule_is_fresh_and_ends_at_zero():
    sched = AlphaSchedule(steps=20)
    assert sched.alpha(0) == pytest.approx(0.1)
    assert sched.alpha(19) == pytest.approx(0.1 / 20)
    assert sched.alpha(20) == 0.0
    assert sched.alpha(200) == 0.0  # never negative however long it is used
    assert AlphaSchedule(steps=20).alpha(0) == sched.alpha(0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounding"):
        quantize(torch.ones(2), torch.ones(2), 0.1, "floor")
    with pytest.raises(ValueError, match="alpha"):
        quantize(torch.ones(2), torch.ones(2), 1.5)
    with pytest.raises(ValueError, match="steps"):
        AlphaSchedule(steps=0)


@pytest.mark.parametrize("rounding,alpha", [("tanh", 0.05), ("cubic", 0.05), ("tanh", 0.0)])
def test_quantize_scale_and_offset_are_fused_linear_post_processing(rounding, alpha):
    torch.manual_seed(1)
    c = (torch.randn(3, 8, dtype=torch.float64) * 40).requires_grad_(True)
    q = (torch.rand(3, 8, dtype=torch.float64) * 15 + 5).requires_grad_(True)
    offset = torch.randn(3, 8, dtype=torch.float64)
    fused = quantize(c, q, alpha, rounding, scale=1 / 255, offset=offset)
    plain = offset + quantize(c, q, alpha, rounding) / 255
    torch.testing.assert_close(fused, plain)
    if alpha > 0:
        torch.autograd.gradcheck(
            lambda c, q: quantize(c, q, alpha, rounding, scale=0.3, offset=offset), (c, q)
        )
