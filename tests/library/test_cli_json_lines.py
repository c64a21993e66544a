"""``vafa attack --json`` on a folder or a datalist: JSON Lines on stdout, one object per case
(failed and resumed cases included), each naming its case; nothing else on stdout."""

import json

from factories import write_datalist, write_noise_ct

from vafa.cli import main


def _attack(argv, capsys):
    code = main(["attack", *map(str, argv), "--attack", "fgsm", "--device", "cpu"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    return code, [json.loads(line) for line in lines], captured.err


def test_a_folder_gives_one_line_per_case_failures_included(model_file, tmp_path, capsys):
    folder = tmp_path / "cases"
    write_noise_ct(folder / "a.nii.gz")
    write_noise_ct(folder / "b.nii.gz", seed=2)
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    argv = [folder, "--model", model_file, "--out-dir", out, "--json", "--quiet"]
    code, docs, err = _attack(argv, capsys)

    assert code == 1 and "1 of 3 case(s) failed" in err  # the failures still go to stderr
    assert [d["case"] for d in docs] == ["a", "b", "broken"]
    assert [d["index"] for d in docs] == [0, 1, 2]
    for doc in docs[:2]:
        assert doc["status"] == "ok" and doc["error"] is None and not doc["resumed"]
        assert doc["labels"] is None  # no labels: the model's own prediction is attacked
        assert doc["metrics"]["reference"] == "clean_prediction"
        assert doc["adversarial"] == str(out / f"{doc['case']}_adv.nii.gz")
        assert doc["json"] == str(out / f"{doc['case']}_adv.json")
        written = json.loads((out / f"{doc['case']}_adv.json").read_text())
        assert written["metrics"]["dice_fg"] == doc["metrics"]["dice_fg"]
    broken = docs[2]
    assert broken["status"] == "failed" and broken["metrics"] is None and broken["error"]


def test_a_datalist_gives_lines_without_quiet_and_resumed_cases_too(model_file, tmp_path, capsys):
    datalist = write_datalist(tmp_path, cases=3, training=1)  # two validation cases
    out = tmp_path / "out"
    argv = ["--datalist", datalist, "--model", model_file, "--out-dir", out, "--json"]
    code, docs, _ = _attack(argv, capsys)  # no --quiet: bars on stderr, stdout is JSON only

    assert code == 0
    assert [d["case"] for d in docs] == ["case1_img", "case2_img"]
    assert all(d["metrics"]["reference"] == "labels" and d["labels"] for d in docs)
    assert all(d["labels"].endswith(f"{d['case'].removesuffix('_img')}_lab.nii.gz") for d in docs)

    code, again, _ = _attack([*argv, "--resume"], capsys)
    assert code == 0 and [d["case"] for d in again] == ["case1_img", "case2_img"]
    assert all(d["resumed"] and d["status"] == "ok" for d in again)
    assert [d["metrics"]["dice_fg"] for d in again] == [d["metrics"]["dice_fg"] for d in docs]


def test_a_single_image_still_prints_one_document(model_file, tmp_path, capsys):
    ct = write_noise_ct(tmp_path / "ct.nii.gz")
    argv = [ct, "--model", model_file, "--out", tmp_path / "adv.nii.gz", "--json", "--quiet"]
    assert main(["attack", *map(str, argv), "--attack", "fgsm"]) == 0
    doc = json.loads(capsys.readouterr().out)  # the metrics, as before (not a line per case)
    assert doc["reference"] == "clean_prediction" and "case" not in doc
