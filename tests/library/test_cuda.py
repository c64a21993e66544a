"""The GPU path (``pytest -m cuda``; skipped without CUDA, run by ``benchmarks/gpu_check.sh``):
the same attacks on ``cuda`` as on the CPU, and mixed precision on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import noise_volume, tiny_card, tiny_model

from vafa.run.pipeline import evaluate, run_attack

pytestmark = pytest.mark.cuda

VAFA = {"steps": 3, "block_size": 8}


@pytest.fixture(scope="module")
def card():
    """Overrides conftest's: a 3-level UNet on 32³ tiles, enough work for the GPU."""
    return tiny_card(roi=32, channels=(8, 16, 32), strides=(2, 2))


@pytest.fixture
def model(card):
    """Overrides conftest's: a fresh one per test (the runs move it between devices)."""
    return tiny_model(card, seed=0).eval()


def _conv_dtypes(model):
    seen: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv3d)
    ]
    return seen, hooks


def test_noise_attack_on_cuda_equals_the_cpu(model, card):
    """GN draws its noise from a seeded CPU generator: the same volume on both devices."""
    image = noise_volume((40, 36, 32))
    cpu = run_attack(model, card, image, attack="gn", options={"std": 8}, seed=3, device="cpu")
    gpu = run_attack(model, card, image, attack="gn", options={"std": 8}, seed=3, device="cuda")
    assert gpu.settings["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.adversarial.array, cpu.adversarial.array, atol=1e-3)
    agree = np.mean(gpu.adversarial_prediction.array == cpu.adversarial_prediction.array)
    assert agree > 0.999


@pytest.mark.parametrize("attack,options", [("vafa", VAFA), ("pgd", {"eps": 4, "steps": 3})])
def test_gradient_attacks_on_cuda_are_close_to_the_cpu(model, card, attack, options):
    """Float32 on both (TF32 convolutions may differ slightly on the GPU, so a few gradient
    signs flip): the same damage and nearly the same perturbation."""
    image = noise_volume((40, 36, 32))
    cpu = run_attack(model, card, image, attack=attack, options=options, seed=0, device="cpu")
    gpu = run_attack(model, card, image, attack=attack, options=options, seed=0, device="cuda")
    for key in ("dice_fg", "dice"):
        gpu_pair, cpu_pair = getattr(gpu.metrics, key), getattr(cpu.metrics, key)
        assert abs(gpu_pair.adversarial - cpu_pair.adversarial) < 0.02
        assert abs(gpu_pair.clean - cpu_pair.clean) < 0.01
    assert abs(gpu.metrics.ssim - cpu.metrics.ssim) < 0.005
    diff = np.abs(gpu.adversarial.array - cpu.adversarial.array).mean()
    assert diff < 0.25 * np.abs(cpu.perturbation.array).mean()


@pytest.mark.parametrize("amp,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_amp_on_cuda_runs_the_model_in_half_precision_and_stays_close(model, card, amp, dtype):
    image = noise_volume((40, 36, 32))
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        with pytest.raises(ValueError, match="needs a GPU with bfloat16"):  # refused, one line
            run_attack(model, card, image, attack="vafa", options=VAFA, seed=0, amp=amp)
        return
    ref = run_attack(model, card, image, attack="vafa", options=VAFA, seed=0, device="cuda")
    seen, hooks = _conv_dtypes(model)
    try:
        low = run_attack(model, card, image, attack="vafa", options=VAFA, seed=0, amp=amp)
    finally:
        for h in hooks:
            h.remove()
    assert dtype in seen and torch.float32 not in seen
    assert low.settings["amp"] == amp
    agree = np.mean(ref.clean_prediction.array == low.clean_prediction.array)
    assert agree > 0.98
    for key in ("dice_fg", "dice"):
        ref_pair, low_pair = getattr(ref.metrics, key), getattr(low.metrics, key)
        assert abs(ref_pair.adversarial - low_pair.adversarial) < 0.03
    assert np.isfinite(low.adversarial.array).all()
    clean = evaluate(model, card, image, None, low.adversarial, amp=amp)
    assert abs(clean.dice_fg.adversarial - low.metrics.dice_fg.adversarial) < 0.03
