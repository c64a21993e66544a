"""``vafa report`` with two models: the transfer matrix (transfer.csv, table, heat map) and
``--bands`` (bands.csv, table, bar plot), checked against direct evaluations."""

import functools

import nibabel as nib
import numpy as np
import pytest
from factories import non_blank, read_csv_rows, save_tiny_model

import vafa.report as R
from vafa.cli import main
from vafa.io.checkpoints import load_model
from vafa.io.volume import load_labels, load_volume
from vafa.run.pipeline import evaluate, run_attack

SHAPE = (16, 16, 16)
TABLE1 = [
    R.GridEntry("table1", "clean", {}, ""),
    R.GridEntry("table1", "pgd", {"eps": 8, "alpha": 0.01, "steps": 2}, "ε=8"),
    R.GridEntry(
        "table1", "vafa", {"q_max": 30, "steps": 2, "block_size": 8, **R.LIBRARY_VAFA}, "q_max=30"
    ),
]
GRID = R.ReportGrid(TABLE1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return [save_tiny_model(folder / f"m{seed}.safetensors", seed) for seed in (0, 1)]


def _case(folder, name, seed, labelled=True):
    rng = np.random.default_rng(seed)
    hu = rng.normal(40, 60, SHAPE).astype(np.int16)
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:14, 4:12, 4:11] = 1
    lab[8:11, 6:9, 5:10] = 2
    hu[lab == 1] += 80
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    ct, seg = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), ct)
    nib.save(nib.Nifti1Image(lab, affine), seg)
    return (name, ct, seg if labelled else None)


def test_transfer_matrix_and_bands_match_direct_evaluations(models, tmp_path):
    cases = [_case(tmp_path, "a", 0), _case(tmp_path, "b", 3, labelled=False)]
    names = ["m0", "m1"]
    out = tmp_path / "out"
    result = R.run_report(
        list(zip(names, models, strict=True)), cases, out, grid=GRID, sweeps=False, bands=True,
        band_block=8,
    )  # fmt: skip
    assert result.failed == 0
    results = {(r["model"], r["case"], r["key"]): r for r in read_csv_rows(out / "results.csv")}
    transfer = read_csv_rows(out / "transfer.csv")
    attacks = [e for e in TABLE1 if e.attack != "clean"]
    assert len(transfer) == len(attacks) * 2 * 2 * 2 and {r["status"] for r in transfer} == {"ok"}
    cell = {(r["source"], r["target"], r["case"], r["key"]): r for r in transfer}
    loaded = {
        name: load_model(path, device="cpu") for name, path in zip(names, models, strict=True)
    }
    for case, ct, seg in cases:
        image = load_volume(ct)
        for source in names:
            for entry in attacks:
                # diagonal: the report's own adversarial Dice of that entry
                own = cell[source, source, case, entry.key]
                row = results[source, case, entry.key]
                assert float(own["dice_fg"]) == pytest.approx(float(row["dice_fg"]), abs=1e-5)
                if entry.attack != "pgd":
                    continue  # one attack is enough for the direct re-evaluation
                # off-diagonal: the other model evaluated directly on this adversarial volume
                model, card = loaded[source]
                labels = None if seg is None else load_labels(seg, image, card.out_channels)
                outcome = run_attack(model, card, image, labels, attack=entry.attack,
                                     options=entry.options, seed=0)  # fmt: skip
                target = names[1 - names.index(source)]
                t_model, t_card = loaded[target]
                direct = evaluate(t_model, t_card, image, labels, outcome.adversarial)
                other = cell[source, target, case, entry.key]
                expected = direct.dice_fg.adversarial
                assert float(other["dice_fg"]) == pytest.approx(expected, abs=1e-5)
                assert float(other["dice_fg_clean"]) == pytest.approx(
                    direct.dice_fg.clean, abs=1e-5
                )
                assert other["reference"] == ("labels" if seg else "clean_prediction")
    text = (out / "report.md").read_text()
    section = text.split("## Transfer matrix")[1].split("##")[0]
    assert "| adversarial made on → scored on | `m0` | `m1` |" in section
    assert result.transfer in text and "PGD ε=8 on `m1`" in result.transfer
    assert non_blank(out / "transfer.png") and "(transfer.png)" in text

    # bands: four rows per model × case × attack; 'all' re-evaluates the report's adversarial
    bands = read_csv_rows(out / "bands.csv")
    assert len(bands) == 4 * 2 * 2 * len(attacks) and {r["block"] for r in bands} == {"8"}
    for (model, case, key), row in results.items():
        if row["attack"] == "clean":
            continue
        mine = {
            r["band"]: r for r in bands if (r["model"], r["case"], r["key"]) == (model, case, key)
        }
        assert float(mine["all"]["dice_fg"]) == pytest.approx(float(row["dice_fg"]), abs=1e-5)
        parts = sum(float(mine[b]["energy"]) for b in ("low", "middle", "high"))
        assert parts == pytest.approx(float(mine["all"]["energy"]), rel=1e-4)
    assert "## Perturbation bands" in text and non_blank(out / "bands.png")
    assert {"transfer", "bands"} <= set(result.plots)


def test_resume_reruns_only_entries_missing_their_transfer_rows(models, tmp_path):
    import vafa.run.pipeline

    cases = [_case(tmp_path, "a", 0)]
    args = ([("m0", models[0]), ("m1", models[1])], cases, tmp_path / "out")
    first = R.run_report(*args, grid=GRID, sweeps=False)
    assert first.ran == 2 * len(TABLE1) and not (tmp_path / "out" / "bands.csv").exists()
    again = R.run_report(*args, grid=GRID, sweeps=False)
    assert again.ran == 0
    (tmp_path / "out" / "transfer.csv").unlink()
    calls = []
    original = vafa.run.pipeline.iter_run_attack

    def counted(*a, **k):
        calls.append(k["attack"])
        return original(*a, **k)

    vafa.run.pipeline.iter_run_attack = counted
    try:
        third = R.run_report(*args, grid=GRID, sweeps=False)
    finally:
        vafa.run.pipeline.iter_run_attack = original
    assert sorted(calls) == sorted(["pgd", "vafa"] * 2) and third.ran == 4
    assert len(read_csv_rows(tmp_path / "out" / "transfer.csv")) == 2 * 2 * 2


def test_cli_report_prints_the_transfer_matrix_and_checks_band_block(
    models, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(R, "run_report", functools.partial(R.run_report, grid=GRID))
    _, ct, seg = _case(tmp_path, "a", 0)
    out = tmp_path / "out"
    argv = ["report", str(ct), "--labels", str(seg), "--model", str(models[0]),
            "--model", str(models[1]), "--no-sweeps", "--out", str(out)]  # fmt: skip
    assert main([*argv, "--band-block", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "band_block must be a positive int" in err[0]
    assert not out.exists()
    assert main([*argv, "--bands", "--band-block", "8", "--quiet"]) == 0
    assert main([*argv, "--bands", "--band-block", "8"]) == 0  # resumed: prints the tables
    printed = capsys.readouterr().out
    assert "Transfer matrix" in printed and "| clean |" in printed
    assert (out / "bands.csv").is_file() and "## Perturbation bands" in (
        out / "report.md"
    ).read_text()
