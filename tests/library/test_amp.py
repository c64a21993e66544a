"""Mixed precision of the model passes (``vafa.ops.amp``, ``amp=`` of the pipeline, ``--amp``),
exercised on the CPU (bf16 and fp16 autocast both run there)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import noise_volume, save_tiny_model

from vafa.cli import main
from vafa.io.volume import save_volume
from vafa.ops.amp import AutocastModel, with_amp
from vafa.ops.losses import DiceCELoss
from vafa.run.pipeline import evaluate, run_attack


class _Dtypes:
    """Records the output dtype of every Conv3d of a model (forward hooks)."""

    def __init__(self, model):
        self.seen: list[torch.dtype] = []
        self.hooks = [
            m.register_forward_hook(lambda _m, _i, out: self.seen.append(out.dtype))
            for m in model.modules()
            if isinstance(m, torch.nn.Conv3d)
        ]
        assert self.hooks

    def close(self):
        for h in self.hooks:
            h.remove()


def test_with_amp_modes_and_errors(model):
    assert with_amp(model, "off") is model
    wrapped = with_amp(model, "bf16")
    assert isinstance(wrapped, AutocastModel) and wrapped.model is model
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    again = with_amp(wrapped, "fp16")  # not wrapped twice
    assert again.model is model and again.dtype == torch.float16
    assert with_amp(wrapped, "off") is wrapped
    with pytest.raises(ValueError, match="'fp32'"):
        with_amp(model, "fp32")


def test_bf16_runs_the_convolutions_in_bf16_and_returns_float32(model):
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    dtypes = _Dtypes(model)
    try:
        with torch.no_grad():
            ref = model(x)
            assert set(dtypes.seen) == {torch.float32}
            dtypes.seen.clear()
            out = with_amp(model, "bf16")(x)
        assert set(dtypes.seen) == {torch.bfloat16}
    finally:
        dtypes.close()
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # bf16 keeps 8 bits of mantissa: logits agree to about 1 % of their range
    assert float((out - ref).abs().max()) < 0.02 * float(ref.abs().max())
    assert float((out.argmax(1) == ref.argmax(1)).float().mean()) > 0.98


def test_fp16_gradient_scaling_keeps_tiny_gradients(model):
    """A Dice-CE scaled by 1e-4 gives input gradients of ~2e-8 (per-voxel grads of a large
    tile are this small): plain fp16 autocast flushes them to zero; the wrapper's fixed
    gradient scale keeps them equal to the fp32 ones in direction."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 16, generator=gen)
    y = torch.randint(0, 3, (1, 1, 16, 16, 16), generator=gen)
    loss = DiceCELoss()

    def grad(net):
        xx = x.clone().requires_grad_(True)
        return torch.autograd.grad(loss(net(xx).float(), y) * 1e-4, xx)[0]

    class PlainAutocast(torch.nn.Module):
        def forward(self, xx):
            with torch.autocast("cpu", dtype=torch.float16):
                return model(xx)

    ref = grad(model)
    assert 0 < float(ref.abs().mean()) < 1e-7
    assert bool((grad(PlainAutocast()) == 0).all())  # the underflow the scale prevents
    for amp in ("fp16", "bf16"):
        g = grad(with_amp(model, amp))
        assert g.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0)
        assert float(cosine) > 0.99, amp
        assert float((g.sign() == ref.sign()).float().mean()) > 0.97, amp


def test_run_attack_and_evaluate_in_bf16_are_close_to_fp32(model, card):
    image = noise_volume()
    options = {"steps": 3, "block_size": 8}
    ref = run_attack(model, card, image, attack="vafa", options=options, seed=0)
    dtypes = _Dtypes(model)
    try:
        low = run_attack(model, card, image, attack="vafa", options=options, seed=0, amp="bf16")
        assert torch.bfloat16 in dtypes.seen and torch.float32 not in dtypes.seen
    finally:
        dtypes.close()
    assert ref.settings["amp"] == "off" and low.settings["amp"] == "bf16"
    agree = np.mean(ref.clean_prediction.array == low.clean_prediction.array)
    assert agree > 0.98
    for key in ("dice_fg", "dice"):
        ref_pair, low_pair = getattr(ref.metrics, key), getattr(low.metrics, key)
        assert abs(ref_pair.adversarial - low_pair.adversarial) < 0.03
    assert abs(ref.metrics.ssim - low.metrics.ssim) < 0.005
    # the q tables follow gradient signs: most of the perturbation is the same
    diff = np.abs(ref.adversarial.array - low.adversarial.array).mean()
    assert diff < 0.5 * np.abs(ref.perturbation.array).mean()
    # the model was not left wrapped or in another precision
    assert next(model.parameters()).dtype == torch.float32
    for amp in ("bf16", "fp16"):
        metrics = evaluate(model, card, image, None, ref.adversarial, amp=amp)
        assert abs(metrics.dice_fg.adversarial - ref.metrics.dice_fg.adversarial) < 0.03


def test_cli_amp_flags(tmp_path, capsys):
    weights = save_tiny_model(tmp_path / "tiny.safetensors")
    ct = tmp_path / "ct.nii.gz"
    save_volume(noise_volume(), ct)
    out = tmp_path / "adv.nii.gz"
    argv = ["--model", str(weights), "-q"]
    assert main(["attack", str(ct), "--out", str(out), "--steps", "2", "--amp", "bf16", *argv]) == 0
    assert json.loads((tmp_path / "adv.json").read_text())["settings"]["amp"] == "bf16"
    capsys.readouterr()
    evaluate_argv = ["evaluate", str(ct), "--adversarial", str(out), "--amp", "fp16"]
    assert main([*evaluate_argv, "--format", "json", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["dice_fg"]["adversarial"] is not None
    with pytest.raises(SystemExit) as done:
        main(["attack", str(ct), "--out", str(out), "--amp", "fp32", *argv])
    assert done.value.code == 2 and "fp32" in capsys.readouterr().err
