"""SA² (vafa.attacks.sa2): the factor bounds, the untouched DC terms and out-of-band
coefficients (checked with scipy's DCT per block, independent of vafa.ops.frequency), the
damage on the tiny model, and one-line errors in the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import block_coefficients, naive_band

from vafa.attacks import SA2, build_attack
from vafa.cli import main
from vafa.ops.metrics import dice_per_class

BLOCK = 8


def _run_recording(attack: SA2, images, labels):
    """Run ``attack``; the adversarial volume after every step and the factors after every
    update (a wrapper around the update hook)."""
    volumes, factors = [], []
    update = attack._update

    def recorded(state, grad, step):
        update(state, grad, step)
        factors.append(state["factors"].detach().clone())

    attack._update = recorded
    result = attack.attack(
        images, labels, callback=lambda e: volumes.append(e.adversarial.detach().clone())
    )
    return result, volumes, factors


def test_factors_stay_within_bounds_at_every_step(trained_model, mid_range):
    images, labels = mid_range
    rho = 0.2
    attack = SA2(trained_model, rho=rho, steps=4, seed=0)
    result, volumes, factors = _run_recording(attack, images, labels)
    assert len(factors) == 4 and len(volumes) == 4
    low, high = np.float32(1 - rho), np.float32(1 + rho)  # the bounds in the factors' dtype
    for f in factors:  # the factors themselves, after every update
        assert f.min().item() >= low and f.max().item() <= high
        assert float(f.min()) < 1 - rho / 2 and float(f.max()) > 1 + rho / 2  # they do move
    clean = block_coefficients(images[0, 0])
    usable = np.abs(clean) > 0.05  # the ratio of tiny coefficients is all rounding noise
    usable[:, 0, 0, 0] = False  # the DC terms: next test
    ratios = []
    for x_adv in [*volumes, result.adversarial]:
        assert float(x_adv.min()) > 0 and float(x_adv.max()) < 1  # no clamping happened
        ratio = block_coefficients(x_adv[0, 0])[usable] / clean[usable]
        assert ratio.min() >= 1 - rho - 1e-4 and ratio.max() <= 1 + rho + 1e-4
        ratios.append(ratio)
    assert np.abs(ratios[-1] - 1).max() > rho / 2  # the amplitudes did change


def test_dc_terms_are_untouched(trained_model, mid_range):
    images, labels = mid_range
    attack = SA2(trained_model, rho=0.5, steps=3, seed=1)
    result, volumes, factors = _run_recording(attack, images, labels)
    clean = block_coefficients(images[0, 0])[:, 0, 0, 0]
    for x_adv in [*volumes, result.adversarial]:
        adversarial = block_coefficients(x_adv[0, 0])[:, 0, 0, 0]
        np.testing.assert_allclose(adversarial, clean, rtol=0, atol=2e-5)  # float32 round trip
    for f in factors:  # the factor of every DC term is exactly 1
        assert bool((f[..., ::BLOCK, ::BLOCK, ::BLOCK] == 1.0).all())
    # the block means (the DC terms over √(b³)) of the returned volume, in float64
    means = result.adversarial[0, 0].double().reshape(4, 8, 4, 8, 4, 8).mean(dim=(1, 3, 5))
    clean_means = images[0, 0].double().reshape(4, 8, 4, 8, 4, 8).mean(dim=(1, 3, 5))
    assert float((means - clean_means).abs().max()) < 1e-6


@pytest.mark.parametrize("band", ["low", "middle", "high"])
def test_coefficients_outside_the_band_are_untouched(band, trained_model, mid_range):
    images, labels = mid_range
    result = build_attack("sa2", trained_model, bands=band, steps=3, seed=0)(images, labels)
    assert float(result.adversarial.min()) > 0 and float(result.adversarial.max()) < 1
    clean = block_coefficients(images[0, 0])
    adversarial = block_coefficients(result.adversarial[0, 0])
    inside = naive_band(BLOCK, band)
    inside[0, 0, 0] = False  # the DC term is never changed
    np.testing.assert_allclose(adversarial[:, ~inside], clean[:, ~inside], rtol=0, atol=2e-5)
    changed = np.abs(adversarial[:, inside] - clean[:, inside])
    assert changed.max() > 1e-2  # the band itself did change
    assert result.settings["bands"] == band


def test_loss_increases_and_dice_drops(trained_model, synthetic_data):
    images, labels = synthetic_data
    model = trained_model
    with torch.no_grad():
        clean_pred = model(images).argmax(1, keepdim=True)
    clean_dice = dice_per_class(clean_pred, labels, 3)[:, 1:].mean()
    result = build_attack("sa2", model, rho=0.2, steps=10, seed=0)(images, labels)
    adversarial_dice = dice_per_class(result.adversarial_prediction, labels, 3)[:, 1:].mean()
    losses = [row["loss"] for row in result.history]
    assert losses[-1] > losses[0] + 0.01  # the attack's objective grows from its random start
    assert float(adversarial_dice) < float(clean_dice) - 0.01
    # the same factor budget without the gradient (random start only) hurts less
    random_only = build_attack("sa2", model, rho=0.2, steps=1, factor_step=1e-9, seed=0)
    baseline = dice_per_class(random_only(images, labels).adversarial_prediction, labels, 3)
    assert float(adversarial_dice) < float(baseline[:, 1:].mean())


@pytest.mark.parametrize(
    "options,match",
    [
        ({"rho": 0.0}, "rho must be > 0, got 0.0"),
        ({"rho": -0.1}, "rho must be > 0, got -0.1"),
        ({"rho": 1.0}, "rho must be < 1"),
        ({"rho": 1.5}, "rho must be < 1"),
        ({"rho": float("nan")}, "rho must be a finite number"),
        ({"bands": "mid"}, r"bands must be one of .*got 'mid'"),
        ({"factor_step": 0}, "factor_step must be > 0"),
        ({"block_size": (8, 8)}, "block_size must have 3 entries"),
    ],
)
def test_bad_options_are_one_line_errors(options, match):
    with pytest.raises(ValueError, match=match) as err:
        build_attack("sa2", torch.nn.Conv3d(1, 2, 1), **options)
    assert "\n" not in str(err.value)


def test_cli_offers_sa2_and_rejects_bad_values_in_one_line(tmp_path, capsys):
    import nibabel as nib
    from factories import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(40, 60, (16, 16, 16)).astype(np.int16), np.eye(4)), ct)
    out = tmp_path / "adv.nii.gz"
    base = ["attack", str(ct), "--model", str(model), "--out", str(out), "--attack", "sa2"]
    for flag, value in (("--rho", "1"), ("--rho", "0"), ("--factor-step", "-1")):
        assert main([*base, flag, value, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag.strip("-").replace("-", "_") in err[0], err
        assert not out.exists()
    with pytest.raises(SystemExit) as done:  # argparse checks the choices itself
        main([*base, "--bands", "mid"])
    assert done.value.code == 2
    assert "invalid choice: 'mid'" in capsys.readouterr().err.strip().splitlines()[-1]
    argv = [*base, "--rho", "0.3", "--bands", "high", "--steps", "2", "--block-size", "8"]
    assert main([*argv, "--quiet"]) == 0 and out.exists()
    settings = json.loads((tmp_path / "adv.json").read_text())["settings"]["attack"]
    assert (settings["attack"], settings["rho"], settings["bands"]) == ("SA2", 0.3, "high")
    assert settings["block_size"] == [8, 8, 8] and settings["steps"] == 2


def test_slicer_modules_offer_sa2_with_its_own_block_size():
    """The generated Slicer XML offers SA² and its options; the shared block size defaults to
    0 ("the attack's own"), so that SA² keeps 8³ and VAFA 32³ unless the user picks one."""
    from vafa.attacks import attack_class
    from vafa.slicer.modules import MODULES
    from vafa.slicer.run import _attack_options, parse

    for name in ("VAFAAttack", "VAFTFineTune"):
        module = MODULES[name]()
        params = {p.name: p for p in module.params}
        assert "sa2" in (params["attack"] if name == "VAFAAttack" else params["mode"]).choices
        assert "rho" in params and params["block_size"].default == 0
    module = MODULES["VAFAAttack"]()
    params = {p.name: p for p in module.params}
    assert {"factor_step", "bands"} <= set(params) and params["bands"].default == "all"
    taken = {o.name for o in attack_class("sa2").options}

    def slicer_args(**values):
        """The arguments Slicer passes: every parameter, at its default unless given."""
        argv = [f"in{p.index}" for p in module.params if p.index is not None]
        for p in module.params:
            value = values.get(p.name, p.default)
            if p.index is None and not p.returned and value is not None and value is not False:
                argv += [f"--{p.name}"] if value is True else [f"--{p.name}", str(value)]
        return parse(module, argv)

    options = _attack_options(slicer_args(attack="sa2", rho=0.3, bands="low"), module, taken)
    assert options["rho"] == 0.3 and options["bands"] == "low" and "block_size" not in options
    options = _attack_options(slicer_args(attack="sa2", block_size=16), module, taken)
    assert options["block_size"] == 16
    attack = build_attack("sa2", torch.nn.Conv3d(1, 2, 1), **options)
    assert attack.block_size == (16, 16, 16) and attack.steps == 10 and attack.rho == 0.2
