"""MONAI bundles whose inference config computes with MONAI expressions (``"$..."``), as Model
Zoo bundles do (the whole-body CT bundle: a ``pixdim`` chosen by ``@displayable_configs#highres``,
an inferer ``device`` of ``$torch.device(...)``). Trusted, vafa reads what MONAI's own
``ConfigParser`` evaluates (numpy scalars, tuples, devices: nothing is serialised) and predicts
what ``monai.bundle run`` predicts; entries vafa does not read are never evaluated; without trust,
or where MONAI cannot evaluate an entry, one line naming it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from factories import run_cli, write_noise_ct
from model_folders import make_tiny_bundle, run_bundle, vafa_probabilities

from vafa.io.bundles import bundle_card, load_bundle

SPACINGD, INTENSITY, ENSURE_TYPED = (f"preprocessing#transforms#{i}" for i in (3, 4, 5))
DEVICE = "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"
#: The expressions vafa reads: entry id → expression.
READ = {
    f"{SPACINGD}#pixdim": "$[1.5, 1.5, 2.0] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
    "inferer#roi_size": "$[16] * 3",
    "inferer#overlap": "$float(@displayable_configs#sw_overlap)",
    f"{INTENSITY}#a_min": "$-175.0",
    f"{INTENSITY}#a_max": "$numpy.float32(250.0)",  # not JSON serialisable
    "network_def#strides": "$(2, 2)",  # a tuple
}
#: Expressions vafa does not read (the device is its own): never evaluated, no trust needed.
UNREAD = {
    "device": DEVICE,
    "inferer#device": DEVICE,
    f"{ENSURE_TYPED}#device": "@device",
    f"{ENSURE_TYPED}#dtype": "$torch.float32",
}


def _put(config: dict, id: str, value) -> None:
    *path, last = id.split("#")
    for key in path:
        config = config[int(key)] if isinstance(config, list) else config[key]
    config[int(last) if isinstance(config, list) else last] = value


def _expression_bundle(root, *, highres=True, entries=None):
    """A tiny bundle (:func:`make_tiny_bundle`, MONAI's format and a UNet of
    ``monai.networks.nets``) whose config holds ``entries`` (default: all of :data:`READ`) and
    :data:`UNREAD`, with ``displayable_configs`` as the whole-body CT bundle has it."""
    bundle = make_tiny_bundle(root)
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["displayable_configs"] = {"highres": highres, "sw_overlap": 0.25}
    for id, value in {**UNREAD, **(READ if entries is None else entries)}.items():
        _put(config, id, value)
    path.write_text(json.dumps(config, indent=2))
    return bundle


def _monai_value(bundle, id):
    """What MONAI's own ``ConfigParser`` evaluates for entry ``id`` of the bundle."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    return parser.get_parsed_content(id, instantiate=False)


@pytest.mark.parametrize("highres", [True, False])
def test_trusted_card_holds_what_monai_evaluates(highres, tmp_path):
    bundle = _expression_bundle(tmp_path, highres=highres)
    value = lambda id: _monai_value(bundle, id)  # noqa: E731
    assert isinstance(value(f"{INTENSITY}#a_max"), np.float32)  # what JSON cannot hold
    assert isinstance(value("inferer#device"), torch.device)
    card = bundle_card(bundle, trust=True)
    assert card.spacing == tuple(float(v) for v in value(f"{SPACINGD}#pixdim"))
    assert card.spacing == ((1.5, 1.5, 2.0) if highres else (3.0, 3.0, 3.0))
    assert card.roi_size == tuple(value("inferer#roi_size")) == (16, 16, 16)
    assert card.inference.overlap == value("inferer#overlap") == 0.25
    low, high = float(value(f"{INTENSITY}#a_min")), float(value(f"{INTENSITY}#a_max"))
    assert card.intensity == {"type": "ct_window", "a_min": low, "a_max": high}
    assert card.kwargs["network"]["strides"] == list(value("network_def#strides"))
    json.dumps(card.to_dict(), allow_nan=False)  # the card itself is plain JSON


@pytest.mark.slow
def test_trusted_clean_prediction_is_monai_bundle_runs(tmp_path):
    """MONAI's own pipeline on the same config (preprocessing → inferer → postprocessing,
    ``monai.bundle run``) against vafa's prediction with the card read from it."""
    bundle = _expression_bundle(tmp_path)
    spacing = [float(v) for v in _monai_value(bundle, f"{SPACINGD}#pixdim")]
    noise = {"mean": 20.0, "std": 150.0, "dtype": np.float32, "air": 4}
    image = write_noise_ct(tmp_path / "data" / "case.nii.gz", (40, 36, 24), 0, spacing=spacing,
                           **noise)  # fmt: skip
    theirs = run_bundle(bundle, image, tmp_path / "eval")
    model, card = load_bundle(bundle, device="cpu", trust=True)
    assert next(model.parameters()).device == torch.device("cpu")  # vafa's device, not the bundle's
    ours = vafa_probabilities(model, card, image)
    assert ours.shape == theirs.shape == (3, 40, 36, 24)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_cli_info_reads_a_trusted_bundle(tmp_path, capsys):
    bundle = _expression_bundle(tmp_path)
    code, out, err = run_cli(["info", bundle, "--trust-checkpoint", "--json"], capsys)
    assert code == 0, err
    card = json.loads(out)["card"]
    assert card["spacing"] == [1.5, 1.5, 2.0] and card["roi_size"] == [16, 16, 16]
    assert card["intensity"]["a_max"] == 250.0


def test_an_attack_through_the_cli_lowers_dice(tmp_path, capsys):
    bundle = _expression_bundle(tmp_path)
    image = write_noise_ct(tmp_path / "ct.nii.gz", (32, 32, 24), 0, spacing=(1.5, 1.5, 2.0),
                           mean=20.0, std=150.0, dtype=np.float32, air=4)  # fmt: skip
    argv = ["attack", image, "--model", bundle, "--trust-checkpoint", "--out", tmp_path / "a.nii.gz",
            "--attack", "pgd", "--eps", "8", "--steps", "3", "--seed", "0", "--json", "-q"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    dice = json.loads(out)["dice_fg"]
    assert dice["adversarial"] < dice["clean"]


def test_expressions_vafa_does_not_read_need_no_trust(tmp_path):
    """The device expressions (the inferer's, a transform's) and a transform's dtype are never
    evaluated: vafa chooses its own device."""
    card = bundle_card(_expression_bundle(tmp_path, entries={}))
    assert card.spacing == (1.5, 1.5, 2.0) and card.inference.overlap == 0.5


@pytest.mark.parametrize("id", list(READ))
def test_untrusted_expression_is_one_line_naming_entry_and_flag(id, tmp_path, capsys):
    bundle = _expression_bundle(tmp_path, entries={id: READ[id]})
    message = rf"inference.json: {re.escape(id)} is a Python expression .*--trust-checkpoint"
    with pytest.raises(ValueError, match=message) as info:
        bundle_card(bundle)
    assert "\n" not in str(info.value)
    code, _, err = run_cli(["info", bundle], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err) and "Traceback" not in err


def test_expression_monai_cannot_evaluate_is_one_line_with_monais_reason(tmp_path, capsys):
    id = f"{SPACINGD}#pixdim"
    bundle = _expression_bundle(tmp_path, entries={id: "$undefined_name + 1"})
    with pytest.raises(Exception) as monai_error:  # whatever MONAI raises
        _monai_value(bundle, id)
    reason = monai_error.value.__cause__  # MONAI's "Failed to evaluate" wraps the reason
    assert isinstance(reason, NameError)
    message = rf"{re.escape(id)} \(\$undefined_name \+ 1\) failed: "
    with pytest.raises(ValueError, match=message) as info:
        load_bundle(bundle, device="cpu", trust=True)
    assert f"NameError: {reason}" in str(info.value) and "\n" not in str(info.value)
    code, _, err = run_cli(["info", bundle, "--trust-checkpoint"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert id in err and "NameError" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("id", "expression", "message"),
    [
        ("network_def#act", "$torch.nn.PReLU", r"network_def#act is a type \(.*PReLU.*\), which "
         r"a model card cannot store"),
        ("inferer#overlap", "$torch.device('cpu')", r"inferer#overlap is a device \(cpu\), not a "
         r"value vafa can read"),
        (f"{SPACINGD}#pixdim", "$torch.tensor([1.5, 1.5, 2.0])", None),  # a tensor: numbers
    ],
)  # fmt: skip
def test_evaluated_objects_are_converted_or_refused_in_one_line(id, expression, message, tmp_path):
    bundle = _expression_bundle(tmp_path, entries={id: expression})
    if message is None:
        assert bundle_card(bundle, trust=True).spacing == (1.5, 1.5, 2.0)
        return
    with pytest.raises(ValueError, match=message) as info:
        bundle_card(bundle, trust=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("disabled", "applied"), [("false", True), ("true", False), (True, False)])
def test_a_disabled_transform_is_read_as_monai_reads_it(disabled, applied, tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    _put(config, f"{SPACINGD}#_disabled_", disabled)  # the string "false": not disabled
    path.write_text(json.dumps(config))
    card = bundle_card(bundle)
    assert (card.spacing is not None) == applied
