"""Tests for vafa.run.tiles and vafa.run.tiling: tile grid, fast argmax, sliding-window inference,
tiled attacks."""

from __future__ import annotations

import itertools

import pytest
import torch

from vafa.attacks import build_attack
from vafa.ops.metrics import predict_labels
from vafa.run.tiles import owned_slices, tile_grid, tile_starts
from vafa.run.tiling import (
    attack_volume,
    q_table_layout,
    sliding_window_labels,
    sliding_window_predict,
)

ROI = (16, 16, 16)


def _volume(shape, seed=0, low=0.2, high=0.8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, *shape, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, 1, 1)
    x = (x - x.min()) / (x.max() - x.min())
    return low + (high - low) * x


# ----------------------------------------------------------------------------- tile grid
@pytest.mark.parametrize(
    ("size", "roi", "expected"),
    [(96, 32, [0, 32, 64]), (100, 32, [0, 32, 64, 68]), (33, 32, [0, 1]), (32, 32, [0])],
)
def test_tile_starts_shifts_last_tile_inward(size, roi, expected):
    assert tile_starts(size, roi) == expected


def test_tile_starts_smaller_than_roi_gives_one_tile():
    assert tile_starts(5, 16) == [0]


@pytest.mark.parametrize("shape", [(40, 36, 20), (16, 16, 16), (17, 50, 9), (5, 3, 31)])
def test_tile_grid_covers_every_voxel_and_ends_at_edges(shape):
    tiles = tile_grid(shape, ROI)
    count = torch.zeros(shape, dtype=torch.int32)
    for sl in tiles:
        count[sl] += 1
        for s, n, r in zip(sl, shape, ROI, strict=True):
            assert s.stop - s.start == min(n, r)
            assert s.start >= 0 and s.stop <= n
    assert bool((count >= 1).all())
    for axis, n in enumerate(shape):
        assert max(sl[axis].stop for sl in tiles) == n
    expected = 1
    for n, r in zip(shape, ROI, strict=True):
        expected *= len(tile_starts(n, r))
    assert len(tiles) == expected


def test_tile_grid_matches_monai_dense_patch_slices():
    from monai.data.utils import dense_patch_slices

    shape = (40, 36, 20)
    ours = [tuple((s.start, s.stop) for s in sl) for sl in tile_grid(shape, ROI)]
    theirs = [
        tuple((int(s.start), int(s.stop)) for s in sl) for sl in dense_patch_slices(shape, ROI, ROI)
    ]
    assert ours == theirs


def test_owned_slices_partition_the_volume_and_follow_later_tile_wins():
    shape = (40, 36, 12)
    owner = torch.full(shape, -1)
    for index, sl in enumerate(tile_grid(shape, ROI)):
        owner[sl] = index  # later tiles overwrite
    count = torch.zeros(shape, dtype=torch.int32)
    for index, sl in enumerate(owned_slices(shape, ROI)):
        count[sl] += 1
        assert bool((owner[sl] == index).all())
    assert bool((count == 1).all())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, (16, 16), (16, 0, 16), "16"])
def test_tile_grid_rejects_bad_roi(bad):
    with pytest.raises(ValueError, match="roi must be"):
        tile_grid((20, 20, 20), bad)


# ----------------------------------------------------------------------------- argmax
@pytest.mark.parametrize("k", [1, 2, 4, 14])
def test_argmax_channels_equals_torch_argmax(k):
    x = torch.randn(2, k, 9, 7, 5, generator=torch.Generator().manual_seed(k))
    out = predict_labels(x)
    assert out.dtype == torch.int64
    assert out.shape == (2, 1, 9, 7, 5)
    assert torch.equal(out, x.argmax(1, keepdim=True))


def test_argmax_channels_ties_go_to_first_maximum_like_torch():
    x = torch.randint(0, 3, (2, 6, 10, 10, 10), generator=torch.Generator().manual_seed(1))
    for t in (x.float(), x.double(), x):  # floats and an integer dtype
        assert torch.equal(predict_labels(t), t.argmax(1, keepdim=True))
    assert int(predict_labels(torch.ones(1, 5, 2, 2, 2)).max()) == 0


def test_argmax_channels_handles_nan_like_torch():
    x = torch.randn(1, 5, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    x[0, 3, 0, 0, 0] = float("nan")
    x[0, 1, 1, 0, 0] = float("nan")
    x[0, 4, 1, 0, 0] = float("nan")
    x[0, :, 2, 0, 0] = float("nan")
    assert torch.equal(predict_labels(x), x.argmax(1, keepdim=True))


def test_argmax_channels_works_on_2d_and_non_contiguous():
    x = torch.randn(3, 4, 8, 6).transpose(2, 3)
    assert torch.equal(predict_labels(x), x.argmax(1, keepdim=True))


def test_argmax_channels_rejects_bad_input():
    with pytest.raises(TypeError, match="logits must be"):
        predict_labels([1, 2])
    with pytest.raises(ValueError, match="logits must be"):
        predict_labels(torch.zeros(4))


# ----------------------------------------------------------------------------- sliding window
def test_sliding_window_predict_any_size_and_restores_mode(model):
    model.train()
    try:
        x = _volume((20, 18, 9))
        logits = sliding_window_predict(model, x, ROI, overlap=0.5)
        assert model.training
        assert type(logits) is torch.Tensor
        assert logits.shape == (1, 3, 20, 18, 9)
        labels = sliding_window_labels(model, x, ROI)
        assert labels.dtype == torch.int64 and labels.shape == (1, 1, 20, 18, 9)
        assert torch.equal(labels, logits.argmax(1, keepdim=True))
    finally:
        model.eval()


def test_sliding_window_single_window_equals_model(model):
    x = _volume(ROI)
    with torch.no_grad():
        direct = model(x)
    for mode in ("constant", "gaussian"):
        logits = sliding_window_predict(model, x, ROI, mode=mode)
        torch.testing.assert_close(logits, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"overlap": 1.0}, "overlap must be"), ({"mode": "gauss"}, "mode must be")],
)
def test_sliding_window_rejects_bad_options(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_predict(model, _volume(ROI), ROI, **kwargs)


# ----------------------------------------------------------------------------- attack_volume
def test_gaussian_noise_reaches_every_voxel_without_seams(model):
    shape = (40, 36, 12)  # shifted edge tiles along H and W, padding along D
    x = _volume(shape)
    before = x.clone()
    result = attack_volume(build_attack("gn", model, std=4, seed=0), x, roi=ROI)
    assert torch.equal(x, before)  # input untouched
    assert result.adversarial.shape == x.shape and result.adversarial.dtype == x.dtype
    assert bool((result.adversarial != x).all())  # no untouched voxel (no clamping in range)
    assert result.tiles_total == len(tile_grid(shape, ROI)) == result.tiles_done == 9
    assert not result.cancelled and result.q_tables is None and result.q_layout() is None
    assert [r["tile"] for r in result.tile_results] == list(range(1, 10))
    assert sum(r["voxels"] for r in result.tile_results) == 40 * 36 * 12


def test_later_tile_wins_where_tiles_overlap(model):
    shape = (20, 16, 16)  # two tiles along H: [0, 16) and [4, 20)
    x = _volume(shape)
    result = attack_volume(build_attack("gn", model, std=8, seed=3), x, roi=ROI)
    # the attack is deterministic per batch: redo tile 2 alone and compare the overlap
    tile2 = build_attack("gn", model, std=8, seed=3).attack(x[:, :, 4:20])
    torch.testing.assert_close(result.adversarial[:, :, 4:20], tile2.adversarial)


def test_vafa_one_step_processes_every_tile(model):
    shape = (40, 36, 12)
    x = _volume(shape)
    events = []
    attack = build_attack("vafa", model, steps=1, block_size=8, seed=0)
    result = attack_volume(attack, x, roi=ROI, callback=events.append)
    assert result.adversarial.shape == x.shape
    assert len(result.q_tables) == result.tiles_total == 9
    assert all(q.shape == (1, 8, 8, 8, 8) and q.device.type == "cpu" for q in result.q_tables)
    for sl in result.tile_slices:  # every tile region was changed by the attack
        assert float((result.adversarial[(0, 0, *sl)] - x[(0, 0, *sl)]).abs().max()) > 0
    layout = result.q_layout()
    assert layout.shape == x.shape
    assert float(layout.min()) >= 5.0 and float(layout.max()) <= 20.0  # no uncovered voxel
    assert all(0.0 <= r["zeroed_fraction"] <= 1.0 for r in result.tile_results)
    assert [(e.tile, e.tiles, e.step) for e in events] == [(b, 9, 1) for b in range(1, 10)]
    assert result.settings["roi"] == list(ROI) and result.settings["tiles"] == 9


def test_q_table_layout_places_each_frequency_in_its_block():
    # one tile of 16³ with 8³ blocks: q = index of the block, constant over frequencies; the
    # 12-voxel depth is padded 2 + 2 (centred), so the depth blocks cover voxels 0:6 and 6:12
    q = torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1, 1).expand(1, 8, 8, 8, 8)
    layout = q_table_layout([q], tile_grid((16, 16, 12), ROI), (16, 16, 12), 8, ROI)
    assert layout.shape == (1, 1, 16, 16, 12)
    depth = [slice(0, 6), slice(6, 12)]
    for index, (i, j, k) in enumerate(itertools.product(range(2), repeat=3)):
        block = layout[0, 0, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8, depth[k]]
        assert bool((block == index).all())


def test_tile_batch_gives_the_same_result_as_single_tiles(model):
    shape = (36, 20, 16)
    x = _volume(shape, seed=1)
    labels = (x > 0.5).long() + (x > 0.65).long()
    single = attack_volume(build_attack("fgsm", model, eps=8), x, labels, roi=ROI)
    batched = attack_volume(build_attack("fgsm", model, eps=8), x, labels, roi=ROI, tile_batch=4)
    assert single.tiles_total == 6
    assert [r["batch"] for r in batched.tile_results] == [1, 1, 1, 1, 2, 2]
    torch.testing.assert_close(batched.adversarial, single.adversarial, rtol=0, atol=1e-6)
    assert torch.equal(batched.tile_adversarial_prediction, single.tile_adversarial_prediction)


def test_pseudo_labels_are_the_per_tile_clean_predictions(model):
    x = _volume((16, 32, 16), seed=2)
    result = attack_volume(build_attack("fgsm", model, eps=4), x, roi=ROI)
    with torch.no_grad():
        expected = torch.cat([model(x[:, :, :, :16]), model(x[:, :, :, 16:])], dim=3).argmax(
            1, keepdim=True
        )
    assert torch.equal(result.tile_clean_prediction.long(), expected)


def test_cancel_mid_volume_keeps_done_tiles_and_leaves_later_tiles_clean(model):
    shape = (32, 32, 16)  # 4 disjoint tiles
    x = _volume(shape, seed=4)
    events = []

    def callback(event):
        events.append((event.tile, event.step))
        return not (event.tile == 3 and event.step == 2)

    attack = build_attack("bim", model, eps=8, alpha=0.01, steps=3)
    result = attack_volume(attack, x, roi=ROI, callback=callback)
    assert result.cancelled and result.tiles_done == 2 and result.tiles_total == 4
    assert events[-1] == (3, 2) and len(events) == 8
    tiles = result.tile_slices
    for sl in tiles[:3]:  # done tiles and the cancelled tile's best-so-far iterate
        assert float((result.adversarial[(0, 0, *sl)] - x[(0, 0, *sl)]).abs().max()) > 0
    assert torch.equal(result.adversarial[(0, 0, *tiles[3])], x[(0, 0, *tiles[3])])
    assert [r["cancelled"] for r in result.tile_results] == [False, False, True]


def test_cancel_attack_without_steps_between_tile_batches(model):
    x = _volume((32, 32, 16), seed=5)
    calls = []

    def callback(event):
        calls.append((event.tile, event.tiles, event.step, event.total))
        return event.tile < 2

    result = attack_volume(build_attack("gn", model, std=4, seed=0), x, roi=ROI, callback=callback)
    assert calls == [(1, 4, 0, 0), (2, 4, 0, 0)]
    assert result.cancelled and result.tiles_done == 2
    for sl in result.tile_slices[2:]:
        assert torch.equal(result.adversarial[(0, 0, *sl)], x[(0, 0, *sl)])


def test_attack_volume_restores_model_state(model):
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        attack_volume(build_attack("fgsm", model), _volume((20, 16, 16)), roi=ROI)
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == flags
    finally:
        model.eval()


@pytest.mark.parametrize(
    ("image", "labels", "kwargs", "error", "match"),
    [
        (torch.rand(2, 1, 16, 16, 16), None, {}, ValueError, "batch size 1"),
        (torch.rand(1, 1, 16, 16), None, {}, ValueError, r"\[1, C, H, W, D\]"),
        (torch.rand(1, 1, 16, 16, 16) + 1, None, {}, ValueError, r"\[0, 1\]"),
        (torch.ones(1, 1, 16, 16, 16, dtype=torch.int64), None, {}, TypeError, "float"),
        (torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 1, 8, 16, 16), {}, ValueError, "labels"),
        (torch.rand(1, 1, 16, 16, 16), None, {"tile_batch": 0}, ValueError, "tile_batch"),
        (torch.rand(1, 1, 16, 16, 16), None, {"roi": (16, 16)}, ValueError, "roi"),
    ],
)
def test_attack_volume_rejects_bad_input(model, image, labels, kwargs, error, match):
    kwargs = {"roi": ROI, **kwargs}
    with pytest.raises(error, match=match):
        attack_volume(build_attack("fgsm", model), image, labels, **kwargs)


def test_attack_volume_rejects_non_attack(model):
    with pytest.raises(TypeError, match="attack must be"):
        attack_volume(model, torch.rand(1, 1, 16, 16, 16), roi=ROI)


def test_short_tiles_are_padded_like_sliding_window_inference():
    from vafa.run.tiles import crop_tile, extract_tile, tile_padding

    sl = (slice(0, 10), slice(0, 16), slice(0, 13))
    assert tile_padding(sl, (16, 16, 16)) == [(3, 3), (0, 0), (1, 2)]
    x = torch.rand(1, 1, 10, 16, 13)
    tile = extract_tile(x, sl, (16, 16, 16))
    assert tile.shape == (1, 1, 16, 16, 16) and tile[:, :, :3].abs().sum() == 0
    assert torch.equal(crop_tile(tile, sl, (16, 16, 16)), x)
    # the same placement as MONAI's sliding window (constant padding, centred)
    from monai.inferers import sliding_window_inference

    seen = []
    sliding_window_inference(x, (16, 16, 16), 1, lambda t: seen.append(t) or t, overlap=0)
    assert torch.equal(torch.as_tensor(seen[0]), tile)
