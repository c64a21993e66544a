"""``--through``: the threat model on the command line (vafa attack, and with the worst case)."""

import json

import pytest
from factories import write_noise_ct

from vafa.cli import main


def test_attack_through_the_sliding_window_and_resume_it(model_file, tmp_path, capsys):
    folder = tmp_path / "cases"
    write_noise_ct(folder / "a.nii.gz", shape=(24, 20, 18))
    out = tmp_path / "out"
    base = ["attack", str(folder), "--model", str(model_file), "--out-dir", str(out), "--quiet",
            "--attack", "pgd", "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main([*base, "--through", "sliding-window"]) == 0
    settings = json.loads((out / "a_adv.json").read_text())["settings"]["attack"]
    assert settings["through"] == "sliding-window" and settings["tiles"] == 1
    assert settings["roi"] == [24, 20, 18]  # the whole volume is the one piece attacked
    capsys.readouterr()
    assert main([*base, "--through", "sliding-window", "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"]
    assert main([*base, "--resume"]) == 1  # tiles: other settings
    assert "other settings (through, roi)" in capsys.readouterr().err


def test_the_worst_case_through_the_sliding_window(model_file, tmp_path, capsys):
    ct = write_noise_ct(tmp_path / "ct.nii.gz", shape=(20, 18, 16))
    argv = ["attack", str(ct), "--model", str(model_file), "--out", str(tmp_path / "w.nii.gz"),
            "--attack", "worst-case", "--through", "sliding-window", "--steps", "1",
            "--block-size", "8", "--floor", "0", "--json", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    account = json.loads(capsys.readouterr().out)["worst_case"]
    assert all(m["settings"]["through"] == "sliding-window" for m in account["members"])


def test_a_threat_model_that_does_not_exist_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "x.nii.gz", "--model", "demo", "--through", "windows"])
    assert exit_.value.code == 2 and "invalid choice: 'windows'" in capsys.readouterr().err
