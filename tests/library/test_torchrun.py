"""``torchrun -m vafa attack|report``: two gloo processes on the CPU against one process.

Both sides run as subprocesses with one thread each (torchrun's workers get
``OMP_NUM_THREADS=1``), so the same seeds must give bit-identical volumes and rows.
``--tee 3`` prefixes each worker's lines with ``[default<rank>]:``, which shows which rank
ran a case.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from distributed_launch import job_env
from factories import read_csv_rows, run_vafa, save_nifti, save_tiny_model, write_noise_ct

pytestmark = pytest.mark.slow

SHAPE = (20, 18, 16)
ATTACK = ["--steps", "3", "--block-size", "8", "--q-max", "20", "--seed", "7", "-q"]
REPORT = ["--no-sweeps", "--seed", "3", "-q"]
#: ``vafa`` whose ``run_report`` is given a grid of two entries (clean and a 2-step VAFA), as
#: the CLI tests of test_report.py do; the rest of the command line is the real one.
SMALL_REPORT = """
import functools
import sys
import vafa.report as R

GRID = R.ReportGrid([
    R.GridEntry("table1", "clean", {}, ""),
    R.GridEntry(
        "table1", "vafa", {"q_max": 20, "steps": 2, "block_size": 8, **R.LIBRARY_VAFA}, "q_max=20"
    ),
])
R.run_report = functools.partial(R.run_report, grid=GRID)
from vafa.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _torchrun_vafa(args, cwd: Path, world: int = 1, script=None) -> subprocess.CompletedProcess:
    """``python -m vafa ARGS --device cpu`` (world 1) or ``torchrun --nproc_per_node WORLD -m
    vafa ARGS …`` (``script``: that file instead of ``-m vafa``) in ``cwd``."""
    args = [*args, "--device", "cpu"]
    return run_vafa(*args, world=world, script=script, cwd=cwd, env=job_env(), timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three labelled CT-like cases, a tiny model, ``data.json`` and ``bad.json`` (the three
    cases and an unreadable one)."""
    folder = tmp_path_factory.mktemp("torchrun")
    save_tiny_model(folder / "tiny.safetensors")
    cases = []
    for i in range(3):
        labels = np.zeros(SHAPE, np.uint8)
        labels[5 + i : 14, 4:12, 3:12] = 1
        labels[8:11, 6:9, 5:9] = 2
        write_noise_ct(folder / f"case{i}.nii.gz", SHAPE, seed=i)
        save_nifti(folder / f"case{i}_seg.nii.gz", labels)
        cases.append({"image": f"case{i}.nii.gz", "label": f"case{i}_seg.nii.gz"})
    (folder / "bad.nii.gz").write_bytes(b"not a nifti")
    (folder / "data.json").write_text(json.dumps({"validation": cases}))
    (folder / "bad.json").write_text(json.dumps({"validation": [*cases, {"image": "bad.nii.gz"}]}))
    return folder


def _sorted(rows):
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def _adversarial_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_adv.nii.gz"))}


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- attack
@pytest.fixture(scope="module")
def attacked(data):
    """The datalist attacked by one process (``one``) and by two (``two``)."""
    common = ["attack", "--datalist", "data.json", "--model", "tiny.safetensors", *ATTACK]
    single = _torchrun_vafa([*common, "--out-dir", "one"], data)
    double = _torchrun_vafa([*common, "--out-dir", "two"], data, world=2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-2000:]
    return data / "one", data / "two"


def test_torchrun_attack_writes_what_one_process_writes(attacked):
    one, two = attacked
    assert (
        _visible(two)
        == _visible(one)
        == [
            "attack_results.csv",
            "case0_adv.json",
            "case0_adv.nii.gz",
            "case1_adv.json",
            "case1_adv.nii.gz",
            "case2_adv.json",
            "case2_adv.nii.gz",
        ]
    )
    assert read_csv_rows(two / "attack_results.csv") == read_csv_rows(one / "attack_results.csv")
    rows = read_csv_rows(one / "attack_results.csv")
    assert [r["case"] for r in rows] == ["case0", "case1", "case2"]
    assert all(
        r["status"] == "ok" and float(r["dice_fg"]) < float(r["dice_fg_clean"]) for r in rows
    )
    volumes_one, volumes_two = _adversarial_arrays(one), _adversarial_arrays(two)
    assert volumes_one.keys() == volumes_two.keys() and len(volumes_one) == 3
    for name, array in volumes_one.items():
        assert np.array_equal(array, volumes_two[name]), name
    # the attacks differ between cases (each case attacked, none copied)
    assert not np.array_equal(volumes_one["case0_adv.nii.gz"], volumes_one["case1_adv.nii.gz"])
    for name in ("case0_adv.json", "case1_adv.json", "case2_adv.json"):
        a, b = (json.loads((d / name).read_text()) for d in (one, two))
        assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
        assert a["settings"]["attack"]["seed"] == 7


def test_torchrun_attack_resumes_and_reports_a_bad_case(attacked, data):
    """A job killed partway: case 0 done, case 1 cut between its two renames (volume without
    JSON), case 2 never started. The restart keeps case 0's files untouched, finishes the
    others as one process would, and reports the bad case (index 3: rank 1's) as failed."""
    one, two = attacked
    out = data / "resumed"
    shutil.copytree(two, out)
    (out / "attack_results.csv").unlink()
    (out / "case1_adv.json").unlink()
    (out / "case1_adv.nii.gz").write_bytes(b"half written")
    for name in ("case2_adv.json", "case2_adv.nii.gz"):
        (out / name).unlink()
    kept = {n: (out / n).stat().st_mtime_ns for n in ("case0_adv.json", "case0_adv.nii.gz")}
    args = ["attack", "--datalist", "bad.json", "--model", "tiny.safetensors", *ATTACK]
    done = _torchrun_vafa([*args, "--out-dir", "resumed", "--resume"], data, world=2)
    assert done.returncode != 0  # the bad case: exit status 1 in every process
    log = done.stdout + done.stderr
    assert "[default1]:vafa attack: bad.nii.gz" in log  # reported by the rank that owns it
    assert "1 of 4 case(s) failed" in log
    assert kept == {n: (out / n).stat().st_mtime_ns for n in kept}  # not recomputed
    resumed, reference = _adversarial_arrays(out), _adversarial_arrays(one)
    assert resumed.keys() == reference.keys()
    for name, array in reference.items():
        assert np.array_equal(resumed[name], array), name
    rows = read_csv_rows(out / "attack_results.csv")
    assert rows[:3] == read_csv_rows(one / "attack_results.csv")
    assert rows[3]["case"] == "bad" and rows[3]["status"].startswith("failed: ")
    assert not (out / "bad_adv.nii.gz").exists()
    # settings that differ are not taken for finished work
    again = _torchrun_vafa([*args, "--steps", "4", "--out-dir", "resumed", "--resume"], data)
    assert again.returncode == 1
    assert "other settings (steps)" in again.stderr


# ----------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def reported(data):
    """A two-entry grid on two cases (four items), by one process and by two."""
    pair = {"validation": json.loads((data / "data.json").read_text())["validation"][:2]}
    (data / "pair.json").write_text(json.dumps(pair))
    script = data / "small_report.py"
    script.write_text(SMALL_REPORT)
    common = ["report", "--model", "tiny.safetensors", "--datalist", "pair.json", *REPORT]
    single = _torchrun_vafa([*common, "--out", "r1"], data, script=script)
    double = _torchrun_vafa([*common, "--out", "r2"], data, world=2, script=script)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-2000:]
    return data / "r1", data / "r2", common, script


def test_torchrun_report_writes_what_one_process_writes(reported):
    r1, r2, _, _ = reported
    assert _visible(r2) == _visible(r1)
    assert "report.md" in _visible(r1) and "results.csv" in _visible(r1)
    rows1 = read_csv_rows(r1 / "results.csv", drop=("seconds",))
    rows2 = read_csv_rows(r2 / "results.csv", drop=("seconds",))
    assert len(rows1) == 4 and {r["status"] for r in rows1} == {"ok"}
    assert {(r["case"], r["attack"]) for r in rows1} == {
        (c, a) for c in ("case0", "case1") for a in ("clean", "vafa")
    }
    assert _sorted(rows2) == _sorted(rows1)
    # the qualitative slices (first case) were saved by whichever rank ran the entry
    assert sorted(p.name for p in (r2 / "slices").iterdir()) == sorted(
        p.name for p in (r1 / "slices").iterdir()
    )


def test_torchrun_report_resumes_without_recomputing(reported, data):
    """Part files left by a killed job (here a rank 5 of a bigger job) hold finished rows:
    the restart keeps those rows (their `seconds` says so) and runs only the rest."""
    r1, _, common, script = reported
    out = data / "r3"
    (out / ".vafa-parts").mkdir(parents=True)
    chosen = [{**row, "seconds": "4242"} for row in read_csv_rows(r1 / "results.csv")[1:3]]
    with open(out / ".vafa-parts" / "results.rank5.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    done = _torchrun_vafa([*common, "--out", "r3"], data, world=2, script=script)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (out / ".vafa-parts").exists()
    rows = read_csv_rows(out / "results.csv")
    assert len(rows) == 4
    kept = [r for r in rows if r["seconds"] == "4242"]
    assert len(kept) == 2
    assert _sorted(read_csv_rows(out / "results.csv", drop=("seconds",))) == _sorted(
        read_csv_rows(r1 / "results.csv", drop=("seconds",))
    )


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    from datetime import timedelta

    from vafa.run.distributed import EVALUATION_TIMEOUT, _timeout

    monkeypatch.delenv("VAFA_DIST_TIMEOUT_MIN", raising=False)
    assert _timeout(None) is None  # training: torch's default
    assert _timeout(EVALUATION_TIMEOUT) == timedelta(hours=24)
    monkeypatch.setenv("VAFA_DIST_TIMEOUT_MIN", "1.5")
    assert _timeout(None) == _timeout(EVALUATION_TIMEOUT) == timedelta(seconds=90)
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("VAFA_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(ValueError, match="VAFA_DIST_TIMEOUT_MIN must be a positive number"):
            _timeout(None)
