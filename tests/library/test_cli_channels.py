"""The CLI on multi-channel models (issue 27): one file per channel or a 4D file, datalists of
either, and one line (nothing written) for what does not fit the model."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.factories import (
    mri_case,
    read_csv_rows,
    run_cli,
    save_nifti,
    save_tiny_model,
    tiny_card,
    write_mri_case,
)

NAMES = ["T1c", "T1", "T2", "FLAIR"]
QUICK = ["--steps", "2", "--q-max", "20", "--block-size", "8", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def mri_model(tmp_path_factory):
    """A tiny 4-channel UNet (random weights) saved with its card."""
    card = tiny_card(
        in_channels=4,
        channel_names=NAMES,
        intensity={"type": "percentile", "p_low": 1.0, "p_high": 99.0},
    )
    return save_tiny_model(tmp_path_factory.mktemp("mri") / "mri.safetensors", card=card)


def test_one_file_per_channel_in_and_out(tmp_path, mri_model, capsys):
    entry = write_mri_case(tmp_path, "case", 0, "files")
    files = [tmp_path / f for f in entry["image"]]
    out = tmp_path / "adv.nii.gz"
    argv = ["attack", *files, "--model", mri_model, "--out", out, *QUICK, "--json"]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["dice_fg"]["adversarial"] is not None
    written = sorted(p.name for p in tmp_path.glob("adv*"))
    assert written == sorted([f"adv_{c:04d}.nii.gz" for c in range(4)] + ["adv.json"])
    for c in range(4):  # each channel in its own units, on its input's grid
        adv = nib.load(tmp_path / f"adv_{c:04d}.nii.gz")
        original = nib.load(files[c])
        np.testing.assert_allclose(adv.affine, original.affine)
        change = np.abs(adv.get_fdata() - original.get_fdata())
        assert 0 < change.max() < np.ptp(original.get_fdata())


def test_a_4d_file_in_gives_a_4d_file_out(tmp_path, mri_model, capsys):
    entry = write_mri_case(tmp_path, "case", 1, "4d")
    out = tmp_path / "adv.nii.gz"
    argv = ["attack", tmp_path / entry["image"], "--model", mri_model, "--out", out, *QUICK]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    assert nib.load(out).shape == (*nib.load(tmp_path / entry["image"]).shape[:3], 4)


@pytest.mark.parametrize("layout", ["4d", "files"])
def test_a_datalist_of_multichannel_cases(tmp_path, mri_model, capsys, layout):
    entries = [write_mri_case(tmp_path, f"case{i}", i, layout) for i in range(2)]
    datalist = tmp_path / "data.json"
    datalist.write_text(json.dumps({"validation": entries}))
    argv = ["attack", "--datalist", datalist, "--model", mri_model, "--out-dir", tmp_path / "o"]
    code, _, stderr = run_cli([*argv, *QUICK], capsys)
    assert code == 0, stderr
    rows = (tmp_path / "o" / "attack_results.csv").read_text().splitlines()
    stem = "_img" if layout == "4d" else ""  # nnU-Net's _0000 suffix is not the case's name
    assert [r.split(",")[0] for r in rows[1:]] == [f"case0{stem}", f"case1{stem}"]
    expected = (
        ["case0_img_adv.nii.gz"]
        if layout == "4d"
        else [f"case0_adv_{c:04d}.nii.gz" for c in range(4)]
    )
    assert all((tmp_path / "o" / name).is_file() for name in expected)
    code, stdout, stderr = run_cli(
        ["evaluate", *[tmp_path / f for f in np.atleast_1d(entries[0]["image"])], "--model",
         mri_model, "--labels", tmp_path / entries[0]["label"], "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["reference"] == "labels"


def test_what_does_not_fit_the_model_gets_one_line_and_nothing_written(tmp_path, mri_model, capsys):
    arrays, _ = mri_case(2)
    files = [save_nifti(tmp_path / f"c_{c:04d}.nii.gz", a) for c, a in enumerate(arrays)]
    out = tmp_path / "out"
    cases = {
        "three channels": ["attack", *files[:3], "--out", out / "a.nii.gz"],
        "mixed datalist": None,
        "2 grids": None,
    }
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"validation": [{"image": [f.name for f in files]},
                                                {"image": files[0].name}]}))  # fmt: skip
    cases["mixed datalist"] = ["attack", "--datalist", mixed, "--out-dir", out]
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"validation": [{"image": files[0].name}]}))
    cases["3D for 4"] = ["attack", "--datalist", one, "--out-dir", out]
    save_nifti(tmp_path / "odd_0001.nii.gz", np.zeros((9, 9, 9), np.float32))
    odd = [files[0], tmp_path / "odd_0001.nii.gz", *files[2:]]
    cases["2 grids"] = ["attack", *odd, "--out", out / "a.nii.gz"]
    patterns = {
        "three channels": r"c_0002.nii.gz has 3 channel\(s\), the model takes 4 channels \(T1c, T1, T2, FLA",
        "mixed datalist": r"case 0 is a list of 4 channel files but case 1 is one file",
        "3D for 4": r"case 0 \(.*c_0000.nii.gz\) has 1 channel\(s\), the model takes 4",
        "2 grids": r"channels on different grids",
    }
    for name, argv in cases.items():
        code, _, stderr = run_cli([*argv, "--model", mri_model, *QUICK], capsys)
        assert code == 2, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr, (name, stderr)
        assert __import__("re").search(patterns[name], lines[0]), (name, lines[0])
        assert not out.exists(), name


def test_a_folder_of_nnunet_channel_files_is_one_case_per_case(tmp_path, mri_model, capsys):
    folder = tmp_path / "imagesTs"
    for i in range(2):
        write_mri_case(folder, f"case{i}", i, "files")
    for label in folder.glob("*_lab.nii.gz"):
        label.unlink()
    argv = ["attack", folder, "--model", mri_model, "--out-dir", tmp_path / "o", *QUICK]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    rows = (tmp_path / "o" / "attack_results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["case0", "case1"]
    assert len(list((tmp_path / "o").glob("case1_adv_000?.nii.gz"))) == 4


def test_a_report_on_a_multichannel_datalist(tmp_path, mri_model):
    import vafa.report as R

    entries = [write_mri_case(tmp_path, f"case{i}", i, "files") for i in range(2)]
    grid = R.ReportGrid(
        [R.GridEntry("table1", "clean", {}, ""),
         R.GridEntry("table1", "vafa", {"q_max": 20, "steps": 1, "block_size": 8}, "q_max=20")],
        [],
    )  # fmt: skip
    cases = [(f"case{i}", [tmp_path / f for f in e["image"]], tmp_path / e["label"])
             for i, e in enumerate(entries)]  # fmt: skip
    result = R.run_report([("mri", mri_model)], cases, tmp_path / "rep", grid=grid)
    rows = read_csv_rows(result.results_csv)
    assert [(r["case"], r["key"], r["status"]) for r in rows] == [
        (case, key, "ok") for case in ("case0", "case1") for key in ("clean", grid.table1[1].key)
    ]
    assert float(rows[1]["linf"]) > 0 and float(rows[1]["ssim"]) < 1  # attacked
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "case0_0000.nii.gz` + `" in report  # the case's four files are listed


def test_training_on_a_multichannel_datalist(tmp_path, mri_model, capsys):
    entries = [write_mri_case(tmp_path, f"case{i}", i, "4d") for i in range(3)]
    datalist = tmp_path / "data.json"
    datalist.write_text(json.dumps({"training": entries[:2], "validation": entries[2:]}))
    out = tmp_path / "run"
    argv = ["train", "--datalist", datalist, "--model", mri_model, "--mode", "fgsm", "--eps", "2"]
    argv += ["--epochs", "1", "--iterations-per-epoch", "2", "--out-dir", out, "-q"]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    from vafa.io.checkpoints import load_card

    card = load_card(next(out.glob("*.json")))
    assert card.in_channels == 4 and card.channel_names == NAMES
