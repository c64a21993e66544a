"""``vafa attack --attack worst-case``: every member's Dice, the winner, shared options, the
floor, JSON Lines for a folder and --resume."""

import json

import pytest
from factories import run_cli, write_noise_ct

FAST = ["--steps", "1", "--block-size", "8", "--device", "cpu", "--seed", "1"]


def _vafa_attack(argv, capsys):
    return run_cli(["attack", *argv], capsys)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return write_noise_ct(tmp_path_factory.mktemp("ct") / "ct.nii.gz")


def test_every_member_runs_and_the_lowest_is_kept(model_file, ct, tmp_path, capsys):
    out = tmp_path / "worst.nii.gz"
    argv = [ct, "--model", model_file, "--attack", "worst-case", "--floor", "0", "--q-max", "30",
            "--out", out, "--json", "--quiet", *FAST]  # fmt: skip
    code, stdout, _ = _vafa_attack(argv, capsys)
    assert code == 0
    doc = json.loads(stdout)
    account = doc["worst_case"]
    members = {m["attack"]: m for m in account["members"]}
    assert list(members) == ["SA2", "PGD", "SegPGD", "CosPGD", "VAFA"]
    assert all(m["ran"] for m in members.values())
    lowest = min(members.values(), key=lambda m: m["dice_fg"])
    assert account["winner"] == lowest["attack"] == doc["attack"]
    assert doc["dice_fg"]["adversarial"] == pytest.approx(lowest["dice_fg"])
    # the shared options reach every member that takes them; budgets are each member's own
    assert members["VAFA"]["settings"]["q_max"] == 30 and members["PGD"]["settings"]["eps"] == 4
    assert all(m["settings"]["steps"] == 1 for m in members.values())
    # the same member run alone gives the same Dice (same seed, same options)
    alone = tmp_path / "pgd.nii.gz"
    voxel = [a for a in FAST if a not in ("--block-size", "8")]  # PGD has no blocks
    assert (
        _vafa_attack(
            [ct, "--model", model_file, "--attack", "pgd", "--out", alone, *voxel], capsys
        )[0]
        == 0
    )
    written = json.loads((tmp_path / "pgd.json").read_text())
    assert members["PGD"]["dice_fg"] == pytest.approx(written["metrics"]["dice_fg"]["adversarial"])
    sidecar = json.loads((tmp_path / "worst.json").read_text())
    assert sidecar["settings"]["worst_case"]["winner"] == account["winner"]


def test_the_floor_stops_a_case_and_the_table_says_so(model_file, ct, tmp_path, capsys):
    argv = [ct, "--model", model_file, "--attack", "worst-case", "--floor", "1",
            "--out", tmp_path / "w.nii.gz", *FAST]  # fmt: skip
    code, stdout, _ = _vafa_attack(argv, capsys)
    assert code == 0
    assert "worst case over SA2, PGD, SegPGD, CosPGD, VAFA" in stdout
    assert stdout.count("not run (a member reached the floor 1)") == 4


def test_a_folder_resumes_with_the_same_ensemble_and_refuses_another(model_file, tmp_path, capsys):
    folder = tmp_path / "cases"
    write_noise_ct(folder / "a.nii.gz")
    out = tmp_path / "out"
    base = [folder, "--model", model_file, "--attack", "worst-case", "--out-dir", out, *FAST]
    code, stdout, _ = _vafa_attack([*base, "--json", "--quiet"], capsys)
    assert code == 0
    (line,) = [json.loads(x) for x in stdout.splitlines()]
    assert line["case"] == "a" and line["worst_case"]["winner"]
    code, stdout, _ = _vafa_attack([*base, "--json", "--quiet", "--resume"], capsys)
    assert code == 0 and json.loads(stdout)["resumed"]
    code, _, err = _vafa_attack([*base, "--quiet", "--resume", "--eps", "8"], capsys)
    assert code == 1 and "other settings (members)" in err


def test_an_option_no_member_takes_is_one_line(model_file, ct, tmp_path, capsys):
    argv = [ct, "--model", model_file, "--attack", "worst-case", "--std", "4",
            "--out", tmp_path / "x.nii.gz", *FAST]  # fmt: skip
    code, _, err = _vafa_attack(argv, capsys)
    assert code == 2 and "no attack of the worst case takes option(s) ['std']" in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_evaluate_takes_the_worst_of_several_adversarial_volumes(model_file, ct, tmp_path, capsys):
    files = []
    for attack, extra in (("pgd", ["--eps", "8"]), ("gn", ["--std", "2"])):
        out = tmp_path / f"{attack}.nii.gz"
        argv = [ct, "--model", model_file, "--attack", attack, "--out", out, "--quiet",
                "--device", "cpu", *extra]  # fmt: skip
        assert _vafa_attack(argv, capsys)[0] == 0
        files.append(out)
    base = ["evaluate", ct, "--model", model_file, "--json"]
    alone = [json.loads(run_cli([*base, "--adversarial", f], capsys)[1]) for f in files]
    code, stdout, _ = run_cli([*base, "--adversarial", *files], capsys)
    assert code == 0
    doc = json.loads(stdout)
    dice = [a["dice_fg"]["adversarial"] for a in alone]
    lowest = min(range(2), key=dice.__getitem__)
    assert doc["worst_case"]["winner"] == files[lowest].name
    assert doc["dice_fg"]["adversarial"] == pytest.approx(dice[lowest])
    assert [m["dice_fg"] for m in doc["worst_case"]["members"]] == pytest.approx(dice)
    code, stdout, _ = run_cli([*base[:-1], "--adversarial", *files], capsys)
    assert code == 0 and f"{files[lowest].name} is the lowest" in stdout
