"""Presets, model cards and safe checkpoint loading/saving (vafa.io.models, vafa.io.checkpoints)."""

from __future__ import annotations

import json
import re

import factories
import pytest
import torch
from torch import nn

from vafa.io import checkpoints
from vafa.io.checkpoints import (
    card_path_for,
    find_card,
    load_card,
    load_model,
    save_card,
    save_model,
)
from vafa.io.models import ModelCard, build_model, count_parameters, list_presets
from vafa.io.presets import BTCV_CLASSES
from vafa.io.state_dicts import LegacyCheckpointWarning
from vafa.ops.devices import resolve_device

# --------------------------------------------------------------------------------- fixtures


def demo_card(out_channels: int = 3, **overrides) -> ModelCard:
    """A demo-unet card (3 mm, RAS) shrunk to a few hundred parameters (16³ inputs)."""
    fields = {"spacing": (3.0, 3.0, 3.0), "orientation": "RAS", **overrides}
    kwargs = fields.pop("kwargs", {"channels": [4, 8], "strides": [2]})
    return factories.tiny_card("demo-unet", out_channels=out_channels, kwargs=kwargs, **fields)


def demo_model(card: ModelCard, seed: int = 0) -> nn.Module:
    """``card``'s network in eval mode, its BatchNorm statistics drawn too (buffers matter)."""
    return factories.tiny_model(card, seed, norm_statistics=True).eval()


def outputs(model: nn.Module, size: int = 16, seed: int = 1) -> torch.Tensor:
    x = torch.rand(1, 1, size, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


# Small UNETR with the paper's layer structure (12 blocks, residual encoders), 32³ inputs.
SMALL_UNETR = {
    "kwargs": {"img_size": [32, 32, 32], "feature_size": 4, "hidden_size": 24, "mlp_dim": 48,
               "num_heads": 4},
    "roi_size": (32, 32, 32),
}  # fmt: skip
LEGACY_UNEXPECTED = [
    "vit.patch_embedding.cls_token",
    "encoder2.blocks.0.1.conv3.conv.weight",
    "encoder2.blocks.1.1.conv3.conv.weight",
    "encoder3.blocks.0.1.conv3.conv.weight",
]
LEGACY_MISSING = [
    f"vit.blocks.{i}.norm_cross_attn.{p}" for i in range(12) for p in ("weight", "bias")
]


def legacy_state(model: nn.Module, hidden: int, feature: int) -> dict[str, torch.Tensor]:
    """``model``'s state dict re-keyed as the paper's MONAI-0.7 UNETR saved it."""
    state = {k: v.clone() for k, v in model.state_dict().items() if k not in LEGACY_MISSING}
    gen = torch.Generator().manual_seed(7)
    state["vit.patch_embedding.cls_token"] = torch.randn(1, 1, hidden, generator=gen)
    for key, ch in zip(LEGACY_UNEXPECTED[1:], (2 * feature, 2 * feature, 4 * feature), strict=True):
        state[key] = torch.randn(ch, ch, 1, 1, 1, generator=gen)
    return state


def randomise_cross_attn_norms(model: nn.Module) -> None:
    """Give the unused LayerNorms non-default values: a loaded copy keeps the defaults."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "norm_cross_attn" in name:
                tensor.uniform_(-2.0, 2.0)


# ---------------------------------------------------------------------------------- presets


def test_presets_are_listed():
    assert list_presets() == ["demo-unet", "segresnet", "swin-unetr", "unet", "unetr-btcv"]


@pytest.mark.parametrize(
    ("name", "cls", "params"),
    [
        ("unetr-btcv", "UNETR", 92_802_478),  # the paper's UNETR (img 96³, feature 16, hidden 768)
        ("demo-unet", "UNet", 497_252),
        ("unet", "UNet", None),
        ("segresnet", "SegResNet", None),
        ("swin-unetr", "SwinUNETR", None),
    ],
)
def test_build_each_preset(name, cls, params):
    card = ModelCard.from_preset(name)
    model = build_model(name)
    assert type(model).__name__ == cls
    assert card.out_channels == 14 and tuple(card.class_names) == BTCV_CLASSES
    assert card.intensity == {"type": "ct_window", "a_min": -175.0, "a_max": 250.0}
    assert card.roi_size == (96, 96, 96) and card.orientation == "RAS"
    assert card.spacing == ((3.0, 3.0, 3.0) if name == "demo-unet" else (1.5, 1.5, 2.0))
    if params is not None:
        assert count_parameters(model) == params


def test_unetr_preset_matches_the_paper_settings():
    model = build_model("unetr-btcv")
    assert model.vit.patch_embedding.proj_type == "perceptron"
    assert len(model.vit.blocks) == 12
    assert model.vit.blocks[0].attn.num_heads == 12
    assert model.out.conv.conv.out_channels == 14


def test_card_kwargs_override_the_preset():
    card = ModelCard.from_preset("unet", kwargs={"channels": [4, 8, 16], "strides": [2, 2]})
    model = build_model(card)
    assert card.kwargs["num_res_units"] == 2  # kept from the preset
    assert outputs(model).shape == (1, 14, 16, 16, 16)
    small = ModelCard.from_dict({**card.to_dict(), "kwargs": {"channels": [4, 8], "strides": [2]}})
    assert count_parameters(build_model(small)) < count_parameters(model)


def test_swin_and_segresnet_run_on_small_inputs():
    card = ModelCard.from_preset("swin-unetr", kwargs={"feature_size": 12}, roi_size=(64, 64, 64))
    assert outputs(build_model(card), size=64).shape == (1, 14, 64, 64, 64)
    card = ModelCard.from_preset("segresnet", kwargs={"init_filters": 8}, roi_size=(16, 16, 16))
    assert outputs(build_model(card)).shape == (1, 14, 16, 16, 16)


def test_build_model_rejects_unknown_preset_and_types():
    with pytest.raises(ValueError, match=r"did you mean 'unetr-btcv'\?"):
        build_model("unetr_btcv")
    with pytest.raises(TypeError, match="preset_or_card"):
        build_model(3)


def test_register_preset_for_a_custom_network(tmp_path):
    from vafa.io import models

    def pointwise(in_channels, out_channels, kernel_size=1):
        return nn.Conv3d(in_channels, out_channels, kernel_size)

    models.register_preset(
        "test-pointwise",
        pointwise,
        class_names=["background", "brain"],
        intensity={"type": "percentile"},
        roi_size=(8, 8, 8),
        kwargs={"kernel_size": 1},
    )
    try:
        assert "test-pointwise" in list_presets()
        with pytest.raises(ValueError, match="must not be an existing preset"):
            models.register_preset(
                "test-pointwise", pointwise, class_names=["a"], intensity={}, roi_size=(8, 8, 8)
            )
        with pytest.raises(ValueError, match=r"'kernal_size' is unknown.*'kernel_size'\?"):
            ModelCard.from_preset("test-pointwise", kwargs={"kernal_size": 3})
        card = ModelCard.from_preset("test-pointwise", kwargs={"kernel_size": 3})
        model = build_model(card)
        path = save_model(model, card, tmp_path / "pointwise.safetensors")
        loaded, loaded_card = load_model(path, device="cpu")
        assert loaded_card == card
        assert torch.equal(outputs(loaded, size=8), outputs(model, size=8))
    finally:
        models.PRESETS.pop("test-pointwise", None)


def test_count_parameters():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    assert count_parameters(model) == 8 + 3
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 3
    with pytest.raises(TypeError, match="model must be"):
        count_parameters("model")


# ------------------------------------------------------------------------------------ cards


def test_card_json_round_trip(tmp_path):
    card = ModelCard.from_preset(
        "unetr-btcv",
        provenance={"trained_by": "test", "metrics": {"dice": [0.74, 0.62]}},
        training={"lr": 1e-4, "epochs": 2},
    )
    path = save_card(card, tmp_path / "model.safetensors.json")
    data = json.loads(path.read_text())
    assert data["card_version"] == 1
    assert list(data)[:3] == ["card_version", "architecture", "kwargs"]
    assert data["roi_size"] == [96, 96, 96] and data["spacing"] == [1.5, 1.5, 2.0]
    assert load_card(path) == card
    assert ModelCard.from_dict(card.to_dict()) == card
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors.json"]  # no temp file


def test_card_defaults_for_optional_fields():
    d = {
        "architecture": "demo-unet",
        "in_channels": 1,
        "out_channels": 2,
        "class_names": ["background", "brain"],
        "roi_size": [32, 32, 32],
        "intensity": {"type": "percentile"},
    }
    card = ModelCard.from_dict(d)
    assert card.kwargs == {} and card.spacing is None and card.orientation is None
    assert card.provenance == {} and card.training is None
    assert card.intensity == {"type": "percentile", "p_low": 0.5, "p_high": 99.5}


def _valid_card_dict() -> dict:
    return demo_card().to_dict()


def _without(key):
    def edit(d):
        del d[key]

    return edit


def _set(key, value):
    def edit(d):
        d[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (_without("class_names"), ValueError, r"missing required field\(s\): class_names"),
        (_without("intensity"), ValueError, r"missing required field\(s\): intensity"),
        (_set("class_name", ["a"]), ValueError, r"'class_name' is unknown.*mean 'class_names'"),
        (_set("class_names", ["bg", "a"]), ValueError, r"must have out_channels=3 entries, got 2"),
        (_set("class_names", ["bg", "a", "a"]), ValueError, r"class_names must be unique"),
        (_set("class_names", "bg,a,b"), TypeError, r"class_names must be a list"),
        (_set("roi_size", [16, 16]), ValueError, r"roi_size must be 3 positive.*got \[16, 16\]"),
        (_set("roi_size", [16, 0, 16]), ValueError, r"roi_size must be 3 positive integers"),
        (_set("roi_size", [16, 16.5, 16]), ValueError, r"roi_size must be 3 positive integers"),
        (_set("roi_size", [16, 15, 16]), ValueError, r"roi_size must be a multiple of 2"),
        (_set("intensity", {"type": "ct_windw"}), ValueError, r"intensity is.*'ct_window'\?"),
        (_set("intensity", {"type": "ct_window"}), ValueError, r"intensity is invalid.*a_min"),
        (_set("intensity", [-175, 250]), ValueError, r"intensity must be one dict or a list"),
        (_set("intensity", 5), TypeError, r"intensity must be a dict or a list of dicts"),
        (_set("architecture", "demo_unet"), ValueError, r"architecture must be.*'demo-unet'\?"),
        (_set("kwargs", {"chanels": [4, 8]}), ValueError, r"'chanels' is unknown.*'channels'\?"),
        (_set("kwargs", {"out_channels": 3}), ValueError, r"must not contain 'out_channels'"),
        (_set("in_channels", "1"), TypeError, r"in_channels must be an integer >= 1, got '1'"),
        (_set("out_channels", 0), ValueError, r"out_channels must be an integer >= 1, got 0"),
        (_set("spacing", [1.5, -1, 2]), ValueError, r"spacing must be 3 positive finite numbers"),
        (_set("orientation", "RAR"), ValueError, r"orientation must be 3 axis codes"),
        (_set("provenance", ["me"]), TypeError, r"provenance must be a dict"),
        (_set("training", {"lr": float("nan")}), TypeError, r"training must hold only JSON values"),
        (_set("card_version", 2), ValueError, r"card_version must be 1, got 2"),
        (_set("inference", {"cval": [0.0, 0.5]}), ValueError,
         r"inference.cval must be one number or one per input channel \(in_channels=1\), "
         r"got 2 values"),
    ],
)  # fmt: skip
def test_card_validation_errors_name_field_and_file(tmp_path, edit, error, pattern):
    d = _valid_card_dict()
    edit(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(error, match=pattern) as info:
        load_card(path)
    assert str(path) in str(info.value)


def test_unetr_roi_must_match_img_size():
    with pytest.raises(ValueError, match=r"roi_size must equal kwargs\['img_size'\]"):
        ModelCard.from_preset("unetr-btcv", roi_size=(64, 64, 64))
    card = ModelCard.from_preset("unetr-btcv", roi_size=(64, 64, 64), kwargs={"img_size": [64] * 3})
    assert card.roi_size == (64, 64, 64)


def test_from_preset_rejects_unknown_override():
    with pytest.raises(ValueError, match=r"'roi' is unknown.*did you mean 'roi_size'"):
        ModelCard.from_preset("demo-unet", roi=(32, 32, 32))


def test_load_card_reports_bad_json(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"model card {path} must be valid JSON")):
        load_card(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_card(tmp_path / "nope.json")


# -------------------------------------------------------------------------------- weights


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    card = demo_card(provenance={"trained_by": "test"})
    model = demo_model(card)
    path = save_model(model, card, tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "model.safetensors.json",
    ]
    loaded, loaded_card = load_model(path, device="cpu")
    assert loaded_card == card
    assert not loaded.training
    assert torch.equal(outputs(loaded), outputs(model))


def test_save_model_files_get_the_umask_permissions_not_the_temp_files(tmp_path):
    import os
    import stat

    card = demo_card()
    old = os.umask(0o022)
    try:
        path = save_model(demo_model(card), card, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for name in (path, tmp_path / "model.safetensors.json"):
        assert stat.S_IMODE(name.stat().st_mode) == 0o644  # mkstemp alone gives 0o600


def test_save_model_refuses_a_card_that_does_not_fit(tmp_path):
    model = demo_model(demo_card(out_channels=3))
    with pytest.raises(ValueError, match="the model has 3 output classes, card says 4"):
        save_model(model, demo_card(out_channels=4), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"path must end with '\.safetensors'"):
        save_model(model, demo_card(), tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_save_model_failure_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    card = demo_card()
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(demo_model(card), card, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("layout", ["model_state_dict", "state_dict", "bare"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_pt_layouts_and_module_prefixes(tmp_path, layout, prefix):
    card = demo_card()
    model = demo_model(card)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    payload = state if layout == "bare" else {layout: state, "epoch": 3, "best_dice": 0.5}
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    save_card(card, tmp_path / "model.json")  # <stem>.json is found too
    loaded, _ = load_model(path, device="cpu")
    assert torch.equal(outputs(loaded), outputs(model))


def test_card_beside_weights_wins_over_stem_card(tmp_path):
    card = demo_card()
    path = save_model(demo_model(card), card, tmp_path / "model.safetensors")
    assert card_path_for(path) == tmp_path / "model.safetensors.json"
    other = demo_card(class_names=["background", "x", "y"])
    save_card(other, tmp_path / "model.json")
    assert find_card(path) == tmp_path / "model.safetensors.json"
    assert load_model(path, device="cpu")[1] == card
    assert load_model(path, card=tmp_path / "model.json", device="cpu")[1] == other
    assert load_model(path, card=other, device="cpu")[1] == other


def test_missing_card_explains_the_card_option(tmp_path):
    card = demo_card()
    path = tmp_path / "weights.pt"
    torch.save(demo_model(card).state_dict(), path)
    with pytest.raises(ValueError, match=r"no model card found .*--card"):
        load_model(path, device="cpu")


def test_class_count_mismatch_is_explained(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": demo_model(demo_card(out_channels=5)).state_dict()}, path)
    with pytest.raises(
        ValueError, match=r"the checkpoint has 5 output classes, card says 3"
    ) as info:
        load_model(path, card=demo_card(out_channels=3), device="cpu")
    assert "mis-shaped keys" in str(info.value) and "(5,) vs (3,)" in str(info.value)


def test_non_tolerated_keys_fail_for_other_architectures(tmp_path):
    card = demo_card()
    state = demo_model(card).state_dict()
    state["vit.patch_embedding.cls_token"] = torch.zeros(1, 1, 24)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): vit\.patch_embedding\.cls_token"):
        load_model(path, card=card, device="cpu")


def test_long_key_lists_are_shortened(tmp_path):
    card = demo_card()
    state = {f"extra.{i}": torch.zeros(1) for i in range(15)}
    state.update(demo_model(card).state_dict())
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"unexpected keys \(15\): extra\.0, .*extra\.9 and 5 more"
    ):
        load_model(path, card=card, device="cpu")


def test_pickled_module_needs_trust(tmp_path):
    card = demo_card()
    model = demo_model(card)
    path = tmp_path / "whole_model.pth"
    torch.save(model, path)
    with pytest.raises(ValueError, match="pickled Python objects") as info:
        load_model(path, card=card, device="cpu")
    message = str(info.value)
    assert "execute" in message and "trust=True" in message and "--trust-checkpoint" in message
    loaded, _ = load_model(path, card=card, device="cpu", trust=True)
    assert torch.equal(outputs(loaded), outputs(model))


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_trust_still_refuses_code_outside_torch_and_monai(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(ValueError, match=r"outside torch.*(posix|os)\.system"):
        load_model(path, card=demo_card(), device="cpu", trust=True)
    assert not (tmp_path / "pwned").exists()  # nothing of the file was executed


@pytest.mark.parametrize(
    ("name", "content", "error", "pattern"),
    [
        ("model.onnx", b"x", ValueError, r"checkpoint must end with one of"),
        ("model.pt", b"not a torch file", ValueError, r"is not a readable PyTorch file"),
        ("model.safetensors", b"not safetensors", ValueError, r"not a readable safetensors file"),
    ],
)  # fmt: skip
def test_unreadable_checkpoints(tmp_path, name, content, error, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error, match=pattern):
        load_model(path, card=demo_card(), device="cpu")


def test_weights_file_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors", card=demo_card())


def test_device_auto_and_bad_device(tmp_path):
    card = demo_card()
    path = save_model(demo_model(card), card, tmp_path / "model.safetensors")
    model, _ = load_model(path, device="auto")
    assert next(model.parameters()).device.type == resolve_device("auto").type
    with pytest.raises(ValueError, match="device"):
        load_model(path, device="gpu7")


def test_models_reexports_checkpoint_functions():
    assert load_model is checkpoints.load_model and save_model is checkpoints.save_model


# ------------------------------------------------------------ checkpoints of the paper's code


def _small_unetr() -> tuple[ModelCard, nn.Module]:
    card = ModelCard.from_preset("unetr-btcv", **SMALL_UNETR)
    torch.manual_seed(0)
    return card, build_model(card).eval()


def test_paper_unetr_checkpoint_loads_with_identical_outputs(tmp_path):
    """The real preset (92 M parameters, one 96³ forward per model)."""
    torch.manual_seed(0)
    card = ModelCard.from_preset("unetr-btcv")
    source = build_model(card).eval()
    state = legacy_state(source, hidden=768, feature=16)
    assert set(state) - set(source.state_dict()) == set(LEGACY_UNEXPECTED)
    assert set(source.state_dict()) - set(state) == set(LEGACY_MISSING)
    randomise_cross_attn_norms(source)
    path = tmp_path / "paper_unetr.pt"
    torch.save({"model_state_dict": state}, path)
    del state
    with pytest.warns(LegacyCheckpointWarning, match="older MONAI UNETR") as record:
        loaded, _ = load_model(path, card=card, device="cpu")
    assert len(record) == 1
    assert torch.equal(outputs(loaded, size=96), outputs(source, size=96))


def test_small_unetr_legacy_checkpoint_with_ddp_prefix(tmp_path):
    card, source = _small_unetr()
    state = legacy_state(source, hidden=24, feature=4)
    randomise_cross_attn_norms(source)
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    with pytest.warns(LegacyCheckpointWarning):
        loaded, _ = load_model(path, card=card, device="cpu")
    assert torch.equal(outputs(loaded, size=32), outputs(source, size=32))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ("extra", r"unexpected keys \(1\): decoder2\.extra\.weight"),
        ("missing", r"missing keys \(1\): out\.conv\.conv\.bias"),
        ("bad_cls_token", r"unexpected keys \(1\): vit\.patch_embedding\.cls_token"),
        ("conv3_elsewhere", r"unexpected keys \(1\): encoder4\.blocks\.0\.1\.conv3\.conv\.weight"),
    ],
)
def test_legacy_checkpoint_with_other_differences_fails(tmp_path, change, pattern):
    card, source = _small_unetr()
    state = legacy_state(source, hidden=24, feature=4)
    if change == "extra":
        state["decoder2.extra.weight"] = torch.zeros(3)
    elif change == "missing":
        del state["out.conv.conv.bias"]
    elif change == "bad_cls_token":
        state["vit.patch_embedding.cls_token"] = torch.zeros(1, 2, 24)
    else:
        state["encoder4.blocks.0.1.conv3.conv.weight"] = torch.zeros(16, 16, 1, 1, 1)
    path = tmp_path / "paper.pt"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(ValueError, match=pattern):
        load_model(path, card=card, device="cpu")


def test_card_may_be_a_preset_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    card = ModelCard.from_preset("segresnet")
    model = build_model(card)
    path = tmp_path / "model_best.pt"  # e.g. a checkpoint that came without a card
    torch.save({"state_dict": model.state_dict()}, path)
    loaded, used = load_model(path, card="segresnet", device="cpu")
    assert used == card
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    monkeypatch.chdir(tmp_path)
    save_card(demo_card(), tmp_path / "segresnet")  # a file named like the preset
    with pytest.raises(ValueError, match=r"does not match the card's network \(demo-unet"):
        load_model(path, card="segresnet", device="cpu")
    with pytest.raises(FileNotFoundError, match=r"nor is 'unetr' a preset: .*unetr-btcv"):
        load_model(path, card="unetr", device="cpu")
