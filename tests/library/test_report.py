"""``vafa.report`` and ``vafa report`` on a tiny model and small synthetic CT volumes."""

import functools
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from factories import non_blank, read_csv_rows, save_tiny_model

import vafa.report as R
from vafa.attacks import build_attack
from vafa.attacks.base import drive
from vafa.cli import main
from vafa.io.checkpoints import load_model
from vafa.io.volume import load_labels, load_volume
from vafa.run.pipeline import evaluate, run_attack

SHAPE = (16, 16, 16)  # one 16³ tile: fast
ORGAN_SLICES = (4, 11)  # labelled k range [4, 11): the middle slice is 7


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return save_tiny_model(folder / "tiny.safetensors", 0), save_tiny_model(
        folder / "tiny2.safetensors", 1
    )


def _case(folder, name="case", seed=0):
    rng = np.random.default_rng(seed)
    hu = rng.normal(40, 60, SHAPE).astype(np.int16)
    hu[:3] = -1000
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    lab = np.zeros(SHAPE, np.uint8)
    k0, k1 = ORGAN_SLICES
    lab[5:14, 4:12, k0:k1] = 1
    lab[8:11, 6:9, k0 + 1 : k1 - 1] = 2
    hu[lab == 1] += 80
    ct, seg = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), ct)
    nib.save(nib.Nifti1Image(lab, affine), seg)
    return ct, seg


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return _case(tmp_path_factory.mktemp("case"))


def _vafa(q_max=20, steps=1, block=8, table="table1"):
    options = {"q_max": q_max, "steps": steps, "block_size": block, **R.LIBRARY_VAFA}
    return R.GridEntry(table, "vafa", options, f"q_max={q_max}")


SMALL_TABLE1 = [
    R.GridEntry("table1", "clean", {}, ""),
    R.GridEntry("table1", "pgd", {"eps": 4, "alpha": 0.01, "steps": 1}, "ε=4"),
    R.GridEntry("table1", "gn", {"std": 4}, "σ=4"),
    _vafa(),
]
SMALL_SWEEPS = [
    _vafa(q_max=10, table="qmax"),
    _vafa(q_max=20, table="qmax"),
    _vafa(steps=2, table="steps"),
    _vafa(block=4, table="block"),
]

#: 4 + 4 entries (3 new sweep keys) of 1–2 steps instead of the paper's grid.
SMALL_GRID = R.ReportGrid(SMALL_TABLE1, SMALL_SWEEPS)


@pytest.fixture
def small_grid(monkeypatch):
    """``vafa report`` with :data:`SMALL_GRID`: the command's ``run_report`` is given the grid
    (the library tests pass ``grid=`` themselves)."""
    monkeypatch.setattr(R, "run_report", functools.partial(R.run_report, grid=SMALL_GRID))


@pytest.fixture
def count_attacks(monkeypatch):
    """Count the calls of ``vafa.run.pipeline.iter_run_attack`` (the attack runs)."""
    import vafa.run.pipeline

    calls = []
    original = vafa.run.pipeline.iter_run_attack

    def counted(*args, **kwargs):
        calls.append(kwargs.get("attack"))
        return original(*args, **kwargs)

    monkeypatch.setattr(vafa.run.pipeline, "iter_run_attack", counted)
    return calls


def _loaded(model_path, case):
    model, card = load_model(model_path, device="cpu")
    image = load_volume(case[0])
    return model, card, image, load_labels(case[1], image, card.out_channels)


# ----------------------------------------------------------------------------- grids
def test_table1_grid_has_the_papers_rows():
    grid = R.table1_grid()
    assert [e.label for e in grid] == [
        "clean",
        "PGD ε=4",
        "PGD ε=8",
        "FGSM ε=4",
        "FGSM ε=8",
        "BIM ε=4",
        "BIM ε=8",
        "SegPGD ε=4",
        "SegPGD ε=8",
        "CosPGD ε=4",
        "CosPGD ε=8",
        "GN σ=4",
        "GN σ=8",
        "VAFA-2D q_max=20, 32²",
        "VAFA q_max=20",
        "VAFA q_max=30",
        "SA2 ρ=0.2, 8³",
    ]
    assert len({e.key for e in grid}) == 17
    assert all(e.table == "table1" for e in grid)
    pgd8 = grid[2]
    assert pgd8.options == {"eps": 8, "alpha": 0.01, "steps": 20}
    assert pgd8.key == "pgd|alpha=0.01,eps=8,steps=20"
    segpgd8 = grid[8]
    assert segpgd8.key == "segpgd|alpha=0.01,eps=8,steps=20"  # the same budget as PGD's row
    vafa20 = grid[14]
    assert vafa20.options["q_max"] == 20 and vafa20.options["block_size"] == 32
    assert vafa20.options["normalize"] == "clip" and vafa20.options["keep"] == "best"
    assert grid[13].options["block_size"] == (32, 32)
    assert grid[16].key == "sa2|block_size=8,factor_step=0.1,rho=0.2,steps=10"  # as published


def test_paper_switches_every_vafa_entry_to_the_published_code():
    for grid in (R.report_grid(paper=True), R.report_grid(paper=True, quick=True)):
        vafa = [e for e in grid if e.attack in ("vafa", "vafa2d")]
        assert len(vafa) >= 3
        for e in vafa:
            assert e.options == {**e.options, "paper": True, "q_min": 5}
            built = build_attack(e.attack, torch.nn.Conv3d(1, 2, 1), **e.options)
            assert (built.normalize, built.keep, built.q_init) == ("slice", "last", "max")
        voxel = [e for e in grid if e.attack in ("pgd", "fgsm", "bim", "gn")]
        assert all("normalize" not in e.options for e in voxel)
    default_keys = {e.key for e in R.report_grid()}
    paper_keys = {e.key for e in R.report_grid(paper=True)}
    vafa_default = {k for k in default_keys if k.startswith("vafa")}
    assert vafa_default and not vafa_default & paper_keys  # resumes never mix the two


def test_sweeps_and_quick_grid():
    sweeps = R.sweep_grid()
    by_table = {t: [e for e in sweeps if e.table == t] for t in ("qmax", "steps", "block")}
    assert [e.options["q_max"] for e in by_table["qmax"]] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [e.options["steps"] for e in by_table["steps"]] == [10, 20, 30, 40, 50, 60]
    assert [e.options["block_size"] for e in by_table["block"]] == [4, 8, 16, 32, 48, 96]
    assert {e.setting for e in by_table["block"]} >= {"4³", "96³"}
    full = R.report_grid()
    keys = [e.key for e in full]
    assert len(keys) == len(set(keys))
    assert set(keys) == {e.key for e in R.table1_grid() + sweeps}
    assert len(R.report_grid(sweeps=False)) == 17
    quick = R.report_grid(quick=True)
    assert len(quick) < len(full) // 2
    assert len(R.table1_grid(quick=True)) < 12
    for e in quick:
        if "steps" in e.options and e.table != "steps":
            assert e.options["steps"] == R.QUICK_STEPS


def test_report_grid_holds_the_tables_and_checks_its_entries():
    grid = R.ReportGrid(SMALL_TABLE1, SMALL_SWEEPS)
    assert isinstance(grid.table1, tuple) and grid.sweeps == tuple(SMALL_SWEEPS)
    keys = [e.key for e in grid.entries()]
    assert len(keys) == len(set(keys)) == len(SMALL_TABLE1) + 3  # q_max 20 is table 1's VAFA
    assert grid.entries(sweeps=False) == SMALL_TABLE1
    standard = R.ReportGrid.standard(quick=True)
    assert list(standard.table1) == R.table1_grid(quick=True)
    assert list(standard.sweeps) == R.sweep_grid(quick=True)
    assert standard.entries() == R.report_grid(quick=True)
    with pytest.raises(TypeError, match="GridEntry"):
        R.ReportGrid([("table1", "clean")])
    with pytest.raises(ValueError, match="sweep"):
        R.ReportGrid(SMALL_TABLE1, [SMALL_TABLE1[1]])  # a Table-1 row among the sweeps


def test_report_settings_check_their_choices():
    for bad in ({"sweep_models": "some"}, {"amp": "fp8"}, {"band_block": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            R.ReportSettings(**bad)
    settings = R.ReportSettings(sweep_models="first")
    assert settings.sweeps_on(0) and not settings.sweeps_on(1)
    assert R.ReportSettings(sweep_models="all").sweeps_on(1)
    assert not R.ReportSettings(sweeps=False).sweeps_on(0)


def test_key_is_stable_and_order_independent():
    a = R.GridEntry("x", "pgd", {"steps": 20, "eps": 4.0}, "")
    b = R.GridEntry("y", "pgd", {"eps": 4, "steps": 20}, "other label")
    assert a.key == b.key == "pgd|eps=4,steps=20"
    assert R.GridEntry("table1", "clean", {}, "").key == "clean"


# ----------------------------------------------------------------------------- iter_grid
def test_iter_grid_rows_match_independent_runs(models, case, count_attacks):
    model, card, image, labels = _loaded(models[0], case)
    entries = [*SMALL_TABLE1, R.GridEntry("table1", "fgsm", {"eps": 8}, "ε=8")]
    events = []
    rows = drive(
        R.iter_grid(
            model, card, image, labels, entries, model_name="tiny", case_name="c", slices=True
        ),
        events.append,
    )
    assert [r["key"] for r in rows] == [e.key for e in entries]
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    assert count_attacks == ["pgd", "gn", "vafa", "fgsm"]  # the clean row runs no attack
    starts = [e for e in events if e.step is None and e.row is None]
    ends = [e for e in events if e.row is not None]
    assert [e.index for e in starts] == [1, 2, 3, 4, 5] and {e.total for e in starts} == {5}
    assert len(ends) == 5 and any(e.step is not None for e in events)

    clean = evaluate(model, card, image, labels)
    for row in rows:
        for key in ("dice_fg", "dice", "hd95"):
            assert row[f"{key}_clean"] == pytest.approx(getattr(clean, key).clean)
        for key in ("dice_fg", "dice", "ssim", "linf"):
            assert math.isfinite(row[key])
        assert row["model"] == "tiny" and row["case"] == "c" and row["reference"] == "labels"
        assert json.loads(row["options"]) == json.loads(
            json.dumps(dict(entries[rows.index(row)].options))
        )
    first = rows[0]
    assert first["dice_fg"] == first["dice_fg_clean"] and first["dice"] == first["dice_clean"]
    assert (first["ssim"], first["linf"]) == (1.0, 0.0)
    pgd = rows[1]
    assert pgd["linf"] <= 4 / 255 + 1e-6
    fgsm8 = rows[4]
    assert 4 / 255 < fgsm8["linf"] <= 8 / 255 + 1e-6
    # the same attack run on its own gives the same numbers
    alone = run_attack(model, card, image, labels, attack="pgd", options=entries[1].options, seed=0)
    assert pgd["dice_fg"] == pytest.approx(alone.metrics.dice_fg.adversarial)
    assert pgd["ssim"] == pytest.approx(alone.metrics.ssim)
    # qualitative slices: middle of the labelled extent, image in [0, 1], predictions, labels
    k0, k1 = ORGAN_SLICES
    for row in rows:
        piece = row["slice"]
        assert piece["index"] == (k0 + k1 - 1) // 2
        assert piece["image"].shape == piece["prediction"].shape == SHAPE[:2]
        assert piece["image"].min() >= 0 and piece["image"].max() <= 1
    expected = np.rint(labels.array[:, :, (k0 + k1 - 1) // 2])
    np.testing.assert_array_equal(rows[0]["slice"]["labels"], expected)
    assert not np.array_equal(rows[0]["slice"]["image"], rows[1]["slice"]["image"])


def test_iter_grid_cancel_and_skip(models, case):
    model, card, image, labels = _loaded(models[0], case)
    gen = R.iter_grid(
        model, card, image, labels, SMALL_TABLE1, model_name="m", case_name="c", skip={"clean"}
    )
    event = next(gen)
    assert event.entry.attack == "pgd" and event.total == 3
    with pytest.raises(StopIteration) as stop:
        while True:
            event = gen.send(False if event.step is not None else None)
    rows = stop.value.value
    assert [(r["attack"], r["status"]) for r in rows] == [("pgd", "cancelled")]

    gen = R.iter_grid(model, card, image, labels, SMALL_TABLE1, model_name="m", case_name="c")
    event = next(gen)
    while event.row is None or event.entry.attack != "pgd":
        event = gen.send(None)
    with pytest.raises(StopIteration) as stop:
        gen.send(False)  # cancel between entries: the rows done are returned
    assert [(r["attack"], r["status"]) for r in stop.value.value] == [
        ("clean", "ok"),
        ("pgd", "ok"),
    ]


def test_a_grid_runs_its_attacks_through_the_sliding_window(models, case):
    model, card, image, labels = _loaded(models[0], case)
    grid = R.ReportGrid(SMALL_TABLE1[:2]).through("sliding-window")
    clean, pgd = grid.table1
    assert clean.through == "tiles" and pgd.through == "sliding-window"
    assert pgd.key == SMALL_TABLE1[1].key + "|through=sliding-window"
    assert pgd.label == "PGD ε=4 (sliding window)"
    outcomes = []
    rows = drive(R.iter_grid(model, card, image, labels, list(grid.table1), model_name="m",
                             case_name="c", on_outcome=lambda e, o: outcomes.append(o)))  # fmt: skip
    assert [(r["key"], r["status"]) for r in rows] == [("clean", "ok"), (pgd.key, "ok")]
    assert outcomes[0].settings["attack"]["through"] == "sliding-window"
    standard = R.ReportGrid.standard(quick=True, through="sliding-window")
    assert {e.through for e in standard.table1 if e.attack != "clean"} == {"sliding-window"}
    with pytest.raises(ValueError, match="through must be one of"):
        R.GridEntry("table1", "pgd", {}, "", through="windows")


def test_iter_grid_failed_entry_does_not_stop_the_grid(models, case):
    model, card, image, labels = _loaded(models[0], case)
    bad = R.GridEntry("table1", "vafa", {"q_max": 20, "bogus": 1, "steps": 1}, "bad")
    entries = [bad, SMALL_TABLE1[2]]
    rows = drive(R.iter_grid(model, card, image, labels, entries, model_name="m", case_name="c"))
    assert rows[0]["status"].startswith("failed: ") and "bogus" in rows[0]["status"]
    assert rows[0]["dice_fg"] is None
    assert rows[1]["status"] == "ok" and math.isfinite(rows[1]["dice_fg"])


# ----------------------------------------------------------------------------- run_report
@pytest.mark.slow  # ~15 s quiet, 30 s on the shared 2-core machine
def test_run_report_writes_everything(models, case, tmp_path, count_attacks):
    second = _case(tmp_path, "second", seed=3)
    args = (
        [("tiny", models[0]), ("tiny2", models[1])],
        [("case", case[0], case[1]), ("second", second[0], None)],
        tmp_path / "out",
    )
    result = R.run_report(*args, seed=0, grid=SMALL_GRID)
    out = tmp_path / "out"
    n_first = 4 + 3  # table 1 + the sweeps' new keys (q_max 20 is table 1's VAFA)
    assert result.ran == 2 * (n_first + 4) and result.skipped == 0 and result.failed == 0
    csv_rows = read_csv_rows(out / "results.csv")
    assert len(csv_rows) == result.ran
    assert tuple(csv_rows[0]) == R.RESULT_FIELDS
    assert {r["status"] for r in csv_rows} == {"ok"}
    assert all(r["lpips"] == "" for r in csv_rows)
    assert {r["reference"] for r in csv_rows if r["case"] == "second"} == {"clean_prediction"}
    assert sum(r["model"] == "tiny" for r in csv_rows) == 2 * n_first
    assert sum(r["model"] == "tiny2" for r in csv_rows) == 2 * 4  # sweeps on the first model
    clean = next(r for r in csv_rows if r["model"] == "tiny2" and r["key"] == "clean")
    assert clean["dice_fg"] == clean["dice_fg_clean"] and clean["psnr"] == ""

    text = (out / "report.md").read_text()
    assert "## Table 6" in text and "tiny dice" not in text
    table6 = text.split("## Table 6")[1]
    assert "tiny Dice fg" in table6 and "tiny2 Dice fg" in table6
    assert result.table6 in text and "tiny2 DSC" in result.table6
    for name in ("Table 2", "Table 3", "Table 4", "library defaults", "LPIPS", "## Trends"):
        assert name in text
    # a table cell is the mean over the cases of the CSV values
    pgd = SMALL_TABLE1[1].key
    values = [float(r["dice_fg"]) for r in csv_rows if r["model"] == "tiny2" and r["key"] == pgd]
    pgd_line = next(line for line in table6.splitlines() if line.startswith("| PGD ε=4 |"))
    assert pgd_line.split(" | ")[3] == f"{np.mean(values):.3f}"  # attack, tiny fg, tiny DSC, tiny2
    # the worst case over the members in the grid (PGD ε 4, VAFA q_max 20), per model and case
    worst = text.split("## Worst case over attacks")[1].split("\n## ")[0]
    members = {SMALL_TABLE1[1].key, SMALL_TABLE1[3].key}
    for model, case_name in (("tiny", "case"), ("tiny2", "second")):
        lowest = min(float(r["dice_fg"]) for r in csv_rows
                     if r["model"] == model and r["case"] == case_name and r["key"] in members)  # fmt: skip
        line = next(x for x in worst.splitlines() if x.startswith(f"| {model} | {case_name} |"))
        assert line.split(" | ")[-2] == f"{lowest:.3f}"
    for name in (
        "dice_vs_qmax.png",
        "dice_vs_steps.png",
        "dice_vs_block.png",
        "table1_bars.png",
        "qualitative.png",
    ):
        assert non_blank(out / name), name
        assert f"({name})" in text
    assert set(result.plots) == {"qmax", "steps", "block", "table1_bars", "qualitative", "transfer"}
    assert "## Transfer matrix" in text and (out / "transfer.csv").is_file()  # two models
    assert len(list((out / "slices").glob("*.npz"))) == n_first + 4  # first case only
    assert not list(out.glob(".*partial*"))


def test_run_report_resumes(models, case, tmp_path, count_attacks):
    args = ([("tiny", models[0])], [("case", case[0], case[1])], tmp_path / "out")
    csv_path = tmp_path / "out" / "results.csv"
    first = R.run_report(*args, sweeps=False, grid=SMALL_GRID)
    assert first.ran == len(SMALL_TABLE1) and len(count_attacks) == len(SMALL_TABLE1) - 1
    # resume: nothing runs again
    count_attacks.clear()
    again = R.run_report(*args, sweeps=False, grid=SMALL_GRID)
    assert again.ran == 0 and again.skipped == first.ran and count_attacks == []
    assert len(read_csv_rows(csv_path)) == first.ran
    # drop two finished rows and tear the last line (an interrupted run): those two run again
    lines = csv_path.read_text().splitlines(keepends=True)
    dropped = read_csv_rows(csv_path)[-2:]
    csv_path.write_text("".join(lines[:-2]) + lines[-1][:20])
    third = R.run_report(*args, sweeps=False, grid=SMALL_GRID)
    assert third.ran == 2 and len(count_attacks) == sum(r["key"] != "clean" for r in dropped)
    rows = R.read_results(csv_path)
    assert sorted(r["key"] for r in rows) == sorted(e.key for e in SMALL_TABLE1)
    assert third.report.is_file() and len(third.rows) == len(SMALL_TABLE1)


def test_run_report_records_failures_and_continues(models, case, tmp_path):
    bad = R.GridEntry("table1", "pgd", {"eps": -1, "steps": 1}, "ε=-1")
    grid = R.ReportGrid([SMALL_TABLE1[0], bad, SMALL_TABLE1[2]])
    broken = _case(tmp_path, "broken")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), broken[1])  # wrong grid
    cases = [("case", case[0], case[1]), ("broken", broken[0], broken[1])]
    out = tmp_path / "out"
    result = R.run_report([("tiny", models[0])], cases, out, grid=grid, sweeps=False)
    rows = read_csv_rows(out / "results.csv")
    statuses = {(r["case"], r["key"]): r["status"] for r in rows}
    assert statuses[("case", "clean")] == "ok" and statuses[("case", bad.key)].startswith("failed")
    assert statuses[("case", SMALL_TABLE1[2].key)] == "ok"
    assert statuses[("broken", "case")].startswith("failed: ")
    assert result.failed == 2 and result.report is not None
    text = result.report.read_text()
    assert "## Entries that did not finish" in text and bad.key in text
    # a re-run retries only the failed ones
    again = R.run_report([("tiny", models[0])], cases, out, grid=grid, sweeps=False)
    assert again.ran == 1 and again.failed == 2  # bad entry re-run (fails again) + broken case


def test_run_report_cancel_writes_no_report(models, case, tmp_path):
    seen = []

    def stop_at_second_row(event):
        if event.row is not None:
            seen.append(event.row["key"])
            return len(seen) < 2

    out = tmp_path / "out"
    result = R.run_report(
        [("tiny", models[0])],
        [("c", *case)],
        out,
        grid=SMALL_GRID,
        sweeps=False,
        callback=stop_at_second_row,
    )
    assert result.cancelled and result.report is None
    assert [r["key"] for r in read_csv_rows(out / "results.csv")] == seen
    assert not (out / "report.md").exists()


def test_a_plan_runs_the_grid_it_is_given(models, case, tmp_path, count_attacks):
    """plan → run → write with a one-attack grid passed in (nothing patched)."""
    gn = R.GridEntry("table1", "gn", {"std": 4}, "σ=4")
    grid = R.ReportGrid([gn])
    out = tmp_path / "out"
    plan = R.plan_report([("tiny", models[0])], [("c", *case)], out, R.ReportSettings(), grid=grid)
    assert plan.grid is grid and plan.entries(0) == [gn]
    assert [m.name for m in plan.models] == ["tiny"] and plan.cases[0].labels == case[1]
    assert not out.exists()  # planning writes nothing
    result = R.run_plan(plan)
    assert (result.ran, result.failed, result.cancelled) == (1, 0, False)
    assert count_attacks == ["gn"] and [r["key"] for r in result.rows] == [gn.key]
    assert result.report is None  # written by the write step
    R.write_plan_report(plan, result)
    text = result.report.read_text()
    table6 = text.split("## Table 6")[1].split("##")[0]
    assert "| GN σ=4 |" in table6 and "PGD" not in table6 and "clean" not in table6
    assert result.table6 in text and set(result.plots) >= {"table1_bars", "qualitative"}
    # run_report with the same grid: everything is done already
    again = R.run_report([("tiny", models[0])], [("c", *case)], out, grid=grid)
    assert (again.ran, again.skipped) == (0, 1) and again.report == result.report


def test_run_report_refuses_bad_inputs_before_writing(models, case, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unique"):
        R.run_report([("a", models[0]), ("a", models[1])], [("c", *case)], out)
    with pytest.raises(FileNotFoundError):
        R.run_report([("a", models[0])], [("c", tmp_path / "nope.nii.gz", None)], out)
    assert not out.exists()
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        R.run_report([("a", models[0])], [("c", *case)], out)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]


# ----------------------------------------------------------------------------- CLI
def test_cli_report_end_to_end(models, case, tmp_path, small_grid, capsys):
    out = tmp_path / "rep"
    argv = ["report", str(case[0]), "--labels", str(case[1]), "--model", str(models[0])]
    code = main([*argv, "--model", str(models[1]), "--out", str(out), "--no-sweeps"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Table 6" in captured.out and "tiny2 Dice fg" in captured.out
    assert "| VAFA q_max=20 |" in captured.out
    assert f"{out / 'report.md'}" in captured.out
    rows = read_csv_rows(out / "results.csv")
    assert len(rows) == 2 * len(SMALL_TABLE1)
    assert {r["case"] for r in rows} == {"case"}
    # re-run resumes (quiet: prints nothing)
    assert main([*argv, "--out", str(out), "--no-sweeps", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert len(read_csv_rows(out / "results.csv")) == 2 * len(SMALL_TABLE1)


def test_cli_report_datalist_and_paper(models, tmp_path, small_grid, capsys, monkeypatch):
    seen = {}
    original = R.run_report

    def spy(*args, **kwargs):
        seen.update(kwargs, models=args[0], cases=args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(R, "run_report", spy)
    a, b = _case(tmp_path, "a"), _case(tmp_path, "b", seed=2)
    datalist = tmp_path / "data.json"
    datalist.write_text(
        json.dumps({"validation": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, "b.nii.gz"]})
    )
    out = tmp_path / "rep"
    code = main(
        [
            "report",
            "--datalist",
            str(datalist),
            "--model",
            str(models[0]),
            "--out",
            str(out),
            "--paper",
            "--quick",
            "--no-sweeps",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert seen["paper"] and seen["quick"] and not seen["sweeps"]
    assert [c[0] for c in seen["cases"]] == ["a", "b"]
    assert seen["cases"][1][2] is None and seen["models"] == [("tiny", str(models[0]))]
    assert "published code" in (out / "report.md").read_text()
    del a, b


@pytest.mark.parametrize(
    "extra, message",
    [
        (["IMG", "--labels", "LAB", "LAB"], "--labels: 2 file(s) for 1 IMAGE"),
        (["IMG", "--model", "MISSING"], "no such file"),
        (["MISSING"], "no such file"),
        (["--labels", "LAB"], "--labels needs IMAGE"),
        (["IMG", "--datalist", "DATA"], "not both"),
        (["--datalist", "DATA", "--split", "training"], "no list of cases"),
        (["IMG", "--lpips-weights", "MISSING"], "--lpips-weights"),
        (["IMG", "--lpips-weights", "LAB"], "LPIPS"),  # a file, but not weights
    ],
)
def test_cli_report_bad_inputs_exit_2_and_write_nothing(
    models, case, tmp_path, capsys, extra, message
):
    datalist = tmp_path / "data.json"
    datalist.write_text(json.dumps({"validation": [str(case[0])]}))
    names = {
        "IMG": str(case[0]),
        "LAB": str(case[1]),
        "MISSING": str(tmp_path / "missing.nii.gz"),
        "DATA": str(datalist),
    }
    argv = ["report", *(names.get(a, a) for a in extra), "--out", str(tmp_path / "rep")]
    if "--model" not in extra:
        argv += ["--model", str(models[0])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vafa report: error: ")
    assert message in err
    assert not (tmp_path / "rep").exists()


def test_cli_report_ctrl_c_keeps_finished_rows(
    models, case, tmp_path, small_grid, monkeypatch, capsys
):
    import vafa.run.pipeline

    original = vafa.run.pipeline.iter_run_attack
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(vafa.run.pipeline, "iter_run_attack", interrupt_second)
    out = tmp_path / "rep"
    code = main(
        ["report", str(case[0]), "--model", str(models[0]), "--out", str(out), "--no-sweeps"]
    )
    assert code == 130
    assert "resume" in capsys.readouterr().err
    assert [r["key"] for r in read_csv_rows(out / "results.csv")] == ["clean", SMALL_TABLE1[1].key]
    assert not (out / "report.md").exists()
    assert not list(out.glob("*.png"))


def test_cli_report_defaults_to_bundled_models_and_sample(tmp_path, monkeypatch, capsys):
    from vafa.io.data import bundled_models, sample_paths

    seen = {}

    def fake(models, cases, out, **kwargs):
        seen.update(models=models, cases=cases, out=out, **kwargs)
        return R.ReportResult(out_dir=out, results_csv=out / "results.csv")

    monkeypatch.setattr(R, "run_report", fake)
    assert main(["report", "--out", str(tmp_path / "rep"), "--quick", "--sweep-all", "-q"]) == 0
    assert seen["models"] == [(name, name) for name in bundled_models()]
    ct, labels = sample_paths()
    assert seen["cases"] == [("sample_ct", ct, labels)]
    assert seen["quick"] and seen["sweep_models"] == "all" and seen["sweeps"]
    assert not seen["paper"] and seen["seed"] == 0 and seen["device"] == "auto"


def test_cli_report_fills_lpips_from_local_weights(models, tmp_path, small_grid, capsys):
    """--lpips-weights: the column holds LPIPS between the clean and the attacked model input."""
    from safetensors.torch import save_file

    from vafa.io.lpips import LPIPS, load_lpips, volume_lpips

    rng = np.random.default_rng(7)
    shape = (40, 36, 6)  # axial slices of at least 31² (AlexNet's smallest input)
    ct, seg = tmp_path / "big.nii.gz", tmp_path / "big_seg.nii.gz"
    hu = rng.normal(40, 60, shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[10:30, 8:28, 1:5] = 1
    nib.save(nib.Nifti1Image(hu, np.eye(4)), ct)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), seg)
    torch.manual_seed(3)
    metric = LPIPS()
    for head in metric.heads:  # LPIPS's learned heads are non-negative
        head.weight.abs_()
    weights = tmp_path / "lpips.safetensors"
    save_file(metric.state_dict(), str(weights))
    out = tmp_path / "rep"
    argv = ["report", str(ct), "--labels", str(seg), "--model", str(models[0]), "--no-sweeps"]
    argv += ["--lpips-weights", str(weights), "--out", str(out), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = {r["key"]: r for r in read_csv_rows(out / "results.csv")}
    assert float(rows["clean"]["lpips"]) == 0.0
    gn = next(e for e in SMALL_TABLE1 if e.attack == "gn")
    for entry in SMALL_TABLE1[1:]:
        assert float(rows[entry.key]["lpips"]) > 0, entry.key
    # the GN row (seeded) against LPIPS of an independent run of the same attack
    model, card = load_model(models[0], device="cpu")
    image = load_volume(ct)
    outcome = run_attack(
        model, card, image, load_labels(seg, image, 3), attack="gn", options=gn.options, seed=0
    )
    adversarial01 = outcome.model_input.mapping.forward(outcome.adversarial.array)
    expected = volume_lpips(
        load_lpips(weights),
        outcome.model_input.tensor,
        torch.from_numpy(np.asarray(adversarial01, np.float32))[None, None],
    )
    assert float(rows[gn.key]["lpips"]) == pytest.approx(float(expected[0]), rel=1e-4)
    text = (out / "report.md").read_text()
    assert "AlexNet LPIPS" in text and "| LPIPS |" in text.split("## Table 1/5")[1]


def test_lpips_column_stays_empty_for_slices_too_small(models, case, tmp_path):
    from safetensors.torch import save_file

    from vafa.io.lpips import LPIPS

    weights = tmp_path / "lpips.safetensors"
    save_file(LPIPS().state_dict(), str(weights))
    result = R.run_report(
        [("tiny", models[0])],
        [("case", *case)],
        tmp_path / "r",
        grid=SMALL_GRID,
        sweeps=False,
        lpips_weights=weights,
    )
    lpips = {r["key"]: r["lpips"] for r in result.rows}
    assert lpips["clean"] == 0.0  # 16² slices: no LPIPS for the attacks, but no failure either
    assert all(v is None for k, v in lpips.items() if k != "clean")
    assert {r["status"] for r in result.rows} == {"ok"}
