"""SegPGD and CosPGD: their losses against naive re-derivations from the papers' equations,
and the attacks end to end (L∞ bound, damage, reachable by name and from the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from vafa.attacks import CosPGD, SegPGD, build_attack
from vafa.cli import build_parser


def _problem(seed=0, shape=(2, 3, 4, 4, 3)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape).astype(np.float64)
    target = rng.integers(0, shape[1], size=(shape[0], 1, *shape[2:]))
    return logits, target


def _naive_ce(logits, target):
    """Per-voxel cross-entropy, one voxel at a time."""
    b = logits.shape[0]
    out = np.zeros((b, *logits.shape[2:]))
    for index in np.ndindex(*out.shape):
        i, rest = index[0], index[1:]
        z = logits[(i, slice(None), *rest)]
        out[index] = -log_softmax(z)[target[(i, 0, *rest)]]
    return out


@pytest.mark.parametrize("step", [0, 1, 3, 4])
def test_segpgd_loss_is_the_papers_lambda_schedule(step):
    steps = 4
    logits, target = _problem()
    ce = _naive_ce(logits, target)
    correct = logits.argmax(axis=1) == target[:, 0]
    lam = step / (2 * steps)  # λ_t = (t − 1) / (2T), t = step + 1
    expected = ((1 - lam) * ce * correct + lam * ce * ~correct).reshape(2, -1).mean(axis=1)
    attack = SegPGD(torch.nn.Identity(), steps=steps)
    got = attack.segmentation_loss(torch.from_numpy(logits), torch.from_numpy(target), step)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_cospgd_loss_weights_ce_by_the_cosine_of_prediction_and_target():
    logits, target = _problem(1)
    ce = _naive_ce(logits, target)
    p = softmax(logits, axis=1)
    p_target = np.take_along_axis(p, target, axis=1)[:, 0]
    cosine = p_target / np.linalg.norm(p, axis=1)  # ⟨p, onehot⟩ / (|p|·1)
    expected = (cosine * ce).reshape(2, -1).mean(axis=1)
    attack = CosPGD(torch.nn.Identity(), steps=3)
    z = torch.from_numpy(logits).requires_grad_(True)
    got = attack.segmentation_loss(z, torch.from_numpy(target), 0)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5)
    # the weight is a constant of the gradient: d/dz = cos · dCE/dz
    got.sum().backward()
    onehot = np.eye(logits.shape[1])[target[:, 0]].transpose(0, 4, 1, 2, 3)
    n = np.prod(logits.shape[2:])
    expected_grad = cosine[:, None] * (p - onehot) / n
    np.testing.assert_allclose(z.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["segpgd", "cospgd"])
def test_segmentation_attacks_stay_in_the_ball_and_hurt(name, trained_model, synthetic_data):
    images, labels = synthetic_data
    attack = build_attack(name, trained_model, eps=8, alpha=0.01, steps=5, seed=0)
    result = attack(images, labels)
    assert (result.adversarial - images).abs().max() <= 8 / 255 + 1e-6
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    clean, adversarial = result.history[0]["dice"], result.history[-1]["dice"]
    assert adversarial < clean
    assert result.settings["attack"] == attack.name and len(result.history) == 6  # 5 + final


def test_cli_and_schema_offer_them():
    args = build_parser().parse_args(
        ["attack", "x.nii.gz", "--model", "demo", "--attack", "cospgd", "--eps", "8"]
    )
    assert args.attack == "cospgd" and args.eps == 8.0
    with pytest.raises(ValueError, match="eps must be >= 0"):
        build_attack("segpgd", torch.nn.Identity(), eps=-1.0)
