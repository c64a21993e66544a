"""The live lens and the step history (vafa.run.lens, vafa.run.history), against the library's
own attack run directly on the same cube (an independent path: no history, no lens)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import tiny_card, tiny_model

from vafa.attacks import build_attack
from vafa.attacks.base import drive
from vafa.run.history import StepHistory
from vafa.run.lens import (
    LensPlan,
    iter_lens,
    lens_region,
    measure_step_seconds,
    plan_lens,
)
from vafa.run.tiles import tile_grid
from vafa.run.tiling import attack_volume, iter_attack_volume, q_table_layout

F16 = 2.0**-11  # float16 spacing near 1: the history's rounding on [0, 1]


def _input_and_labels(shape=(40, 36, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 1, *shape), generator=g) * 0.4 + 0.3
    x[..., 10:25, 8:20, 5:18] += 0.25
    labels = (x > 0.6).long() + (x > 0.68).long()
    return x.clamp(0, 1), labels


def _model():
    return tiny_model(tiny_card(roi=16)).eval()


def _collect(gen):
    """An attack run's iterates (copied as they come) and its result."""
    events = []

    def copy(event):
        events.append(
            {
                "tile": event.tile,
                "step": event.step,
                "x": event.adversarial.clone(),
                "pred": None if event.prediction is None else event.prediction.clone(),
                "q": None if event.q_table is None else event.q_table.clone(),
            }
        )

    return events, drive(gen, copy)


# ----------------------------------------------------------------------------- region and plan
def test_lens_region_is_centred_clipped_and_moved_inward():
    assert lens_region((100, 80, 60), (50, 40, 30), 32) == (
        slice(34, 66),
        slice(24, 56),
        slice(14, 46),
    )
    assert lens_region((100, 80, 60), (2, 79, 30), 32) == (
        slice(0, 32),
        slice(48, 80),
        slice(14, 46),
    )
    # an axis shorter than the cube is taken whole
    assert lens_region((100, 20, 60), (50.4, 3, 59), 32)[1:] == (slice(0, 20), slice(28, 60))
    with pytest.raises(ValueError, match="3 entries"):
        lens_region((10, 10), (1, 1, 1), 4)


def test_plan_keeps_what_fits_then_shrinks_the_cube_then_the_steps():
    fits = plan_lens(0.01, size=64, steps=10, budget=1.0)
    assert fits == LensPlan(64, 10, pytest.approx(0.01 * 15), "")
    smaller = plan_lens(0.1, size=64, steps=10, budget=1.0)  # 64³: 1.5 s; 48³: 0.63 s
    assert (smaller.size, smaller.steps) == (48, 10) and smaller.seconds <= 1.0
    assert "48³ instead of 64³" in smaller.note
    fewer = plan_lens(2.0, size=64, steps=10, budget=1.0)  # even 32³ is 0.25 s a pass
    assert fewer.size == 32 and fewer.steps == 2 and "2 of 10 steps" in fewer.note
    fixed = plan_lens(0.1, size=96, steps=20, budget=1.0, fixed_size=True)
    assert fixed.size == 96 and fixed.steps == 6 and fixed.seconds <= 1.0
    slow = plan_lens(5.0, size=96, steps=20, budget=1.0, fixed_size=True)
    assert slow.steps == 1 and "needs ≈" in slow.note
    with pytest.raises(ValueError, match="pass_seconds"):
        plan_lens(0.0, steps=1)


def test_measure_step_seconds_restores_the_model_and_names_a_refused_size():
    model = tiny_model(tiny_card(roi=16))  # train mode, parameters require grad
    seconds = measure_step_seconds(model, 16, warmup=1, passes=1)
    assert 0 < seconds < 10
    assert model.training and all(p.requires_grad for p in model.parameters())

    class FixedInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 1)

        def forward(self, x):
            if x.shape[-1] != 16:
                raise RuntimeError("input must be 16³")
            return self.conv(x)

    with pytest.raises(ValueError, match="does not accept a 8³ cube"):
        measure_step_seconds(FixedInput(), 8, warmup=0, passes=1)


# ----------------------------------------------------------------------------- step events
def test_step_events_carry_the_prediction_and_the_table_of_their_iterate():
    x, y = _input_and_labels((16, 16, 16))
    attack = build_attack("vafa", _model(), steps=4, block_size=8, seed=0)
    events, result = _collect(attack.iter_attack(x, y))
    assert [e["step"] for e in events] == [1, 2, 3, 4]
    model = attack.model
    for event in events:  # the prediction is the model's own of that iterate
        with torch.no_grad():
            expected = model(event["x"]).argmax(1, keepdim=True)
        assert torch.equal(event["pred"], expected)
    kept = result.returned_steps[0]
    table = q_table_layout([result.q_tables[0]], tile_grid((16,) * 3, 16), (16,) * 3, 8, 16)
    assert torch.equal(events[kept - 1]["q"], table)
    assert not torch.equal(events[0]["q"], events[-1]["q"])  # copies, not a live view
    pgd = build_attack("pgd", _model(), steps=2, seed=0)
    events, _ = _collect(pgd.iter_attack(x, y))
    assert events[0]["q"] is None and events[0]["pred"] is not None


# ----------------------------------------------------------------------------- history
def test_history_step_k_is_every_tile_at_its_step_k():
    x, y = _input_and_labels((40, 36, 28))
    roi = (16, 16, 16)
    attack = build_attack("vafa", _model(), steps=3, block_size=8, seed=0)
    events, _ = _collect(iter_attack_volume(attack, x, y, roi=roi))
    tiles = tile_grid(x.shape[2:], roi)
    assert len(tiles) > 4
    history = StepHistory(x, 3, tiles=tiles, roi=roi, with_tables=True)
    for e in events:  # replay the events into the history
        history.record(type("E", (), {"step": e["step"], "tile": e["tile"], "adversarial": e["x"],
                                      "prediction": e["pred"], "q_table": e["q"], "dice": 0.5,
                                      "ssim": 0.9, "loss": 1.0})())  # fmt: skip
    assert history.steps == [0, 1, 2, 3] and history.stride == 1
    for k in (1, 2, 3):  # naive stitching: raster order, the later tile wins
        expected = x[0].clone()
        pred = torch.zeros(x.shape[2:], dtype=torch.long)
        for e in events:
            if e["step"] == k:
                sl = tiles[e["tile"] - 1]
                expected[(slice(None), *sl)] = e["x"][0][
                    (slice(None), *(slice(0, s.stop - s.start) for s in sl))
                ]
                pred[sl] = e["pred"][0, 0][tuple(slice(0, s.stop - s.start) for s in sl)]
        kept = history.at(k)
        np.testing.assert_allclose(kept.adversarial, expected.numpy(), atol=F16, rtol=0)
        assert np.array_equal(kept.prediction, pred.numpy())
        assert kept.q_table.shape == (1, *x.shape[2:]) and kept.q_table.min() >= 5
    np.testing.assert_allclose(history.at(0).adversarial, x[0].numpy(), atol=F16)


def test_history_keeps_every_kth_step_under_its_memory_cap_and_releases():
    x, _ = _input_and_labels((16, 16, 16))
    voxels = 16**3
    history = StepHistory(x, 10, cap_bytes=voxels * 3 * 4)  # room for 4 of 10 steps
    assert history.stride == 3
    attack = build_attack("bim", _model(), steps=10, seed=0)
    drive(history.recording(attack.iter_attack(x)))
    assert history.steps == [0, 3, 6, 9, 10]
    assert history.nearest(4) == 3 and history.nearest(8) == 9
    assert history.nbytes <= voxels * 3 * 5 + voxels * 2
    history.release()
    assert history.steps == [0]


# ----------------------------------------------------------------------------- the lens
def test_lens_is_the_attack_of_the_cube_and_its_history_replays_it():
    x, y = _input_and_labels((40, 36, 28))
    model = _model()
    region = lens_region(x.shape[2:], (20, 18, 14), 16)
    options = {"steps": 3, "block_size": 8}
    result = drive(iter_lens(model, x, y, region, num_classes=3, options=options, seed=3))
    # the same attack, seed and cube through the tiling alone
    crop = x[(slice(None), slice(None), *region)]
    labels = y[(slice(None), slice(None), *region)]
    reference = attack_volume(build_attack("vafa", model, **options, seed=3), crop, labels, roi=16)
    assert torch.equal(torch.from_numpy(result.adversarial01), reference.adversarial[0])
    assert np.array_equal(
        result.adversarial_prediction, reference.tile_adversarial_prediction[0, 0]
    )
    assert np.array_equal(result.q_table, reference.q_layout()[0].numpy())

    # Dice against the labels, re-derived with numpy
    def dice(pred):
        ref = labels[0, 0].numpy()
        scores = []
        for c in (1, 2):
            a, b = pred == c, ref == c
            if b.any():
                scores.append(2 * (a & b).sum() / (a.sum() + b.sum()))
        return float(np.mean(scores))

    assert result.dice_adversarial == pytest.approx(dice(result.adversarial_prediction))
    assert result.dice_clean == pytest.approx(dice(result.clean_prediction))
    assert 0.5 < result.ssim <= 1.0 and result.labels_used and not result.cancelled
    # step k of the history is the library's step-k iterate (float16 rounding)
    attack = build_attack("vafa", model, **options, seed=3)
    events, _ = _collect(attack.iter_attack(crop, labels))
    for k in (1, 2, 3):
        kept = result.history.at(k)
        np.testing.assert_allclose(kept.adversarial, events[k - 1]["x"][0].numpy(), atol=F16)
        assert np.array_equal(kept.prediction, events[k - 1]["pred"][0, 0].numpy())
    assert result.returned_step in (1, 2, 3)


def test_lens_cancels_between_steps_and_pads_a_small_volume():
    x, _ = _input_and_labels((12, 40, 20))
    region = lens_region(x.shape[2:], (6, 20, 10), 16)
    assert [s.stop - s.start for s in region] == [12, 16, 16]
    gen = iter_lens(_model(), x, None, region, num_classes=3, options={"steps": 5, "block_size": 8})
    next(gen)
    try:
        gen.send(False)
        raise AssertionError("the lens went on after a cancel")
    except StopIteration as stop:
        result = stop.value
    assert result.cancelled and result.adversarial01.shape == (1, 12, 16, 16)
    assert result.dice_clean == 1.0  # without labels: the clean prediction is the reference


def test_history_keeps_values_inside_the_window_inside():
    """Rounded to float16, 0.99994 would become 1.0 — where a CT window's inverse mapping gives
    a clipped voxel its original HU back; the history keeps it below 1 (and above 0)."""
    x = torch.full((1, 1, 4, 4, 4), 0.5)
    x[..., 0, 0, 0] = 0.99994
    x[..., 1, 0, 0] = 1e-9
    x[..., 2, 0, 0] = 1.0
    x[..., 3, 0, 0] = 0.0
    clean = StepHistory(x, 1).at(0).adversarial[0]
    assert 1 - 2**-10 < clean[0, 0, 0] < 1 and 0 < clean[1, 0, 0] < 1e-6
    assert clean[2, 0, 0] == 1 and clean[3, 0, 0] == 0


def test_history_reads_one_channel_as_it_holds_it():
    """``at(step, channels=…)`` is the same step with only those channels converted (what the
    scrubber reads, one channel of a multi-channel run at a time)."""
    from vafa.attacks.base import StepEvent

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 6, 5, 4, generator=g)
    history = StepHistory(clean, 2, with_tables=True)
    for step in (1, 2):
        adversarial = (clean + 0.01 * step).clamp(0, 1)
        q = torch.rand(clean.shape, generator=g) * 20
        prediction = torch.randint(0, 3, (1, 1, 6, 5, 4), generator=g)
        history.record(StepEvent(step, 2, 0.0, 0.5, 0.9, adversarial, prediction=prediction,
                                 q_table=q))  # fmt: skip
    for step in (0, 1, 2):
        whole = history.at(step)
        for channels in ((1,), (2, 0), ()):
            part = history.at(step, channels=channels)
            np.testing.assert_array_equal(part.adversarial, whole.adversarial[list(channels)])
            if whole.q_table is not None:
                np.testing.assert_array_equal(part.q_table, whole.q_table[list(channels)])
            assert part.step == whole.step and part.prediction is whole.prediction
