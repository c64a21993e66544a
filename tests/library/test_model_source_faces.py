"""The model source is described once (vafa.io.handle.SOURCE_HELP, the bundled models, the
nnU-Net checkpoints, the checkpoint suffixes) and the CLI's model flags and the Slicer modules'
"Model" group are made from it. (The napari picker: tests/plugin/test_model_source_picker.py.)"""

from __future__ import annotations

import argparse

import pytest

from vafa.cli import build_parser
from vafa.io.data import BUNDLED_MODELS
from vafa.io.handle import SOURCE_HELP
from vafa.io.nnunet import CHECKPOINTS
from vafa.io.state_dicts import CHECKPOINT_SUFFIXES

FLAGS = {"--model": "model", "--card": "card", "--fold": "fold", "--checkpoint": "checkpoint"}


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices[command]._option_string_actions)


@pytest.mark.parametrize("command", ["attack", "evaluate", "train"])
def test_cli_model_flags_say_what_the_source_schema_says(command):
    actions = _actions(command)
    for flag, name in FLAGS.items():
        if (command, flag) == ("train", "--card"):
            continue  # vafa train's --card also names a model to train from scratch
        assert actions[flag].help == SOURCE_HELP[name], (command, flag)
    assert actions["--checkpoint"].choices == tuple(CHECKPOINTS)
    assert all(repr(name) in SOURCE_HELP["model"] for name in BUNDLED_MODELS)


@pytest.mark.parametrize("module", ["attack_module", "evaluate_module", "train_module"])
def test_slicer_model_group_is_made_from_the_source_schema(module):
    import vafa.slicer.modules as modules

    group = next(g for g in getattr(modules, module)().groups if g.label == "Model")
    params = {p.name: p for p in group.params}
    assert params["model"].choices == (*BUNDLED_MODELS, "file", "folder")
    assert params["weights"].extensions == CHECKPOINT_SUFFIXES
    assert params["checkpoint"].choices == tuple(CHECKPOINTS)
    for name in ("weights", "card", "model_folder", "fold", "checkpoint"):
        assert SOURCE_HELP[name][1:] in params[name].description, name
