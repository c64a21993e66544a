"""Band-limited VAFA (``bands=``): no DCT coefficient outside the band changes (scipy's DCT
per block of clean vs adversarial, independent of vafa.ops.frequency), the q table says which
coefficients were quantized, ``bands="all"`` is the unrestricted attack, bad bands are
one-line errors in the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import block_coefficients, naive_band

from vafa.attacks import VAFA, VAFA2D, build_attack
from vafa.cli import main


@pytest.mark.parametrize(
    "cls,block,band",
    [
        (VAFA, (8, 8, 8), "low"),
        (VAFA, (8, 8, 8), "middle"),
        (VAFA, (8, 8, 8), "high"),
        (VAFA2D, (8, 8), "middle"),
    ],
)
def test_no_coefficient_outside_the_band_changes(cls, block, band, trained_model, mid_range):
    images, labels = mid_range
    attack = cls(trained_model, steps=3, q_max=8, block_size=block, bands=band, seed=0)
    result = attack(images, labels)
    x_adv = result.adversarial
    assert float(x_adv.min()) > 0 and float(x_adv.max()) < 1  # no clamping happened
    inside = naive_band(block, band)
    clean = block_coefficients(images[0, 0], block)
    adversarial = block_coefficients(x_adv[0, 0], block)
    np.testing.assert_allclose(adversarial[:, ~inside], clean[:, ~inside], rtol=0, atol=2e-5)
    assert np.abs(adversarial[:, inside] - clean[:, inside]).max() > 1e-3  # the band did change
    # the q table: 0 ("not quantized") outside the band, within [q_min, q_max] inside it
    q = result.q_tables[0, 0].numpy()
    assert (q[:, ~inside] == 0).all()
    assert (q[:, inside] >= 5).all() and (q[:, inside] <= 8).all()
    assert result.settings["bands"] == band


def test_the_three_bands_cover_what_all_quantizes(trained_model, mid_range):
    """One fixed table (no step): quantizing low, middle and high separately changes disjoint
    coefficient sets whose union is exactly the coefficients that ``"all"`` changes."""
    images, labels = mid_range
    block = (8, 8, 8)
    clean = block_coefficients(images[0, 0], block)

    def changed(band):
        attack = VAFA(trained_model, steps=1, q_max=12, block_size=block, bands=band, seed=0)
        result = attack(images, labels)
        return np.abs(block_coefficients(result.adversarial[0, 0], block) - clean), result

    everything, result_all = changed("all")
    parts = [changed(b)[0] for b in ("low", "middle", "high")]
    for part, band in zip(parts, ("low", "middle", "high"), strict=True):
        inside = naive_band(block, band)
        np.testing.assert_allclose(part[:, inside], everything[:, inside], atol=2e-5)
    assert (result_all.q_tables > 0).all()  # "all": every coefficient is quantized


def test_bands_all_is_the_unrestricted_attack(trained_model, synthetic_data):
    images, labels = synthetic_data[0][:1], synthetic_data[1][:1]
    default = VAFA(trained_model, steps=2, block_size=8, seed=0)(images, labels)
    everything = VAFA(trained_model, steps=2, block_size=8, seed=0, bands="all")(images, labels)
    assert torch.equal(default.adversarial, everything.adversarial)
    assert torch.equal(default.q_tables, everything.q_tables)
    assert [r["loss"] for r in default.history] == [r["loss"] for r in everything.history]
    assert default.settings["bands"] == "all"


def test_band_limited_vafa_still_attacks(trained_model, synthetic_data):
    images, labels = synthetic_data
    result = VAFA(trained_model, steps=5, q_max=30, block_size=8, bands="low", seed=0)(
        images, labels
    )
    losses = [r["loss"] for r in result.history]
    assert max(losses) > losses[0]  # the objective grows within the band
    assert result.q_tables.shape == (2, 1, 64, 8, 8, 8)
    assert float(result.history[-1]["dice"]) < 1.0  # against the clean prediction


@pytest.mark.parametrize("name", ["vafa", "vafa2d"])
def test_unknown_band_is_a_one_line_error(name):
    with pytest.raises(ValueError, match=r"bands must be one of .*got 'mid'") as err:
        build_attack(name, torch.nn.Conv3d(1, 2, 1), bands="mid")
    assert "\n" not in str(err.value)


def test_cli_bands_flag(tmp_path, capsys):
    import nibabel as nib
    from factories import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(40, 60, (16, 16, 16)).astype(np.int16), np.eye(4)), ct)
    out = tmp_path / "adv.nii.gz"
    base = ["attack", str(ct), "--model", str(model), "--out", str(out)]
    with pytest.raises(SystemExit) as done:
        main([*base, "--bands", "mid"])
    assert done.value.code == 2 and "invalid choice: 'mid'" in capsys.readouterr().err
    assert not out.exists()
    argv = [*base, "--bands", "middle", "--steps", "2", "--block-size", "8", "--quiet"]
    assert main(argv) == 0 and out.exists()
    settings = json.loads((tmp_path / "adv.json").read_text())["settings"]["attack"]
    assert (settings["attack"], settings["bands"]) == ("VAFA", "middle")
