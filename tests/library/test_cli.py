"""The ``vafa`` command line on a tiny model and synthetic CT-like volumes."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from factories import run_vafa, write_noise_ct

from vafa.cli import main
from vafa.io.checkpoints import save_card
from vafa.io.models import ModelCard, build_model


def _labels(tmp_path, like, name="labels.nii.gz", values=3):
    img = nib.load(like)
    rng = np.random.default_rng(1)
    lab = rng.integers(0, values, img.shape).astype(np.uint8)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(lab, img.affine), path)
    return path


def test_help_on_every_command(capsys):
    for command in ("demo", "attack", "evaluate", "info", "gui", "train", "report"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "usage: vafa " + command in capsys.readouterr().out


def test_attack_single_file_writes_volume_and_json(model_file, tmp_path, capsys):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    labels = _labels(tmp_path, ct)
    out = tmp_path / "adv.nii.gz"
    code = main(
        [
            "attack",
            str(ct),
            "--model",
            str(model_file),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--steps",
            "2",
            "--block-size",
            "8",
            "--quiet",
        ]
    )
    assert code == 0
    src, adv = nib.load(ct), nib.load(out)
    np.testing.assert_allclose(adv.affine, src.affine)
    assert adv.shape == src.shape and adv.get_data_dtype() == np.float32
    doc = json.loads((tmp_path / "adv.json").read_text())
    assert doc["settings"]["attack"]["q_max"] == 20.0
    assert set(doc["metrics"]["dice_fg"]) == {"clean", "adversarial"}
    # air outside the window keeps its HU unless the attack moved it into the window
    air = adv.get_fdata()[:3]
    assert np.all((air == -1000) | (air >= -175)) and (air == -1000).any()


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--paper"], {"paper": True, "normalize": "slice", "keep": "last", "hard_round": False}),
        (["--keep", "last", "--hard-round"], {"paper": False, "keep": "last", "hard_round": True}),
    ],
)
def test_attack_paper_and_hard_round_flags(flags, expected, model_file, tmp_path):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "adv.nii.gz"
    argv = ["attack", str(ct), "--model", str(model_file), "--out", str(out), "--steps", "2"]
    assert main([*argv, "--block-size", "8", "--quiet", *flags]) == 0
    doc = json.loads((tmp_path / "adv.json").read_text())
    assert expected.items() <= doc["settings"]["attack"].items()
    returned = {row["step"] for row in doc["history"] if row["returned"]}
    assert returned == ({"hard"} if "--hard-round" in flags else {2})


def test_attack_creates_missing_output_folders_and_takes_a_preset_card(tmp_path):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    bare = tmp_path / "weights" / "model_best.pt"  # a checkpoint without a card
    bare.parent.mkdir()
    card = ModelCard.from_preset("segresnet", roi_size=(16, 16, 16), spacing=None)
    torch.save({"state_dict": build_model(card).state_dict()}, bare)
    out = tmp_path / "new" / "deeper" / "adv.nii.gz"
    argv = ["attack", str(ct), "--model", str(bare), "--out", str(out), "--quiet"]
    assert main([*argv, "--card", "segresnet", "--steps", "1", "--block-size", "8"]) == 0
    assert out.is_file() and out.with_name("adv.json").is_file()
    # a card file still works the same way
    save_card(card, tmp_path / "card.json")
    out_dir = tmp_path / "batch" / "out"
    argv = ["attack", str(ct.parent), "--model", str(bare), "--card", str(tmp_path / "card.json")]
    assert main([*argv, "--out-dir", str(out_dir), "--steps", "1", "--block-size", "8", "-q"]) == 0
    assert (out_dir / "ct_adv.nii.gz").is_file()


def test_attack_pgd_prints_table_and_json(model_file, tmp_path, capsys):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    code = main(
        [
            "attack",
            str(ct),
            "--model",
            str(model_file),
            "--out",
            str(tmp_path / "a.nii.gz"),
            "--attack",
            "pgd",
            "--eps",
            "8",
            "--steps",
            "2",
            "--json",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["linf"] <= 8 / 255 + 1e-6 and metrics["reference"] == "clean_prediction"


def test_attack_folder_continues_past_bad_cases(model_file, tmp_path, capsys):
    folder = tmp_path / "cases"
    folder.mkdir()
    write_noise_ct(folder / "a.nii.gz")
    write_noise_ct(folder / "b.nii.gz", seed=2)
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(
        [
            "attack",
            str(folder),
            "--model",
            str(model_file),
            "--out-dir",
            str(out_dir),
            "--attack",
            "fgsm",
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "1 of 3 case(s) failed" in err and "broken.nii.gz" in err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a_adv.json",
        "a_adv.nii.gz",
        "attack_results.csv",
        "b_adv.json",
        "b_adv.nii.gz",
    ]
    table = (out_dir / "attack_results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table] == ["case", "a", "b", "broken"]
    assert table[3].split(",")[4].startswith("failed: ") and table[1].split(",")[4] == "ok"


def test_attack_datalist(model_file, tmp_path):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    labels = _labels(tmp_path, ct)
    datalist = tmp_path / "data.json"
    datalist.write_text(json.dumps({"validation": [{"image": ct.name, "label": labels.name}]}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert (
        main(
            [
                "attack",
                "--datalist",
                str(datalist),
                "--model",
                str(model_file),
                "--out-dir",
                str(out_dir),
                "--attack",
                "gn",
                "--quiet",
            ]
        )
        == 0
    )
    assert (out_dir / "ct_adv.nii.gz").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["attack", "missing.nii.gz", "--out", "x.nii.gz"], "no such file"),
        (
            ["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--attack", "pgd", "--q-max", "30"],
            "q_max",
        ),
        (["attack", "{ct}", "--out", "{ct}"], "input"),
        (["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--q-min", "30", "--q-max", "5"], "q_min"),
        (["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--block-size", "0"], "block-size"),
        (["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--labels", "{bad_labels}"], "classes"),
        (["attack", "{ct}", "--out", "{ct}/x.nii.gz"], "not a folder"),
        (["attack", "{ct}", "--out", "{tmp}/new/x.nii.gz", "--card", "unetr"], "a preset"),
        (
            ["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--card", "{tmp}/nocard.json"],
            "nocard.json",
        ),
        (["evaluate", "{ct}", "--adversarial", "{other}"], "grid"),
        (["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--attack", "pgd", "--paper"], "paper"),
        (
            ["attack", "{ct}", "--out", "{tmp}/x.nii.gz", "--paper", "--normalize", "clip"],
            "paper=True fixes normalize='slice'",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(
    argv, message, model_file, tmp_path, capsys
):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    other = write_noise_ct(tmp_path / "other.nii.gz", (10, 10, 10))
    bad_labels = _labels(tmp_path, ct, "bad.nii.gz", values=9)
    subst = {"ct": ct, "tmp": tmp_path, "other": other, "bad_labels": bad_labels}
    argv = [a.format(**subst) for a in argv] + ["--model", str(model_file), "--quiet"]
    before = sorted(p.name for p in tmp_path.iterdir())
    ct_bytes = ct.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert ct.read_bytes() == ct_bytes


def test_evaluate_formats(model_file, tmp_path, capsys):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    labels = _labels(tmp_path, ct)
    for fmt in ("table", "json", "csv"):
        assert (
            main(
                [
                    "evaluate",
                    str(ct),
                    "--model",
                    str(model_file),
                    "--labels",
                    str(labels),
                    "--format",
                    fmt,
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        if fmt == "json":
            assert json.loads(out)["reference"] == "labels"
        elif fmt == "csv":
            assert out.splitlines()[0] == "metric,clean,adversarial"
        else:
            assert "Dice foreground mean" in out


def test_info_prints_card_and_parameters(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert '"architecture": "unet"' in out and "parameters:" in out


def test_python_dash_m_and_no_traceback_in_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vafa", "info", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "none.pt" in result.stderr


def test_attack_quiet_json_prints_only_the_json(model_file, tmp_path):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "a.nii.gz"
    argv = ["attack", ct, "--model", model_file, "--out", out, "--steps", "1", "--block-size", "8"]
    done = run_vafa(*argv, "--quiet", "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)  # nothing but the JSON: no table, no bar
    assert set(metrics["dice_fg"]) == {"clean", "adversarial"} and out.is_file()
    assert done.stderr == ""


def test_version_prints_the_package_version():
    from vafa import __version__

    done = run_vafa("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"vafa {__version__}"


def test_gui_without_a_display_is_one_line_and_exit_2_before_qt():
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    code = (
        "import sys\n"
        "from vafa.cli import main\n"
        "status = main(['gui'])\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'vispy'))\n"
        "print(qt)\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "[]"  # Qt was never imported
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "no display" in err[0] and "xvfb-run -a vafa gui" in err[0], err
    done = run_vafa("gui", env=env)  # the console command itself
    assert done.returncode == 2 and done.stderr.strip().splitlines() == err


@pytest.mark.parametrize(
    "environ,platform,refused",
    [
        ({}, "linux", True),
        ({"QT_QPA_PLATFORM": "xcb"}, "linux", True),
        ({"QT_QPA_PLATFORM": "wayland;xcb"}, "linux", True),
        ({"QT_QPA_PLATFORM": "offscreen"}, "linux", False),
        ({"QT_QPA_PLATFORM": "vnc:size=800x600"}, "linux", False),
        ({"DISPLAY": ":99"}, "linux", False),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
        ({}, "darwin", False),
        ({}, "win32", False),
    ],
)
def test_gui_display_check_follows_the_qt_platform(environ, platform, refused):
    from vafa.cli.gui import display_problem

    assert (display_problem(environ, platform) is not None) == refused


def _earlier_demo(out, names=("adversarial.nii.gz", "metrics.json", "figure.png")):
    """``out`` as an earlier ``vafa demo`` left it (placeholder contents); ``{name: bytes}``."""
    out.mkdir()
    for name in names:
        (out / name).write_bytes(f"earlier {name}".encode())
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_demo_refuses_to_replace_an_earlier_run_without_overwrite(tmp_path):
    out = tmp_path / "vafa-demo"
    before = _earlier_demo(out)
    done = run_vafa("demo", "--out", out, "--attack", "gn", "--quiet")
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    # the first output it would write, named; how to replace it said
    assert f"{out / 'adversarial.nii.gz'} exists" in err[0] and "--overwrite" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written
    assert done.stdout == ""


@pytest.mark.slow
def test_demo_overwrite_replaces_an_earlier_run(tmp_path):
    out = tmp_path / "vafa-demo"
    before = _earlier_demo(out)
    done = run_vafa("demo", "--out", out, "--attack", "gn", "--quiet", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["settings"]
    assert nib.load(out / "adversarial.nii.gz").shape == nib.load(out / "clean.nii.gz").shape
    assert all((out / name).read_bytes() != data for name, data in before.items())
    assert {"figure.png", "clean_prediction.nii.gz"} <= {p.name for p in out.iterdir()}
