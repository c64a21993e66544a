"""Contract tests of the attacks on a briefly trained tiny 3D UNet (conftest.trained_model)."""

import pytest
import torch

import vafa
from vafa.ops.frequency import from_blocks, layout_dct, layout_idct, pad_to_blocks, padded_shape
from vafa.ops.losses import DiceCELoss
from vafa.ops.metrics import dice_per_class
from vafa.ops.quantization import quantize
from vafa.ops.ssim import BlockSSIM

VOXEL = [
    (vafa.PGD, {"eps": 4, "steps": 5}),
    (vafa.BIM, {"eps": 4, "steps": 5}),
    (vafa.FGSM, {"eps": 4}),
]


def _fg_dice(model, x, labels):
    with torch.no_grad():
        pred = model(x).argmax(1, keepdim=True)
    return torch.nanmean(dice_per_class(pred, labels, 3)[:, 1:]).item()


def _seg_loss(model, x, labels):
    with torch.no_grad():
        return DiceCELoss()(model(x), labels).item()


@pytest.mark.parametrize("cls,kwargs", VOXEL)
def test_voxel_attacks_raise_loss_lower_dice_and_respect_budget(
    cls, kwargs, trained_model, synthetic_data
):
    x, y = synthetic_data
    result = cls(trained_model, seed=0, **kwargs).attack(x, y)
    adv = result.adversarial
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= 4 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert _seg_loss(trained_model, adv, y) > _seg_loss(trained_model, x, y)
    assert _fg_dice(trained_model, adv, y) < _fg_dice(trained_model, x, y)


def test_gaussian_noise_barely_changes_dice(trained_model, synthetic_data):
    x, y = synthetic_data
    result = vafa.GaussianNoise(trained_model, std=4, seed=0).attack(x, y)
    noise = result.adversarial - x
    assert 2 / 255 < noise.std() < 6 / 255
    assert (
        abs(_fg_dice(trained_model, result.adversarial, y) - _fg_dice(trained_model, x, y)) < 0.05
    )


def _hard_objective(model, x, labels, q_blocks, block):
    """Attack objective of a table, recomputed from the pieces (hard rounding)."""
    padded = pad_to_blocks(x, block)
    coeffs = layout_dct(padded * 255 - 128, block)
    q = from_blocks(q_blocks, block, padded_shape(x.shape[2:], block))
    rec = ((layout_idct(quantize(coeffs, q, 0.0), block) + 128) / 255).clamp(0, 1)
    h, w, d = x.shape[2:]
    with torch.no_grad():
        seg = DiceCELoss(reduction="none")(model(rec[:, :, :h, :w, :d]), labels)
        ssim = BlockSSIM(x, block)(rec[:, :, :h, :w, :d])
    return seg - (1 - ssim)


def test_vafa_optimised_table_beats_random_tables_and_its_first_step(trained_model, synthetic_data):
    x, y = synthetic_data
    block = (8, 8, 8)
    # q_step 2 lets 10 steps cross the whole [5, 20] range (with steps of 1 from q_max the
    # optimiser could only explore [10, 20], the published update's reach).
    attack = vafa.VAFA(
        trained_model,
        steps=10,
        q_min=5,
        q_max=20,
        q_step=2,
        block_size=block,
        seed=0,
        keep="last",
        hard_round=True,
    )
    result = attack.attack(x, y)
    ours = _hard_objective(trained_model, x, y, result.q_tables, block)
    torch.testing.assert_close(ours, result.objective, rtol=1e-4, atol=1e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        random_q = 5 + 15 * torch.rand(result.q_tables.shape, generator=g)
        assert (ours > _hard_objective(trained_model, x, y, random_q, block)).all()
    initial = torch.full_like(result.q_tables, 20.0)  # q_init="max": the table of the first step
    assert (ours > _hard_objective(trained_model, x, y, initial, block)).all()


def test_vafa_table_stays_within_bounds_after_every_step(trained_model, synthetic_data):
    x, y = synthetic_data
    seen = []

    class Watched(vafa.VAFA):
        def _update(self, state, grad, step):
            super()._update(state, grad, step)
            seen.append((state["q"].min().item(), state["q"].max().item()))

    result = Watched(
        trained_model, steps=6, q_min=3, q_max=9, q_init="random", q_step=2.5, block_size=8, seed=0
    ).attack(x, y)
    assert len(seen) == 5  # the last step is not followed by an update (published loop)
    assert all(lo >= 3 and hi <= 9 for lo, hi in seen)
    assert result.q_tables.min() >= 3 and result.q_tables.max() <= 9
    assert result.q_tables.shape == (2, 1, 64, 8, 8, 8)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (vafa.VAFA, {"steps": 4, "block_size": 8, "q_init": "random"}),
        (vafa.VAFA2D, {"steps": 3, "block_size": (8, 8)}),
        (vafa.PGD, {"steps": 3}),
        (vafa.GaussianNoise, {}),
    ],
)
def test_determinism_under_seed(cls, kwargs, trained_model, synthetic_data):
    x, y = synthetic_data
    a = cls(trained_model, seed=7, **kwargs).attack(x, y)
    b = cls(trained_model, seed=7, **kwargs).attack(x, y)
    assert torch.equal(a.adversarial, b.adversarial)
    if kwargs.get("q_init") == "random" or cls in (vafa.PGD, vafa.GaussianNoise):
        c = cls(trained_model, seed=8, **kwargs).attack(x, y)
        assert not torch.equal(a.adversarial, c.adversarial)


def test_keep_best_is_never_worse_than_last(trained_model, synthetic_data):
    x, y = synthetic_data
    common = dict(steps=6, block_size=8, seed=0, q_max=30)
    best = vafa.VAFA(trained_model, keep="best", **common).attack(x, y)
    last = vafa.VAFA(trained_model, keep="last", **common).attack(x, y)
    assert (best.objective >= last.objective - 1e-6).all()
    # "best" is the maximum over every evaluated iterate (per sample; here the batch mean bounds it)
    assert best.objective.mean().item() >= max(h["loss"] for h in best.history) - 1e-5


def test_cancellation_stops_within_one_step_and_keeps_best(trained_model, synthetic_data):
    x, y = synthetic_data
    events = []

    def callback(event):
        events.append(event)
        assert event.adversarial.shape == x.shape and event.total == 10
        return event.step < 3

    result = vafa.VAFA(trained_model, steps=10, block_size=8, seed=0).attack(
        x, y, callback=callback
    )
    assert result.cancelled and result.steps_run == 3 and len(events) == 3
    assert [e.step for e in events] == [1, 2, 3]
    assert len(result.history) == 3  # no final evaluation after a cancel
    assert result.objective.mean().item() >= min(h["loss"] for h in result.history) - 1e-6


def test_model_state_restored_and_input_untouched(trained_model, synthetic_data):
    x, y = synthetic_data
    x_before = x.clone()
    trained_model.train()
    trained_model.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in trained_model.parameters()]
    try:
        vafa.VAFA(trained_model, steps=2, block_size=8).attack(x, y)
        assert trained_model.training
        assert [p.requires_grad for p in trained_model.parameters()] == flags
        assert all(p.grad is None for p in trained_model.parameters())
        assert torch.equal(x, x_before)
        # also when the call raises half-way (bad labels are found after the clean forward)
        with pytest.raises(ValueError, match="classes"):
            vafa.VAFA(trained_model, steps=2, block_size=8).attack(x, torch.full_like(y, 5))
        assert trained_model.training
        assert [p.requires_grad for p in trained_model.parameters()] == flags
    finally:
        trained_model.eval()


def test_works_inside_no_grad_and_inference_mode(trained_model, synthetic_data):
    x, y = synthetic_data
    with torch.no_grad():
        r1 = vafa.VAFA(trained_model, steps=2, block_size=8, seed=0).attack(x, y)
    with torch.inference_mode():
        r2 = vafa.PGD(trained_model, steps=2, seed=0).attack(x, y)
    r3 = vafa.VAFA(trained_model, steps=2, block_size=8, seed=0).attack(x, y)
    assert torch.equal(r1.adversarial, r3.adversarial)
    assert not torch.equal(r2.adversarial, x)


def test_pseudo_labels_when_no_labels(trained_model, synthetic_data):
    x, _ = synthetic_data
    result = vafa.PGD(trained_model, steps=2, seed=0).attack(x)
    assert torch.equal(result.labels, result.clean_prediction)


@pytest.mark.parametrize("normalize", ["clip", "slice"])
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0, "near"])
def test_constant_volumes_give_no_nan(normalize, value, trained_model):
    x = (
        torch.full((1, 1, 16, 16, 16), 0.5)
        if value == "near"
        else torch.full((1, 1, 16, 16, 16), value)
    )
    if value == "near":
        x = x + 1e-6 * torch.rand(x.shape)
    result = vafa.VAFA(trained_model, steps=2, block_size=8, normalize=normalize).attack(x)
    assert torch.isfinite(result.adversarial).all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert all(h["loss"] == h["loss"] for h in result.history)  # no NaN


def test_non_divisible_shapes_and_2d_blocks(trained_model):
    x = torch.rand(1, 1, 20, 16, 12)  # the UNet needs multiples of 4; the blocks do not
    r3 = vafa.VAFA(trained_model, steps=2, block_size=(8, 8, 8)).attack(x)
    r2 = vafa.VAFA2D(trained_model, steps=2, block_size=(8, 8)).attack(x)
    assert r3.adversarial.shape == x.shape == r2.adversarial.shape
    assert r3.q_tables.shape == (1, 1, 3 * 2 * 2, 8, 8, 8)
    assert r2.q_tables.shape == (1, 1, 3 * 2 * 12, 8, 8)


def test_targeted_attack_moves_towards_target(trained_model, synthetic_data):
    x, y = synthetic_data
    target = torch.zeros_like(y)
    result = vafa.PGD(trained_model, eps=8, steps=5, targeted=True, seed=0).attack(x, target)
    before = (result.clean_prediction == 0).float().mean()
    after = (result.adversarial_prediction == 0).float().mean()
    assert after > before


def test_repr_and_settings_list_hyper_parameters(trained_model):
    attack = vafa.VAFA(trained_model, q_max=30, block_size=16)
    assert "q_max=30.0" in repr(attack) and "block_size=[16, 16, 16]" in repr(attack)
    assert attack.settings()["attack"] == "VAFA"
    assert isinstance(vafa.build_attack("pgd", trained_model, eps=8, q_max=None), vafa.PGD)
    with pytest.raises(ValueError, match="did you mean 'vafa'"):
        vafa.build_attack("vafaa", trained_model)
    with pytest.raises(ValueError, match="q_max"):
        vafa.build_attack("pgd", trained_model, q_max=3)


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.rand(1, 16, 16, 16), "5 dims"),
        (torch.ones(1, 1, 8, 8, 8, dtype=torch.long), "floating point"),
        (torch.full((1, 1, 8, 8, 8), float("nan")), "finite"),
        (torch.full((1, 1, 8, 8, 8), 2.0), r"\[0, 1\]"),
        ([1, 2, 3], "torch.Tensor"),
    ],
)
def test_bad_images(images, match, trained_model):
    with pytest.raises((ValueError, TypeError), match=match):
        vafa.VAFA(trained_model, steps=1, block_size=8).attack(images)


def test_clamp_inputs_opt_in(trained_model):
    x = torch.rand(1, 1, 8, 8, 8) * 1.5
    result = vafa.FGSM(trained_model, clamp_inputs=True).attack(x)
    assert result.adversarial.max() <= 1


def test_bad_labels(trained_model, synthetic_data):
    x, y = synthetic_data
    with pytest.raises(ValueError, match="shape"):
        vafa.PGD(trained_model, steps=1).attack(x, y[:, :, :8])
    with pytest.raises(ValueError, match="integer"):
        vafa.PGD(trained_model, steps=1).attack(x, y.float() + 0.5)
    with pytest.raises(ValueError, match="class 3"):
        vafa.PGD(trained_model, steps=1).attack(x, torch.full_like(y, 3))
    with pytest.raises(ValueError, match=">= 0"):
        vafa.PGD(trained_model, steps=1).attack(x, torch.full_like(y, -1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"q_min": 10, "q_max": 5}, "q_min"),
        ({"q_min": 0}, "q_min"),
        ({"q_min": float("nan")}, "q_min"),
        ({"q_max": float("inf")}, "q_max"),
        ({"q_max": True}, "q_max"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": (8, 8)}, "block_size"),
        ({"steps": 0}, "steps"),
        ({"steps": -1}, "steps"),
        ({"q_init": "zero"}, "q_init"),
        ({"normalize": "minmax"}, "normalize"),
        ({"keep": "first"}, "keep"),
        ({"q_step": 0}, "q_step"),
        ({"ssim_weight": -1}, "ssim_weight"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_vafa_options(kwargs, match, trained_model):
    with pytest.raises((ValueError, TypeError), match=match):
        vafa.VAFA(trained_model, **kwargs)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (vafa.PGD, {"eps": -1}, "eps"),
        (vafa.FGSM, {"eps": -0.5}, "eps"),
        (vafa.PGD, {"alpha": -1}, "alpha"),
        (vafa.GaussianNoise, {"std": -1}, "std"),
        (vafa.PGD, {"steps": 1.5}, "steps"),
    ],
)
def test_bad_voxel_options(cls, kwargs, match, trained_model):
    with pytest.raises(ValueError, match=match):
        cls(trained_model, **kwargs)


def test_model_with_wrong_output_is_reported(synthetic_data):
    x, _ = synthetic_data
    with pytest.raises(ValueError, match="logits"):
        vafa.PGD(torch.nn.Flatten(), steps=1).attack(x)
    conv = torch.nn.Conv3d(2, 3, 1)  # expects 2 input channels
    with pytest.raises(ValueError, match="model failed"):
        vafa.PGD(conv, steps=1).attack(x)


def test_generator_form_yields_events_and_can_be_cancelled_by_send(trained_model, synthetic_data):
    x, y = synthetic_data
    attack = vafa.VAFA(trained_model, steps=5, block_size=8, seed=0)
    gen = attack.iter_attack(x, y)
    first = next(gen)
    assert first.step == 1 and first.total == 5
    with torch.no_grad():
        second = gen.send(None)
    assert second.step == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(False)
    result = stop.value.value
    assert result.cancelled and result.steps_run == 2
    full = vafa.attacks.drive(attack.iter_attack(x, y))
    assert torch.equal(full.adversarial, attack.attack(x, y).adversarial)


def test_generator_does_not_leak_grad_mode_to_the_consumer(trained_model, synthetic_data):
    x, y = synthetic_data
    with torch.no_grad():
        for _event in vafa.PGD(trained_model, steps=2, seed=0).iter_attack(x, y):
            assert not torch.is_grad_enabled()
