"""``keep="last"`` is the published VAFA iterate: a naive re-derivation of the published loop.

The reference below is written from the equations and the published order of work only:
scipy's ``dctn``/``dct`` for the block transforms, one block at a
time in Python loops, the tanh rounding typed from its equation, pytorch-msssim for the SSIM
term, MONAI's DiceCELoss with the published arguments, and the loop "evaluate with α_i, then
update" whose result is the volume of the last step. It shares no code with ``vafa``.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import scipy.fft
import torch
from monai.losses import DiceCELoss
from pytorch_msssim import ssim as msssim_ssim

from vafa.attacks import VAFA, VAFA2D


def _soft_round(x: torch.Tensor, alpha: float) -> torch.Tensor:
    k = math.log(2.0 / alpha - 1.0)
    s = 1.0 / (1.0 - alpha)
    f = torch.floor(x)
    return (s * torch.tanh(k * (x - f - 0.5)) + 1.0) / 2.0 + f


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II as a matrix (rows: frequencies), from scipy."""
    return torch.from_numpy(scipy.fft.dct(np.eye(n), norm="ortho", axis=0)).float()


class PublishedLoop:
    """The published VAFA loop on ``[1, 1, H, W, D]`` volumes whose sides divide by the block."""

    def __init__(self, model, *, block, steps, q_min, q_max, normalize, use_ssim):
        self.model, self.block, self.steps = model, block, steps
        self.q_min, self.q_max = q_min, q_max
        self.normalize, self.use_ssim = normalize, use_ssim
        self.mats = [_dct_matrix(n) for n in block]
        self.loss = DiceCELoss(
            to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6
        )

    def _blocks(self, shape):
        ranges = [range(0, n, b) for n, b in zip(shape, self.block, strict=False)]
        for corner in itertools.product(*ranges):
            yield tuple(slice(c, c + b) for c, b in zip(corner, self.block, strict=False))

    def _slabs(self, x):
        """Yield ``(index, block)`` for the 3D case, or per axial slice for the 2D case."""
        h, w, d = x.shape
        if len(self.block) == 3:
            for sl in self._blocks((h, w, d)):
                yield sl, x[sl]
        else:
            for k in range(d):
                for sl in self._blocks((h, w)):
                    yield (*sl, k), x[(*sl, k)]

    def _idct(self, c: torch.Tensor) -> torch.Tensor:
        out = c
        for axis, m in enumerate(self.mats):  # x = Mᵀ c along every axis
            out = torch.tensordot(m.t(), out.movedim(axis, 0), dims=1).movedim(0, axis)
        return out

    def _volume(self, coeffs, q, alpha, shape):
        out = torch.zeros(shape)
        for (sl, c), t in zip(coeffs, q, strict=True):
            rec = self._idct(_soft_round(c / t, alpha) * t) + 128.0
            out = out.index_put(_grid(sl, shape), rec.reshape(-1))
        if self.normalize == "clip":
            return (out / 255.0).clamp(0.0, 1.0)
        lo = out.amin(dim=(0, 1), keepdim=True)  # every axial (H, W) slice on its own
        hi = out.amax(dim=(0, 1), keepdim=True)
        return (out - lo) / (hi - lo)

    def run(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = image[0, 0] * 255.0
        coeffs = [
            (sl, torch.from_numpy(scipy.fft.dctn(b.double().numpy() - 128.0, norm="ortho")).float())
            for sl, b in self._slabs(x)
        ]
        q = [torch.full(c.shape, float(self.q_max), requires_grad=True) for _, c in coeffs]
        for i in range(self.steps):
            alpha = 0.1 - i * 0.1 / self.steps
            x_adv = self._volume(coeffs, q, alpha, x.shape)[None, None]
            cost = self.loss(self.model(x_adv), labels)
            if self.use_ssim:
                stack = torch.stack([x_adv[0, 0][sl] for sl, _ in coeffs])[:, None]
                ref = torch.stack([image[0, 0][sl] for sl, _ in coeffs])[:, None]
                s = msssim_ssim(
                    stack, ref, data_range=1.0, win_size=3, win_sigma=1.5, nonnegative_ssim=True
                )
                cost = cost - (1.0 - s)
            grads = torch.autograd.grad(cost, q)
            with torch.no_grad():
                for t, g in zip(q, grads, strict=True):
                    t.add_(torch.sign(g)).clamp_(self.q_min, self.q_max)
        return x_adv.detach()  # the volume of the last step, made before the last update


def _grid(sl, shape):
    idx = torch.meshgrid(
        *[torch.arange(s.start, s.stop) if isinstance(s, slice) else torch.tensor([s]) for s in sl],
        indexing="ij",
    )
    return tuple(i.reshape(-1) for i in idx)


@pytest.fixture(scope="module")
def small_case(trained_model, synthetic_data):
    x, y = synthetic_data
    return trained_model, x[:1, :, :16, :16, :16].contiguous(), y[:1, :, :16, :16, :16].contiguous()


@pytest.mark.parametrize("normalize", ["slice", "clip"])
def test_keep_last_is_the_published_iterate_3d(small_case, normalize):
    model, x, y = small_case
    steps, block = 4, (8, 8, 8)
    ref = PublishedLoop(
        model, block=block, steps=steps, q_min=5, q_max=12, normalize=normalize, use_ssim=True
    ).run(x, y)
    ours = VAFA(
        model, steps=steps, q_min=5, q_max=12, block_size=block, normalize=normalize, keep="last"
    ).attack(x, y)
    assert (ours.adversarial - ref).abs().max().item() <= 1e-5
    assert ours.returned_steps == [steps]
    assert [row["returned"] for row in ours.history] == [False] * (steps - 1) + [True]
    assert ours.history[-1]["alpha"] == pytest.approx(0.1 / steps)
    assert not (ours.adversarial == x).all()  # the attack did change the volume


def test_keep_last_is_the_published_iterate_2d(small_case):
    model, x, y = small_case
    steps, block = 3, (8, 8)
    ref = PublishedLoop(
        model, block=block, steps=steps, q_min=5, q_max=15, normalize="slice", use_ssim=False
    ).run(x, y)
    ours = VAFA2D(model, steps=steps, q_min=5, q_max=15, block_size=block, paper=True).attack(x, y)
    assert (ours.adversarial - ref).abs().max().item() <= 1e-5


def test_paper_mode_is_the_published_loop(small_case):
    model, x, y = small_case
    ref = PublishedLoop(
        model, block=(8, 8, 8), steps=4, q_min=5, q_max=12, normalize="slice", use_ssim=True
    ).run(x, y)
    ours = VAFA(model, steps=4, q_max=12, block_size=8, paper=True).attack(x, y)
    assert (ours.adversarial - ref).abs().max().item() <= 1e-5
    assert ours.settings["normalize"] == "slice" and ours.settings["keep"] == "last"


def test_hard_round_is_another_volume_and_marked_in_the_history(small_case):
    """The check has teeth: the hard-rounded table (the old ``"last"``) is a different volume."""
    model, x, y = small_case
    ref = PublishedLoop(
        model, block=(8, 8, 8), steps=3, q_min=5, q_max=12, normalize="clip", use_ssim=True
    ).run(x, y)
    hard = VAFA(
        model,
        steps=3,
        q_min=5,
        q_max=12,
        block_size=8,
        normalize="clip",
        keep="last",
        hard_round=True,
    ).attack(x, y)
    assert (hard.adversarial - ref).abs().max().item() > 1e-3
    assert hard.returned_steps == ["hard"]
    assert [r["step"] for r in hard.history] == [1, 2, 3, "hard"]
    assert [r["returned"] for r in hard.history] == [False, False, False, True]
    assert hard.history[-1]["alpha"] == 0.0


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (VAFA, {"normalize": "clip"}, "normalize='slice'"),
        (VAFA, {"keep": "best"}, "keep='last'"),
        (VAFA, {"q_step": 2.0}, "q_step=1.0"),
        (VAFA, {"hard_round": True}, "hard_round=False"),
        (VAFA, {"use_ssim_loss": False}, "use_ssim_loss=True"),
        (VAFA2D, {"use_ssim_loss": True}, "use_ssim_loss=False"),
    ],
)
def test_paper_refuses_a_setting_it_fixes(small_case, cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(small_case[0], paper=True, **kwargs)


def test_keep_best_picks_the_best_evaluated_step(small_case):
    model, x, y = small_case
    result = VAFA(model, steps=5, q_max=30, block_size=8, keep="best").attack(x, y)
    (step,) = result.returned_steps
    assert step in range(1, 6)
    losses = [row["loss"] for row in result.history]
    assert result.history[step - 1]["loss"] == max(losses)
    assert result.objective.item() == pytest.approx(max(losses), abs=1e-6)
    assert [row["returned"] for row in result.history] == [s == step for s in range(1, 6)]
