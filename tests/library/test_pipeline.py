"""Tests for vafa.run.pipeline (run_attack, evaluate), the model space round trips of
vafa.io.model_space and the outcome files of vafa.io.outcome_files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from factories import ct_phantom, grid_affine, phantom_affine, phantom_card

from vafa.io import outcome_files
from vafa.io.files import json_ready
from vafa.io.intensity import CTWindow
from vafa.io.model_space import from_model_space, labels_to_model_space, to_model_space
from vafa.io.outcome_files import OUTCOME_FILES, write_outcome
from vafa.io.volume import Volume
from vafa.run.pipeline import evaluate, run_attack

CLASSES = ["background", "soft tissue", "bone"]


@pytest.fixture(scope="module")
def card():
    return phantom_card()


def _ct(shape=(40, 36, 20), spacing=(3.0, 3.0, 3.0), seed=0, source=None):
    """The CT phantom (soft tissue ± 25 HU, its bone above the window) and its labels."""
    hu, labels = ct_phantom(shape, seed=seed, noise=25.0)
    image = Volume(hu, phantom_affine(spacing), source=source)
    return image, Volume(labels, phantom_affine(spacing))


# ----------------------------------------------------------------------------- model space
def test_to_model_space_on_the_card_grid(card):
    image, _ = _ct()
    mi = to_model_space(image, card)
    assert not mi.resampled and mi.grid is image and mi.source is image
    assert mi.tensor.shape == (1, 1, 40, 36, 20) and mi.tensor.dtype == torch.float32
    assert mi.mapping == CTWindow(-175.0, 250.0)
    np.testing.assert_array_equal(mi.tensor[0, 0].numpy(), mi.mapping.forward(image.array))
    assert float(mi.tensor.min()) == 0.0 and float(mi.tensor.max()) == 1.0


def test_round_trip_is_exact_in_hu_including_clipped_voxels(card):
    image, _ = _ct()
    mi = to_model_space(image, card)
    back = from_model_space(mi.tensor, mi)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, image.array)  # -1000 and 700 HU included
    np.testing.assert_array_equal(back.affine, image.affine)


def test_changed_voxels_map_back_linearly(card):
    image, _ = _ct()
    mi = to_model_space(image, card)
    moved = (mi.tensor + 0.01).clamp(0, 1)
    back = from_model_space(moved, mi)
    np.testing.assert_allclose(mi.mapping.forward(back.array), moved[0, 0].numpy(), atol=1e-6)
    air = image.array == -1000.0  # 0 → 0.01: now inside the window
    np.testing.assert_allclose(back.array[air], -175.0 + 0.01 * 425.0, rtol=1e-5)
    bone = image.array == 700.0  # still 1 after clamping: keeps its HU
    np.testing.assert_array_equal(back.array[bone], 700.0)


def test_resampling_path_and_resample_back(card):
    image, labels = _ct(shape=(24, 20, 16), spacing=(1.5, 1.5, 1.5))
    mi = to_model_space(image, card)
    assert mi.resampled
    assert mi.grid.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert mi.tensor.shape[2:] == mi.grid.shape
    np.testing.assert_allclose(mi.grid.affine[:3, 3], image.affine[:3, 3])  # origin kept
    back = from_model_space(mi.tensor, mi, resample_back=True)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back.affine, image.affine)
    np.testing.assert_array_equal(back.array, image.array)  # nothing changed: exact input
    moved = from_model_space(mi.tensor * 0.5, mi, resample_back=True)
    assert moved.shape == image.shape and not np.array_equal(moved.array, image.array)
    lab = labels_to_model_space(labels, mi)
    assert lab.dtype == torch.int64 and tuple(lab.shape[2:]) == mi.grid.shape
    assert set(torch.unique(lab).tolist()) <= {0, 1, 2}


def test_resample_false_warns_and_keeps_the_grid(card):
    image, _ = _ct(shape=(16, 16, 16), spacing=(1.5, 1.5, 1.5))
    with pytest.warns(UserWarning, match="resample=False"):
        mi = to_model_space(image, card, resample=False)
    assert not mi.resampled and mi.tensor.shape == (1, 1, 16, 16, 16)


def test_reorientation_counts_as_resampling():
    card = phantom_card(orientation="RAS")
    image, _ = _ct(shape=(16, 16, 16))
    flipped = Volume(image.array, np.diag([-3.0, -3.0, 3.0, 1.0]))  # LPS
    mi = to_model_space(flipped, card)
    assert mi.resampled and mi.grid.orientation == "RAS"
    back = from_model_space(mi.tensor, mi, resample_back=True)
    np.testing.assert_allclose(back.array, flipped.array, atol=1e-3)


def test_labels_errors_name_the_file(card):
    image, labels = _ct()
    mi = to_model_space(image, card)
    bad = Volume(np.full(image.shape, 3.0, np.float32), image.affine, source=Path("lab.nii.gz"))
    with pytest.raises(ValueError, match=r"lab\.nii\.gz holds class 3 .* 3 classes"):
        labels_to_model_space(bad, mi)
    small = Volume(np.zeros((4, 4, 4), np.float32), image.affine)
    with pytest.raises(ValueError, match="is not on the image's grid: it has shape"):
        labels_to_model_space(small, mi)
    shifted = Volume(labels.array, grid_affine((3.0, 3.0, 3.0)))
    with pytest.raises(ValueError, match="affine"):
        labels_to_model_space(shifted, mi)
    with pytest.raises(ValueError, match="integer"):
        labels_to_model_space(Volume(labels.array + 0.5, image.affine), mi)


def test_model_space_rejects_bad_arguments(card):
    image, _ = _ct()
    with pytest.raises(TypeError, match="volume must be"):
        to_model_space(image.array, card)
    with pytest.raises(TypeError, match="card must be"):
        to_model_space(image, {"architecture": "unet"})
    mi = to_model_space(image, card)
    with pytest.raises(ValueError, match="tensor01 must have shape"):
        from_model_space(torch.zeros(1, 1, 4, 4, 4), mi)


# ----------------------------------------------------------------------------- run_attack
@pytest.fixture(scope="module")
def outcome(model, card):
    image, _ = _ct()
    return run_attack(
        model,
        card,
        image,
        attack="vafa",
        options={"steps": 2, "block_size": 8},
        seed=0,
    )


METRIC_KEYS = {
    "reference", "class_names", "dice_per_class", "hd95_per_class", "dice", "dice_fg", "hd95",
    "hd95_missed", "ssim", "psnr", "linf", "l2", "linf_original_units", "flip_rate",
    "zeroed_fraction", "per_tile", "attack", "normalize", "steps", "steps_run", "cancelled",
    "tiles_done", "tiles_total", "protocol",
}  # fmt: skip


def test_run_attack_outputs_shapes_dtypes_and_grids(outcome):
    image, _ = _ct()
    for vol in (
        outcome.adversarial,
        outcome.perturbation,
        outcome.clean_prediction,
        outcome.adversarial_prediction,
        outcome.q_table,
    ):
        assert vol.shape == image.shape and vol.array.dtype == np.float32
        np.testing.assert_array_equal(vol.affine, image.affine)
    np.testing.assert_array_equal(
        outcome.perturbation.array, outcome.adversarial.array - image.array
    )
    for pred in (outcome.clean_prediction, outcome.adversarial_prediction):
        assert pred.original_dtype == np.uint8
        assert set(np.unique(pred.array)) <= {0.0, 1.0, 2.0}
    q = outcome.q_table.array
    assert q.min() >= 5.0 and q.max() <= 20.0  # every voxel has its tile's q
    assert not outcome.cancelled
    assert {"batch", "tiles", "step", "loss", "dice", "ssim", "alpha"} <= set(outcome.history[0])
    assert len(outcome.history) == 18 * 2  # 18 tiles × 2 steps (VAFA evaluates no "final")
    assert {row["returned"] for row in outcome.history} == {True, False}


def test_run_attack_metrics(outcome):
    m = outcome.metrics
    assert set(m.to_dict()) == METRIC_KEYS
    json.dumps(m.to_dict(), allow_nan=False)
    assert m.reference == "clean_prediction" and list(m.class_names) == CLASSES
    assert m.dice.clean == 1.0  # the reference is the clean prediction itself
    assert set(m.dice_per_class.adversarial) == set(CLASSES)
    assert 0.0 <= m.ssim <= 1.0 and 0.0 < m.linf <= 1.0
    assert 0.0 <= m.zeroed_fraction <= 1.0 and m.normalize == "clip"
    assert m.tiles_total == m.tiles_done == 18 and m.steps_run == 36
    assert m.attack == "VAFA" and m.steps == 2
    assert m.per_tile is not None and m.per_tile.dice_fg.adversarial is not None
    assert m.protocol.overlap == 0.5 and m.protocol.spacing_mm == (3.0, 3.0, 3.0)
    # L∞ in HU is the model input's change times the window width; the written file can change
    # more where the attack moved a voxel from outside the window into it
    window = outcome.model_input.mapping.a_max - outcome.model_input.mapping.a_min
    assert m.linf_original_units == pytest.approx(m.linf * window)
    assert m.linf_original_units <= np.abs(outcome.perturbation.array).max() + 1e-3
    assert outcome.settings["seed"] == 0 and outcome.settings["card"] == "unet"


def test_run_attack_with_labels_and_resample_back(model, card):
    image, labels = _ct(shape=(36, 34, 20), spacing=(1.5, 1.5, 1.5))
    out = run_attack(
        model, card, image, labels, attack="fgsm", options={"eps": 8}, resample_back=True
    )
    assert out.metrics.reference == "labels"
    assert out.q_table is None and out.metrics.zeroed_fraction is None
    for vol in (out.adversarial, out.perturbation, out.clean_prediction):
        assert vol.shape == image.shape
        np.testing.assert_array_equal(vol.affine, image.affine)
    mi = out.model_input
    assert mi.resampled and mi.grid.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert tuple(mi.tensor.shape[2:]) == mi.grid.shape != image.shape


def test_run_attack_cancel(model, card):
    image, _ = _ct(shape=(32, 32, 16))
    out = run_attack(
        model,
        card,
        image,
        attack="pgd",
        options={"steps": 2},
        seed=1,
        callback=lambda e: e.tile < 2,
    )
    assert out.cancelled and out.metrics.cancelled
    assert out.metrics.tiles_done == 1 and out.metrics.per_tile is None
    assert out.metrics.steps_run == 3  # tile 1: 2 steps, tile 2: stopped after 1
    later = out.perturbation.array[16:]  # tiles 3 and 4 (raster order: H slowest)
    assert not np.any(later)


def test_iter_run_attack_generator_cancels_by_send(model, card):
    from vafa.run.pipeline import iter_run_attack

    image, _ = _ct(shape=(32, 32, 16))
    gen = iter_run_attack(model, card, image, attack="pgd", options={"steps": 2}, seed=1)
    events = [next(gen)]
    while events[-1].tile < 2:
        events.append(gen.send(None))
    with pytest.raises(StopIteration) as stop:
        gen.send(False)
    outcome = stop.value.value
    assert [(e.tile, e.step) for e in events] == [(1, 1), (1, 2), (2, 1)]
    assert outcome.cancelled and outcome.metrics.tiles_done == 1


def test_run_attack_rejects_seed_in_options(model, card):
    image, _ = _ct()
    with pytest.raises(ValueError, match="options must not contain 'seed'"):
        run_attack(model, card, image, options={"seed": 1})


def test_evaluate_same_keys_and_numbers(model, card, outcome):
    image, _ = _ct()
    clean_only = evaluate(model, card, image, None)
    assert set(clean_only.to_dict()) == METRIC_KEYS
    assert clean_only.dice.adversarial is None and clean_only.ssim is None
    assert clean_only.scores("adversarial") is None and clean_only.attack is None
    both = evaluate(model, card, image, None, outcome.adversarial)
    json.dumps(both.to_dict(), allow_nan=False)
    assert both.dice.clean == outcome.metrics.dice.clean
    assert both.dice.adversarial == pytest.approx(outcome.metrics.dice.adversarial, abs=1e-3)
    assert both.ssim == pytest.approx(outcome.metrics.ssim, abs=1e-4)


def test_evaluate_rejects_adversarial_on_another_grid(model, card):
    image, _ = _ct()
    other, _ = _ct(shape=(16, 16, 16))
    with pytest.raises(
        ValueError, match=r"adversarial is not on the image's grid: it has shape \(16, 16, 16\)"
    ):
        evaluate(model, card, image, None, other)


# ----------------------------------------------------------------------------- write_outcome
def test_write_outcome_writes_every_file(outcome, tmp_path):
    paths = write_outcome(outcome, tmp_path / "out")
    assert set(paths) == set(OUTCOME_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTCOME_FILES.values())
    adv = nib.load(paths["adversarial"])
    assert adv.get_data_dtype() == np.float32
    np.testing.assert_allclose(adv.affine, outcome.adversarial.affine)
    np.testing.assert_array_equal(np.asarray(adv.dataobj), outcome.adversarial.array)
    pred = nib.load(paths["adversarial_prediction"])
    assert pred.get_data_dtype() == np.uint8
    text = paths["metrics"].read_text()
    doc = json.loads(text)
    assert set(doc) == {"metrics", "settings", "history"}
    assert doc["metrics"]["tiles_total"] == 18
    # the typed metrics are serialised here, at the file boundary, and nowhere before
    plain = {"metrics": outcome.metrics.to_dict(), "settings": outcome.settings,
             "history": outcome.history}  # fmt: skip
    assert text == json.dumps(json_ready(plain), indent=2, allow_nan=False) + "\n"


def test_write_outcome_refuses_to_overwrite(outcome, tmp_path):
    write_outcome(outcome, tmp_path)
    stamp = (tmp_path / "metrics.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists"):
        write_outcome(outcome, tmp_path)
    assert (tmp_path / "metrics.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    write_outcome(outcome, tmp_path, overwrite=True)


def test_write_outcome_never_overwrites_an_input(outcome, tmp_path):
    target = tmp_path / "adversarial.nii.gz"
    target.write_bytes(b"input")
    with pytest.raises(ValueError, match="input file"):
        write_outcome(outcome, tmp_path, overwrite=True, protect=[target])
    assert target.read_bytes() == b"input"


def test_write_outcome_leaves_nothing_on_failure(outcome, tmp_path, monkeypatch):
    real = outcome_files.save_image
    calls = []

    def flaky(volume, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(volume, path, **kwargs)

    monkeypatch.setattr(outcome_files, "save_image", flaky)
    out = tmp_path / "new"
    with pytest.raises(OSError, match="disk full"):
        write_outcome(outcome, out)
    assert len(calls) == 3
    assert not out.exists()  # the folder it created is gone too
    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "other.txt").write_text("x")
    calls.clear()
    with pytest.raises(OSError):
        write_outcome(outcome, keep)
    assert [p.name for p in keep.iterdir()] == ["other.txt"]


# ----------------------------------------------------------------------------- metrics JSON
@pytest.fixture(scope="module")
def typed_cases(model, card, outcome):
    """The cases of ``data/outcome_metrics.json`` (same order), run again."""
    image, labels = _ct()
    resampled, resampled_labels = _ct(shape=(36, 34, 20), spacing=(1.5, 1.5, 1.5))
    small, _ = _ct(shape=(32, 32, 16))
    fgsm = run_attack(model, card, resampled, resampled_labels, attack="fgsm",
                      options={"eps": 8}, resample_back=True)  # fmt: skip
    cancelled = run_attack(model, card, small, attack="pgd", options={"steps": 2}, seed=1,
                           callback=lambda e: e.tile < 2)  # fmt: skip
    return {
        "vafa": outcome.metrics,
        "fgsm_labels": fgsm.metrics,
        "pgd_cancelled": cancelled.metrics,
        "evaluate_clean": evaluate(model, card, image, None),
        "evaluate_adversarial": evaluate(model, card, image, labels, outcome.adversarial),
    }


def _same(new, old, path: str) -> None:
    """Same keys in the same order, None in the same places, same types; numbers to 1e-6."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and list(new) == list(old), path
        for key in old:
            _same(new[key], old[key], f"{path}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), path
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(old, float):
        assert type(new) is float and new == pytest.approx(old, rel=1e-6, abs=1e-9), path
    else:
        assert type(new) is type(old) and new == old, path


#: Keys added to metrics.json since the fixture was written, last in their object: the
#: prediction's inference settings (issue 31).
ADDED_SINCE = {"protocol": "inference"}


def test_metrics_json_keeps_the_shape_and_numbers_written_before_the_types(typed_cases):
    """``data/outcome_metrics.json`` was written by the dict-building pipeline before the
    metrics were typed: the JSON of the typed metrics has the same keys in the same order
    (plus :data:`ADDED_SINCE`), None in the same places and the same numbers."""
    before = json.loads((Path(__file__).parent / "data" / "outcome_metrics.json").read_text())
    assert list(typed_cases) == list(before)
    for name, metrics in typed_cases.items():
        written = json.loads(json.dumps(json_ready(metrics.to_dict()), allow_nan=False))
        for parent, key in ADDED_SINCE.items():
            assert list(written[parent])[-1] == key
            del written[parent][key]
        _same(written, before[name], name)
    cancelled, clean_only = typed_cases["pgd_cancelled"], typed_cases["evaluate_clean"]
    assert cancelled.per_tile is None and clean_only.dice_per_class.adversarial is None
    assert typed_cases["fgsm_labels"].scores("adversarial").hd95 is not None
