"""The training settings schema (vafa.training.settings) and its faces: TrainingConfig, the
``vafa train`` flags and the Slicer "VAFT fine-tune" module all read it; the interactive faces
start from the declared profile. (The napari widget: tests/plugin/test_train_settings.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vafa.cli import build_parser
from vafa.cli.train import SHARED_FLAGS
from vafa.training import TrainingConfig
from vafa.training.config import STRUCTURED
from vafa.training.settings import DEFAULTS, PROFILES, QUICK_DEMO, SETTINGS, setting

ROOT = Path(__file__).resolve().parents[2]
#: The settings each face offers: a setting with flags is on the CLI, one with a widget in
#: napari and Slicer.
CLI = [s for s in SETTINGS if s.cli_flags]
GUI = [s for s in SETTINGS if s.widget]


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _train_actions() -> dict[str, argparse.Action]:
    """``vafa train``'s arguments, by flag."""
    return dict(_train_parser()._option_string_actions)


def _train_group() -> list[argparse.Action]:
    """The arguments of ``vafa train``'s "training" group."""
    return next(g for g in _train_parser()._action_groups if g.title == "training")._group_actions


# ----------------------------------------------------------------------------- the library
def test_every_config_field_is_a_setting_and_takes_its_default():
    config = TrainingConfig()
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    homed = {s.name for s in SETTINGS if s.home == "config"}
    assert fields - set(STRUCTURED) == homed  # a field without a schema entry fails here
    for name in homed:
        assert getattr(config, name) == setting(name).default, name


@pytest.mark.parametrize(
    ("name", "bad"),
    [("epochs", 0), ("epochs", True), ("epochs", 1.5), ("epochs", None), ("lr", 0),
     ("lr", float("nan")), ("batch_size", -1), ("weight_decay", -1e-5), ("warmup", 1.0),
     ("grad_clip", 0), ("lambda_fr", -1), ("val_every", 0), ("validation_steps", 0),
     ("tile_batch", 0), ("amp", "yes"), ("seed", -1), ("mode", "vafa_fx"),
     ("iterations_per_epoch", 0), ("validation_attack", "vafa3")],
)  # fmt: skip
def test_config_rejects_a_bad_value_in_one_line_naming_the_setting(name, bad):
    with pytest.raises((ValueError, TypeError)) as err:
        TrainingConfig(**{name: bad})
    message = str(err.value)
    assert message.startswith(f"{name} must") and "\n" not in message, message


def test_none_means_what_the_setting_says():
    config = TrainingConfig(grad_clip=None, iterations_per_epoch=None, validation_steps=None)
    assert config.grad_clip is None and config.validation == ("vafa", {"keep": "last"})
    assert all(s.off for s in SETTINGS if s.default is None)


def test_from_settings_reads_face_values():
    config = TrainingConfig.from_settings(
        {"grad_clip": 0, "iterations_per_epoch": 0, "patch": 64, "flip_axes": "si,1",
         "crop_foreground": True, "validation_steps": 7, "mode": "pgd"},
        attack_options={"eps": 2},
    )  # fmt: skip
    assert config.grad_clip is None and config.iterations_per_epoch is None
    assert config.augmentation.flip_axes == ("SI", 1) and config.augmentation.crop_foreground
    assert config.validation == ("pgd", {"keep": "last", "eps": 2, "steps": 7})
    with pytest.raises(KeyError, match="no training setting 'epoch'"):
        TrainingConfig.from_settings({"epoch": 2})


def test_profiles_name_settings_of_the_schema_with_valid_values_and_a_reason():
    assert PROFILES[0] is QUICK_DEMO and DEFAULTS.settings == {}
    for profile in PROFILES:
        assert profile.reason and profile.title in profile.summary
        TrainingConfig.from_settings(
            {n: v for n, v in profile.settings.items()}, attack_options=dict(profile.attack)
        )
    # the faces' start values: what they used before the schema (napari: 2 × 100, lr 5e-4,
    # 64³, 5 attack steps, validated under 20)
    assert QUICK_DEMO.settings == {
        "epochs": 2, "iterations_per_epoch": 100, "lr": 5e-4, "patch": 64, "validation_steps": 20,
    }  # fmt: skip
    assert QUICK_DEMO.attack == {"steps": 5}


# ----------------------------------------------------------------------------- vafa train
def test_cli_offers_every_cli_setting_with_the_schema_default_and_help():
    actions = _train_actions()
    args = build_parser().parse_args(["train"])
    for s in CLI:
        flag = s.cli_flags[0]
        assert flag in actions, f"{s.name}: {flag} is not a flag of vafa train"
        action = actions[flag]
        if s.kind is bool:
            assert getattr(args, s.name) == s.default
            assert action.const is (not s.default)
        else:
            assert action.default == s.default, s.name
        assert s.help in " ".join(action.help.split()), s.name


def test_cli_training_group_is_the_schema():
    """A training flag written by hand (not in the schema) fails here."""
    declared = {s.name for s in CLI if s.name not in SHARED_FLAGS}
    assert {a.dest for a in _train_group()} == declared


def test_cli_builds_the_config_from_its_flags():
    from vafa.cli.train import _config_values

    args = build_parser().parse_args(["train", "--grad-clip", "0", "--no-amp", "--flip-axes",
                                      "SI", "--validation-steps", "3", "--lr", "5e-4"])  # fmt: skip
    config = TrainingConfig.from_settings(_config_values(args))
    assert config.grad_clip is None and config.amp is False and config.lr == 5e-4
    assert config.augmentation.flip_axes == ("SI",) and config.validation_steps == 3


def test_cli_epilog_gives_the_profile_as_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert f"'{QUICK_DEMO.title}' profile" in text
    assert "--lr 5e-4" in text and "--steps 5" in text and "--roi 64" in text


# ----------------------------------------------------------------------------- Slicer
def _slicer_training() -> dict[str, ET.Element]:
    from vafa.slicer.modules import train_module
    from vafa.slicer.xml import module_xml

    root = ET.fromstring(module_xml(train_module(), "0"))
    group = next(p for p in root.iter("parameters") if p.findtext("label") == "Training")
    return {e.findtext("name"): e for e in group if e.find("name") is not None}


def test_slicer_offers_every_gui_setting_with_the_profile_default():
    params = _slicer_training()
    assert set(params) == {s.name for s in GUI}  # a missing or hand-written one fails
    for s in GUI:
        value = s.to_face(QUICK_DEMO.value(s.name))
        assert params[s.name].findtext("default") == str(value), s.name
        assert s.help[1:40] in " ".join(params[s.name].findtext("description").split())


def test_slicer_training_group_names_the_profile():
    from vafa.slicer.modules import train_module

    group = next(g for g in train_module().groups if g.label == "Training")
    assert QUICK_DEMO.title in group.description and QUICK_DEMO.reason in group.description


def test_slicer_training_attack_steps_are_the_profiles():
    from vafa.slicer.modules import train_module

    steps = next(p for p in train_module().params if p.name == "steps")
    assert steps.default == QUICK_DEMO.attack["steps"]


# ----------------------------------------------------------------------------- docs
@pytest.mark.parametrize("doc", ["docs/napari.md", "docs/cli.md", "README.md"])
def test_docs_name_the_profile(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert QUICK_DEMO.title in text


def test_cli_docs_give_the_profile_as_the_help_does():
    from vafa.cli.train import _profile_note

    command = _profile_note(QUICK_DEMO).strip().splitlines()[-1].strip()
    assert command.startswith("vafa train --")
    assert command in (ROOT / "docs/cli.md").read_text(encoding="utf-8")
