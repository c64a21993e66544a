"""``vafa evaluate --bands``: the band table of a clean/adversarial pair, and its errors."""

import json

import nibabel as nib
import numpy as np
import pytest

from vafa.cli import main

WINDOW = (-175.0, 250.0)  # the tiny card's CT window (the UNet preset's)


def _pair(tmp_path, shape=(20, 18, 16)):
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 60, shape).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    adv = hu + rng.normal(0, 8, shape).astype(np.float32)  # stays inside the window mostly
    paths = []
    for name, data in (("ct.nii.gz", hu), ("adv.nii.gz", adv)):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
        paths.append(tmp_path / name)
    return paths, hu, adv


def _energy(hu, adv):
    """Σ δ² in model space, straight from the window's definition (independent of vafa)."""
    lo, hi = WINDOW
    x = np.clip((hu.astype(np.float64) - lo) / (hi - lo), 0, 1)
    y = np.clip((adv.astype(np.float64) - lo) / (hi - lo), 0, 1)
    return float(((y - x) ** 2).sum())


def test_evaluate_bands_prints_the_table_json_and_csv(model_file, tmp_path, capsys):
    (ct, adv), hu, adv_hu = _pair(tmp_path)
    base = ["evaluate", str(ct), "--adversarial", str(adv), "--model", str(model_file), "--bands"]
    assert main([*base, "--band-block", "8"]) == 0
    out = capsys.readouterr().out
    assert "Dice foreground mean" in out  # the metrics table comes first
    table = out[out.index("Perturbation band analysis") :].splitlines()
    assert "DCT blocks 8×8×8" in table[1] and "clean prediction" in table[1]
    rows = {line.split()[0]: line.split() for line in table[4:8]}
    assert list(rows) == ["all", "low", "middle", "high"]
    total = _energy(hu, adv_hu)
    assert float(rows["all"][2]) == pytest.approx(total, rel=1e-3)
    assert sum(float(rows[b][1]) for b in ("low", "middle", "high")) == pytest.approx(
        total, rel=1e-3
    )
    assert table[-1] == "clean fg Dice 1.000"  # against its own clean prediction

    assert main([*base, "--band-block", "8", "--format", "json"]) == 0
    bands = json.loads(capsys.readouterr().out)["bands"]
    assert [r["band"] for r in bands["rows"]] == ["all", "low", "middle", "high"]
    assert bands["block_size"] == [8, 8, 8]
    assert bands["rows"][0]["energy"] == pytest.approx(total, rel=1e-5)
    fractions = [r["energy_fraction"] for r in bands["rows"][1:]]
    assert sum(fractions) == pytest.approx(1.0)

    assert main([*base, "--band-block", "8", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "metric,clean,adversarial"
    energy_rows = [line for line in lines if "energy fraction" in line]
    assert [line.split(":")[0] for line in energy_rows] == [
        "band all",
        "band low",
        "band middle",
        "band high",
    ]
    assert float(energy_rows[0].split(",")[2]) == 1.0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--adversarial", "{tmp}/missing.nii.gz"], "missing.nii.gz: no such file"),
        (["--adversarial", "{small}"], "grid"),
        ([], "--bands needs --adversarial"),
        (["--adversarial", "{adv}", "--band-block", "0"], "--band-block"),
    ],
)
def test_evaluate_bands_bad_input_is_one_line_exit_2(extra, message, model_file, tmp_path, capsys):
    (ct, adv), _, _ = _pair(tmp_path)
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), small)
    subst = {"tmp": tmp_path, "small": small, "adv": adv}
    argv = ["evaluate", str(ct), "--model", str(model_file), "--bands"]
    argv += [a.format(**subst) for a in extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
