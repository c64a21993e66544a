"""VAFT training (vafa.training.config, vafa.training.data, vafa.training.files, ``vafa train``) on a tiny
MONAI UNet and synthetic 24³ volumes; every run is 1–4 iterations."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from factories import blob_case, tiny_card, tiny_model, write_case

from vafa.cli import main
from vafa.io.checkpoints import card_path_for, load_card, load_model
from vafa.io.models import ModelCard
from vafa.io.volume import Volume
from vafa.ops.losses import DiceCELoss, FrequencyConsistencyLoss
from vafa.training import (
    MODES,
    TrainingConfig,
    TrainingEvent,
    TrainingResult,
    VAFTLoss,
    iter_train,
    train,
)
from vafa.training.data import (
    Augmentation,
    PatchSampler,
    load_cases,
    read_datalist,
    resolve_flip_axes,
)
from vafa.training.files import BEST, LATEST, LOG, PLOT, STATE, TRAINING_FILES, save_state

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
#: Cheap attack settings per mode (1 step, 8³ VAFA blocks).
ATTACK = {
    "vafa-fr": {"steps": 1, "block_size": 8},
    "vafa": {"steps": 1, "block_size": 8},
    "pgd": {"steps": 1},
    "segpgd": {"steps": 1},
    "cospgd": {"steps": 1},
    "sa2": {"steps": 1},
    "bim": {"steps": 1},
    "fgsm": {},
    "gn": {},
    "clean": {},
}
NO_AUG = Augmentation(rotate_degrees=0, scale_intensity=0, shift_intensity=0)


def config(mode: str = "clean", **overrides) -> TrainingConfig:
    fields = {
        "mode": mode,
        "epochs": 1,
        "iterations_per_epoch": 2,
        "batch_size": 2,
        "attack_options": ATTACK[mode],
        "augmentation": NO_AUG,
    }
    return TrainingConfig(**{**fields, **overrides})


def volume_pair(seed: int, **kwargs) -> tuple[Volume, Volume]:
    hu, seg = blob_case(seed, **kwargs)
    return Volume(hu, AFFINE), Volume(seg.astype(np.float32), AFFINE)


# ----------------------------------------------------------------------------- modes and loss
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_two_iterations(mode, card, datalist, tmp_path):
    model = tiny_model(card)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, card, datalist, [], out_dir=tmp_path, config=config(mode))
    rows = [r for r in result.history if r["stage"] == "train"]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    if mode == "vafa-fr":
        assert {"loss_clean", "loss_adv", "loss_fr"} <= set(rows[0])
    elif mode == "clean":
        assert "loss_clean" in rows[0] and "loss_adv" not in rows[0]
    else:
        assert "loss_adv" in rows[0] and "loss_clean" not in rows[0]
    assert result.iterations == 2 and not result.cancelled
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.card.training["mode"] == mode
    assert (tmp_path / LATEST).is_file() and result.best is None  # no validation cases


def test_vafa_fr_objective_is_clean_plus_adversarial_plus_lambda_fr(card):
    torch.manual_seed(1)
    model = tiny_model(card).eval()
    x = torch.rand(2, 1, 16, 16, 16)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16))
    clean, adv = model(x), model(x_adv)
    seg, fr = DiceCELoss(), FrequencyConsistencyLoss()
    terms = VAFTLoss("vafa-fr", lambda_fr=0.7)(y, clean, adv)
    expected = seg(clean, y) + seg(adv, y) + 0.7 * fr(clean, adv)
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["fr"], fr(clean, adv))
    assert terms["fr"].item() > 0
    for mode in ("vafa", "pgd", "fgsm", "bim", "gn"):
        out = VAFTLoss(mode)(y, adv_logits=adv)
        torch.testing.assert_close(out["loss"], seg(adv, y))
        assert set(out) == {"loss", "adv"}
    torch.testing.assert_close(VAFTLoss("clean")(y, clean)["loss"], seg(clean, y))
    with pytest.raises(ValueError, match="adv_logits is required"):
        VAFTLoss("vafa-fr")(y, clean)


def test_logged_vafa_fr_loss_adds_up(card, datalist, tmp_path):
    cfg = config("vafa-fr", lambda_fr=2.5, iterations_per_epoch=1)
    result = train(tiny_model(card), card, datalist, [], out_dir=tmp_path, config=cfg)
    row = result.history[0]
    total = row["loss_clean"] + row["loss_adv"] + 2.5 * row["loss_fr"]
    assert row["loss"] == pytest.approx(total, rel=1e-5)
    assert result.card.training["lambda_fr"] == 2.5


def test_attack_runs_in_eval_mode_and_update_in_train_mode(card, datalist, tmp_path):
    model = tiny_model(card)
    seen = []

    def spy(module, inputs, output):
        seen.append((module.training, any(p.requires_grad for p in module.parameters())))

    model.register_forward_hook(spy)
    cfg = config("vafa-fr", iterations_per_epoch=1)
    train(model, card, datalist, [], out_dir=tmp_path, config=cfg)
    # VAFA, 1 step: clean + the one step (the published loop evaluates nothing after its last
    # step), frozen in eval mode; then the two training forwards (clean and adversarial) in
    # train mode with trainable parameters.
    assert seen == [(False, False)] * 2 + [(True, True)] * 2
    assert not model.training  # returned in eval mode
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_files_card_and_weights_only_state(card, datalist, tmp_path):
    cfg = config("pgd", epochs=2, iterations_per_epoch=1, lr=3e-4)
    result = train(tiny_model(card), card, datalist, out_dir=tmp_path, config=cfg)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(TRAINING_FILES)  # no temporary file left behind
    model, saved = load_model(tmp_path / LATEST, device="cpu")
    training = saved.training
    assert training["mode"] == "pgd" and training["epochs"] == 2 and training["lr"] == 3e-4
    assert training["iterations_done"] == 2 and training["epochs_done"] == 2
    best_training = load_card(card_path_for(tmp_path / BEST)).training
    assert best_training["iterations_done"] in (1, 2)  # one update per epoch: every
    assert best_training["epochs_done"] == best_training["iterations_done"]  # epoch finished
    assert training["attack"]["attack"] == "PGD" and training["attack"]["steps"] == 1
    assert training["lambda_fr"] is None  # only vafa-fr uses it
    assert training["initialised_from"] is None  # trained from scratch
    assert training["selection"]["metric"] == "dice_fg_adv"
    validation = training["metrics"]["validation"]
    assert 0 <= validation["dice_fg_clean"] <= 1 and 0 <= validation["dice_fg_adv"] <= 1
    assert training["metrics"]["best"] == pytest.approx(result.best_metric)
    best = load_card(card_path_for(tmp_path / "best.safetensors")).training
    assert best["metrics"]["best"] == pytest.approx(result.best_metric)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, result.model.state_dict()[key])
    state = torch.load(tmp_path / STATE, weights_only=True)
    assert state["iteration"] == 2 and state["optimizer"]["state"]
    log = (tmp_path / LOG).read_text().splitlines()
    assert log[0].startswith("stage,epoch,iteration,lr,loss")
    assert [line.split(",")[0] for line in log[1:]] == ["train", "validation"] * 2
    assert (tmp_path / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_state_file_is_written_atomically(tmp_path):
    path = tmp_path / STATE
    save_state({"iteration": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_state({"iteration": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == [STATE]


def test_cancel_then_resume_equals_an_uninterrupted_run(card, datalist, tmp_path):
    cfg = config("fgsm", epochs=2, iterations_per_epoch=2)
    straight = train(tiny_model(card), card, datalist, [], out_dir=tmp_path / "a", config=cfg)

    stop_after = {"n": 0}

    def cancel_after_three(event: TrainingEvent):
        if event.stage == "train":
            stop_after["n"] += 1
            return stop_after["n"] < 3

    out = tmp_path / "b"
    first = train(
        tiny_model(card), card, datalist, [], out_dir=out, config=cfg, callback=cancel_after_three
    )
    assert first.cancelled and first.iterations == 3  # saved at once, mid-epoch
    state = torch.load(out / STATE, weights_only=True)
    assert (state["epoch"], state["step"], state["iteration"]) == (1, 1, 3)
    assert load_card(card_path_for(out / LATEST)).training["iterations_done"] == 3

    resumed_model = tiny_model(card, seed=123)  # weights come from the checkpoint
    second = train(resumed_model, card, datalist, [], out_dir=out, config=cfg, resume=True)
    assert second.iterations == 4 and [r["iteration"] for r in second.history] == [4]
    log = [line.split(",") for line in (out / LOG).read_text().splitlines()[1:]]
    assert [int(row[2]) for row in log] == [1, 2, 3, 4]
    # Adam moments, scheduler and patch draws were restored: the same weights as without a break
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_resume_refuses_another_architecture_or_mode(card, datalist, tmp_path):
    train(tiny_model(card), card, datalist, [], out_dir=tmp_path, config=config(epochs=1))
    other = tiny_card(channels=(4, 8, 16), strides=(2, 2))
    with pytest.raises(ValueError, match="written for another model"):
        train(
            tiny_model(other), other, datalist, [], out_dir=tmp_path, config=config(), resume=True
        )
    with pytest.raises(ValueError, match="mode 'clean'"):
        train(
            tiny_model(card), card, datalist, [], out_dir=tmp_path, config=config("gn"), resume=True
        )


def test_out_dir_checks(card, datalist, tmp_path):
    model = tiny_model(card)
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        train(model, card, datalist, [], out_dir=afile / "sub", config=config())
    with pytest.raises(ValueError, match="must be a folder"):
        train(model, card, datalist, [], out_dir=afile, config=config())
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(model, card, datalist, [], out_dir=tmp_path / "new", config=config(), resume=True)
    out = tmp_path / "run"
    train(model, card, datalist, [], out_dir=out, config=config(iterations_per_epoch=1))
    stamp = (out / LATEST).read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        train(model, card, datalist, [], out_dir=out, config=config())
    assert (out / LATEST).read_bytes() == stamp  # nothing overwritten
    result = train(model, card, datalist, [], out_dir=out, config=config(), overwrite=True)
    assert result.iterations == 2


# ----------------------------------------------------------------------------- cancel, generator
def test_cancel_during_the_attack_saves_before_any_update(card, datalist, tmp_path):
    model = tiny_model(card)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(
        model,
        card,
        datalist,
        [],
        out_dir=tmp_path,
        config=config("pgd", attack_options={"steps": 5}),
        callback=lambda e: e.stage != "attack",
    )
    assert result.cancelled and result.iterations == 0
    assert load_card(card_path_for(tmp_path / LATEST)).training["iterations_done"] == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_cancel_during_the_validation_attack_stops_it_and_records_no_round(
    card, datalist, tmp_path
):
    steps = []

    def cancel_at_second_step(event: TrainingEvent):
        if event.stage == "validation" and event.attack_step is not None:
            steps.append(event.attack_step)
            return event.attack_step < 2

    cfg = config("pgd", attack_options={"steps": 5})
    result = train(tiny_model(card), card, datalist, out_dir=tmp_path, config=cfg,
                   callback=cancel_at_second_step)  # fmt: skip
    assert result.cancelled and steps == [1, 2]  # the attack stopped at once
    assert result.validation is None and result.best is None and result.iterations == 2


def test_generator_form_yields_events_and_send_false_cancels(card, datalist, tmp_path):
    gen = iter_train(tiny_model(card), card, datalist, out_dir=tmp_path, config=config("fgsm"))
    stages = []
    event = next(gen)
    try:
        while True:
            stages.append(event.stage)
            assert isinstance(event, TrainingEvent) and event.total == 2 and event.epochs == 1
            reply = False if event.stage == "train" else None
            event = gen.send(reply)
    except StopIteration as stop:
        result = stop.value
    assert isinstance(result, TrainingResult) and result.cancelled
    assert stages == ["attack", "train"] and result.iterations == 1
    assert torch.load(tmp_path / STATE, weights_only=True)["iteration"] == 1


def test_validation_events_carry_dice(card, datalist, tmp_path):
    events = []
    cfg = config("gn", iterations_per_epoch=1)
    result = train(
        tiny_model(card), card, datalist, out_dir=tmp_path, config=cfg, callback=events.append
    )
    final = [e for e in events if e.validation is not None]
    assert len(final) == 1 and final[0].stage == "validation"
    assert set(final[0].validation) >= {"dice_fg_clean", "dice_fg_adv", "cases"}
    assert result.validation == final[0].validation and result.best is not None


# ----------------------------------------------------------------------------- data checks
def test_missing_datalist_files_are_listed_before_training(card, tmp_path):
    ok = write_case(tmp_path, "ok", seed=0)
    doc = {
        "training": [ok, {"image": "gone1.nii.gz", "label": ok["label"]}],
        "validation": [{"image": ok["image"], "label": "gone2.nii.gz"}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FileNotFoundError, match=r"2 file\(s\) missing") as err:
        train(tiny_model(card), card, path, out_dir=tmp_path / "out", config=config())
    assert "gone1.nii.gz" in str(err.value) and "gone2.nii.gz" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing done before the check
    with pytest.raises(ValueError, match="no list of cases under 'training'"):
        path.write_text(json.dumps({"validation": [ok]}))
        read_datalist(path)


def test_validation_cases_of_other_channels_are_named_by_their_split(card, tmp_path):
    ok = write_case(tmp_path, "ok", seed=0)
    two = {"image": [ok["image"], ok["image"]], "label": ok["label"]}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [ok, ok], "validation": [two, two]}))
    with pytest.raises(
        ValueError,
        match=r"training case 0 is one file but validation case 0 is a list of 2 channel files",
    ):
        read_datalist(path)
    path.write_text(json.dumps({"training": [ok, ok], "validation": [ok, two]}))  # within a split
    with pytest.raises(ValueError, match=r": validation case 0 is one file but case 1 is a list"):
        read_datalist(path)


def test_labels_beyond_the_model_outputs_name_the_file(card, tmp_path):
    bad = write_case(tmp_path, "bad", seed=0, max_label=5)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [bad]}))
    with pytest.raises(
        ValueError, match=r"bad_lab\.nii\.gz holds class 5 but the model .* predicts 3"
    ):
        train(tiny_model(card), card, path, out_dir=tmp_path / "out", config=config())
    pair = volume_pair(0, max_label=7)
    with pytest.raises(ValueError, match="training case 0 holds class 7"):
        load_cases([pair], card)


def test_in_memory_volumes_and_patch_sampler(card):
    small = volume_pair(1)
    hu, seg = blob_case(2)
    tiny = (Volume(hu[:12, :12, :10], AFFINE), Volume(seg[:12, :12, :10].astype(float), AFFINE))
    cases = load_cases([small, tiny], card)
    assert cases[0].image.shape == (1, 24, 24, 24) and cases[1].image.shape == (1, 12, 12, 10)
    assert float(cases[0].image.min()) >= 0 and float(cases[0].image.max()) <= 1
    aug = Augmentation(flip_axes=(0,), flip_prob=0.5)
    sampler = PatchSampler(cases, (16, 16, 16), aug, (0,), batch_size=3, seed=4)
    x, y = sampler.batch(epoch=0, step=0, iterations=1)
    assert x.shape == (3, 1, 16, 16, 16) and y.shape == (3, 1, 16, 16, 16)  # small case padded
    assert y.dtype == torch.int64 and float(x.min()) >= 0 and float(x.max()) <= 1
    x2, y2 = sampler.batch(epoch=0, step=0, iterations=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a resumed run draws the same patches
    assert not torch.equal(x, sampler.batch(epoch=1, step=0, iterations=1)[0])
    # two processes share the cases out
    ranks = [
        PatchSampler(cases, (16,) * 3, aug, batch_size=1, rank=r, world_size=2) for r in (0, 1)
    ]
    assert sorted(ranks[0]._epoch_order(0, 1) + ranks[1]._epoch_order(0, 1)) == [0, 1]


def test_flip_axes_follow_the_orientation_and_warn_for_left_right():
    card = ModelCard.from_preset("demo-unet")  # RAS, BTCV classes with left/right organs
    assert resolve_flip_axes(["SI"], card) == (2,)
    assert resolve_flip_axes([1, "ap"], card) == (1,)
    with pytest.warns(UserWarning, match="lateralised"):
        assert resolve_flip_axes(["LR"], card) == (0,)
    with pytest.raises(ValueError, match="no orientation"):
        resolve_flip_axes(["SI"], tiny_card())
    with pytest.raises(ValueError, match="flip axis"):
        Augmentation(flip_axes=("XY",))


def test_config_validation():
    with pytest.raises(ValueError, match="did you mean 'vafa-fr'"):
        TrainingConfig(mode="vafa_fx")
    with pytest.raises(ValueError, match="must be empty in mode 'clean'"):
        TrainingConfig(mode="clean", attack_options={"steps": 3})
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainingConfig(lr=0)
    with pytest.raises(ValueError, match="warmup"):
        TrainingConfig(warmup=1.0)
    with pytest.raises(ValueError, match="'seed'"):
        TrainingConfig(attack_options={"seed": 1})


# ----------------------------------------------------------------------------- command line
def test_train_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: vafa train" in text and "--lambda-fr" in text and "--q-max" in text


def test_train_command_writes_checkpoints_log_and_plot(card, datalist, tmp_path, capsys):
    from vafa.io.checkpoints import save_card

    card_file = save_card(card, tmp_path / "tiny.json")
    out = tmp_path / "run"
    argv = ["train", "--datalist", str(datalist), "--card", str(card_file), "--mode", "fgsm"]
    argv += ["--epochs", "1", "--iterations-per-epoch", "2", "--eps", "2", "--out-dir", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "validation foreground Dice" in captured.out and "best dice_fg_adv" in captured.out
    log = (out / LOG).read_text().splitlines()
    assert len(log) == 1 + 2 + 1  # header, 2 iterations, 1 validation
    assert (out / PLOT).is_file() and (out / "best.safetensors").is_file()
    assert load_card(card_path_for(out / LATEST)).training["attack"]["eps"] == 2
    # an existing run is not overwritten; --resume continues it (here with one more epoch)
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv[:-4], "--epochs", "2", "--resume", "--out-dir", str(out), "-q"]) == 0
    assert torch.load(out / STATE, weights_only=True)["iteration"] == 4


def test_train_command_errors_are_one_line(card, datalist, tmp_path, capsys):
    from vafa.io.checkpoints import save_card

    card_file = save_card(card, tmp_path / "tiny.json")
    base = ["train", "--datalist", str(datalist), "--card", str(card_file)]
    cases = [
        ([*base, "--mode", "clean", "--steps", "3"], "must be empty in mode 'clean'"),
        ([*base, "--mode", "pgd", "--q-max", "30"], "does not take option"),
        ([*base, "--attack", "pgd"], "follows --mode"),
        (["train", "--datalist", str(datalist)], "give the model"),
        ([*base, "--flip-axes", "XY"], "flip axis"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out-dir", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never" / LATEST).exists()


def test_training_modules_do_not_import_qt():
    import subprocess
    import sys

    code = (
        "import sys, vafa.training.config, vafa.training.trainer, vafa.cli.train, vafa.cli; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'magicgui')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_warnings_from_a_plain_run(card, datalist, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(tiny_model(card), card, datalist, [], out_dir=tmp_path, config=config("bim"))


def test_training_samples_are_the_published_last_iterate_unless_keep_is_given():
    assert TrainingConfig(mode="vafa-fr").attack_options == {"keep": "last"}
    assert TrainingConfig(mode="pgd", attack_options={"eps": 2}).attack_options == {
        "keep": "last",
        "eps": 2,
    }
    assert TrainingConfig(mode="vafa", attack_options={"keep": "best"}).attack_options == {
        "keep": "best"
    }
    assert TrainingConfig(mode="gn").attack_options == {}  # noise has no iterates
    assert TrainingConfig(mode="clean").attack_options == {}


def test_a_clean_run_can_be_validated_under_an_attack(card, datalist, tmp_path):
    """validation_attack: the clean run's Dice under VAFA, measured like an adversarial run's
    (its best checkpoint is still chosen by clean Dice)."""
    options = {"steps": 2, "block_size": 8}
    cfg = config("clean", validation_attack="VAFA", validation_attack_options=options)
    assert cfg.validation == ("vafa", {"keep": "last", **options})
    result = train(tiny_model(card), card, datalist, out_dir=tmp_path, config=cfg)
    assert result.validation["dice_fg_adv"] is not None
    assert result.selection == "dice_fg_clean"
    same = config("vafa", attack_options={"steps": 2, "q_max": 12})
    assert same.validation == ("vafa", {"keep": "last", "steps": 2, "q_max": 12})
    assert config("clean").validation == (None, {})
    with pytest.raises(ValueError, match="attack must be one of"):
        config("clean", validation_attack="vafa3")
    with pytest.raises(ValueError, match="q_max must be > 0"):
        config("clean", validation_attack="vafa", validation_attack_options={"q_max": -1})


def test_validation_reports_the_attacked_tiles_own_dice(datalist, tmp_path):
    """``dice_fg_adv_tiles``: Dice of the attacked tiles' stitched predictions. With one tile
    covering the case (roi 24 = the volume) and a zero-noise attack, the tile prediction is
    the model's plain prediction: it must equal the clean sliding-window Dice."""
    from vafa.training.files import read_log

    card24 = tiny_card(roi=24)
    options = {"std": 0.0}
    cfg = config("clean", validation_attack="gn", validation_attack_options=options)
    result = train(tiny_model(card24), card24, datalist, out_dir=tmp_path, config=cfg)
    val = result.validation
    assert val["dice_fg_adv_tiles"] == pytest.approx(val["dice_fg_clean"], abs=1e-9)
    assert val["dice_fg_adv"] == pytest.approx(val["dice_fg_clean"], abs=1e-9)
    logged = [r for r in read_log(tmp_path / LOG) if r["stage"] == "validation"]
    assert float(logged[-1]["val_dice_fg_adv_tiles"]) == pytest.approx(
        val["dice_fg_adv_tiles"], abs=1e-5
    )
    # a real attack: the tiles' Dice is measured and is a Dice
    cfg = config("vafa", attack_options={"steps": 1, "block_size": 8})
    out = train(tiny_model(card24), card24, datalist, out_dir=tmp_path / "v", config=cfg)
    assert 0.0 <= out.validation["dice_fg_adv_tiles"] <= 1.0
    assert config("clean").validation == (None, {})
