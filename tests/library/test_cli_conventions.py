"""One set of conventions on every ``vafa`` command: the common flags ``--device``, ``--seed``,
``--quiet``, ``--json`` and ``--overwrite`` are accepted everywhere, and each command's help says
which of them it ignores; ``--json`` prints only the result (also with ``--quiet``); user
errors are one stderr line and exit status 2, internal errors exit 1.

Cheap on purpose: ``--help`` and parsing for the command × flag matrix, runs on a tiny model
and 16³ volumes for the rest."""

import functools
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from factories import run_cli, save_tiny_model

from vafa.cli import build_parser, main

COMMON = ("--device", "--seed", "--quiet", "--json", "--overwrite")

#: command → (the least argv it parses, the common flags it ignores)
COMMANDS = {
    "demo": ([], set()),
    "attack": (["--model", "m.safetensors"], set()),
    "evaluate": (["ct.nii.gz", "--model", "m.safetensors"], {"--seed", "--overwrite"}),
    "info": (["m.safetensors"], {"--device", "--seed", "--quiet", "--overwrite"}),
    "train": ([], set()),
    "report": (["--out", "rep"], {"--overwrite"}),
    "gui": ([], set(COMMON)),
    "slicer install": (["modules"], {"--device", "--seed"}),
}

VALUES = {"--device": ("cpu", "device", "cpu"), "--seed": ("7", "seed", 7)}


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _entry(help_text: str, flag: str) -> str:
    """The help entry of ``flag`` (its line and the wrapped lines under it)."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        options = line.strip().split("  ")[0]
        if line.strip().startswith("-") and flag in [o.split()[0] for o in options.split(", ")]:
            entry = [line]
            for more in lines[i + 1 :]:
                if not more.startswith("   ") or more.lstrip().startswith("-"):
                    break
                entry.append(more)
            return " ".join(" ".join(entry).split())
    raise AssertionError(f"{flag} is not in the help:\n{help_text}")


@pytest.mark.parametrize("flag", COMMON)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_every_common_flag_and_says_which_it_ignores(command, flag, capsys):
    least, ignored = COMMANDS[command]
    entry = _entry(_help(command, capsys), flag)
    assert ("ignored" in entry) == (flag in ignored), entry
    value, dest, parsed = VALUES.get(flag, (None, flag[2:], True))
    argv = [*command.split(), *least, flag, *([value] if value else [])]
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == parsed


def test_the_common_flags_are_defined_once():
    from pathlib import Path

    import vafa.cli

    folder = Path(vafa.cli.__file__).parent
    common = (folder / "common.py").read_text()
    assert all(f'"{flag}"' in common for flag in COMMON)
    for path in folder.glob("*.py"):  # the commands add them only through the shared function
        assert not [f for f in COMMON if f'add_argument("{f}"' in path.read_text()], path.name


# ----------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model, a 16³ CT-like volume and its labels."""
    folder = tmp_path_factory.mktemp("tiny")
    model = save_tiny_model(folder / "tiny.safetensors")
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 60, (16, 16, 16)).astype(np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    labels[6:9, 6:9, 6:9] = 2
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    ct, seg = folder / "ct.nii.gz", folder / "ct_seg.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), ct)
    nib.save(nib.Nifti1Image(labels, affine), seg)
    return {"model": str(model), "ct": str(ct), "labels": str(seg), "folder": folder}


def test_evaluate_json_quiet_and_format(tiny, capsys):
    base = ["evaluate", tiny["ct"], "--model", tiny["model"], "--labels", tiny["labels"]]
    code, out, _ = run_cli([*base, "--quiet"], capsys)
    assert code == 0 and out == ""  # no table
    for flags in (["--json"], ["--json", "--quiet"], ["--format", "json"]):
        code, out, err = run_cli([*base, *flags, "--device", "cpu", "--seed", "1"], capsys)
        assert code == 0, err
        assert json.loads(out)["reference"] == "labels"  # nothing but the JSON
    code, out, err = run_cli([*base, "--json", "--format", "csv"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--json" in err


def test_info_json_and_ignored_flags(tiny, capsys):
    code, out, err = run_cli(
        ["info", tiny["model"], "--json", "--quiet", "--device", "cpu"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["card"]["architecture"] == "unet" and doc["parameters"] > 0
    code, out, _ = run_cli(["info", tiny["model"], "--seed", "3", "--overwrite"], capsys)
    assert code == 0 and "parameters:" in out


def test_train_json_prints_only_the_result(tiny, tmp_path, capsys):
    folder = tiny["folder"]
    datalist = folder / "data.json"
    case = {"image": "ct.nii.gz", "label": "ct_seg.nii.gz"}
    datalist.write_text(json.dumps({"training": [case], "validation": [case]}))
    argv = ["train", "--datalist", datalist, "--model", tiny["model"], "--mode", "clean"]
    argv += ["--epochs", "1", "--iterations-per-epoch", "1", "--batch-size", "1"]
    argv += ["--out-dir", tmp_path / "run", "--device", "cpu", "--seed", "1"]
    code, out, err = run_cli([*argv, "--json", "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["iterations"] == 1 and doc["best"].endswith("best.safetensors")
    code, out, err = run_cli([*argv, "--json"], capsys)  # an earlier run: refused, one line
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--overwrite" in err
    code, out, err = run_cli([*argv, "--json", "--overwrite"], capsys)
    assert code == 0, err
    # the bar and the validation lines went to stderr, no summary on stdout
    assert out.lstrip().startswith("{"), out
    assert json.loads(out)["iterations"] == 1


def test_report_json_prints_only_the_result(tiny, tmp_path, capsys, monkeypatch):
    import vafa.report as R

    entries = [
        R.GridEntry("table1", "clean", {}, ""),
        R.GridEntry("table1", "gn", {"std": 4}, "σ=4"),
    ]
    monkeypatch.setattr(
        R, "run_report", functools.partial(R.run_report, grid=R.ReportGrid(entries))
    )
    argv = ["report", tiny["ct"], "--labels", tiny["labels"], "--model", tiny["model"]]
    argv += ["--out", tmp_path / "rep", "--no-sweeps", "--device", "cpu", "--seed", "1"]
    for flags in (["--json", "--quiet"], ["--json"]):
        code, out, err = run_cli([*argv, *flags], capsys)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["report"].endswith("report.md") and len(doc["rows"]) == 2


def test_slicer_install_json_quiet_and_overwrite(tmp_path, capsys):
    target = tmp_path / "modules"
    code, out, err = run_cli(["slicer", "install", target, "--json"], capsys)
    assert code == 0, err
    written = json.loads(out)["written"]
    assert written and all(p.startswith(str(target)) for p in written)
    code, out, err = run_cli(["slicer", "install", target, "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err
    code, out, err = run_cli(["slicer", "install", target, "--quiet", "--overwrite"], capsys)
    assert code == 0 and out == "", err


def test_gui_ignores_the_common_flags(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    flags = ["--device", "cpu", "--seed", "1", "--quiet", "--json", "--overwrite"]
    code, out, err = run_cli(["gui", *flags], capsys)
    assert code == 2 and out == "" and "no display" in err  # the same refusal as without them


@pytest.mark.parametrize(
    "argv,message",
    [
        (["demo", "--out", "{earlier}"], "--overwrite"),
        (
            ["attack", "{tmp}/missing.nii.gz", "--model", "{model}", "--out", "{tmp}/a.nii.gz"],
            "missing",
        ),
        (["evaluate", "{ct}", "--model", "{tmp}/none.safetensors"], "none.safetensors"),
        (["info", "{tmp}/none.safetensors"], "none.safetensors"),
        (["train", "--model", "{tmp}/none.safetensors", "--out-dir", "{tmp}/run"], "none"),
        (["report", "{tmp}/missing.nii.gz", "--model", "{model}", "--out", "{tmp}/r"], "missing"),
        (["slicer", "install", "{ct}"], "ct.nii.gz"),
        (["evaluate", "{ct}", "--model", "{model}", "--no-such-flag"], "--no-such-flag"),
        (["info"], "weights"),
    ],
)
def test_user_errors_are_one_stderr_line_and_exit_2(argv, message, tiny, tmp_path, capsys):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "adversarial.nii.gz").write_bytes(b"earlier")
    subst = {"tmp": tmp_path, "model": tiny["model"], "ct": tiny["ct"], "earlier": earlier}
    argv = [a.format(**subst) for a in argv] + ["--quiet"]
    try:
        code, out, err = run_cli(argv, capsys)
    except SystemExit as done:  # argparse refuses before a command runs
        code, captured = done.code, capsys.readouterr()
        out, err = captured.out, captured.err
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


def test_internal_errors_exit_1():
    code = (
        "import sys\n"
        "import vafa.cli.info\n"
        "def broken(args):\n"
        "    raise RuntimeError('a bug')\n"
        "vafa.cli.info.run = broken\n"
        "from vafa.cli import main\n"
        "sys.exit(main(['info', 'demo']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1 and "RuntimeError: a bug" in done.stderr


def test_a_reader_that_stops_early_gets_no_traceback():
    """``vafa … --json | head -1``: the pipe closes before vafa is done writing."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vafa", "info", "demo", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # nobody reads: every write fails with EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1) and b"Traceback" not in err and b"Exception" not in err
