"""The process Slicer starts for a vafa module: ``python -m vafa.slicer MODULE ARGS…``.

Arguments come as Slicer builds them from the module's XML: flagged parameters as
``--name value`` (booleans as a bare flag when ticked, empty values left out), then the
positional images, and ``--returnparameterfile FILE`` for the results. Progress goes to stdout
as ``<filter-progress>`` fractions and ``<filter-comment>`` lines; a user error ends with one
line on stderr, exit status 2, and nothing written at the output paths (every output is written
at the end, all or nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vafa.slicer.modules import (
    CHANNEL_OUTPUTS,
    DCT_PICTURES,
    EXTRA_CHANNELS,
    MODULES,
    TRISTATE,
    Module,
)

__all__ = ["main", "parse"]

_TYPES = {"integer": int, "integer-enumeration": int, "double": float, "float": float}
#: Attack module outputs that are fields of :class:`vafa.run.pipeline.AttackOutcome`.
ATTACK_OUTPUTS = ("adversarial", "perturbation", "clean_prediction", "adversarial_prediction",
                  "q_table")  # fmt: skip
#: Channels 2… of the per-channel outputs (multi-channel models).
ATTACK_CHANNEL_OUTPUTS = tuple(f"{name}{c}" for name in CHANNEL_OUTPUTS for c in EXTRA_CHANNELS)


def parse(module: Module, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` as Slicer passes it to ``module``; a parameter left out (a script or
    ``slicer.cli.run`` with partial parameters) takes the default the module's XML declares."""
    parser = argparse.ArgumentParser(prog=module.name, description=module.description)
    positional = sorted((p for p in module.params if p.index is not None), key=lambda p: p.index)
    for p in positional:
        parser.add_argument(p.name)
    for p in module.params:
        if p.index is not None or p.returned:
            continue
        if p.tag == "boolean":
            parser.add_argument(f"--{p.name}", action="store_true")
        else:
            kind = _TYPES.get(p.tag, str)
            choices = [kind(c) for c in p.choices] if p.choices else None
            default = None if p.default is None else kind(p.default)
            parser.add_argument(f"--{p.name}", type=kind, choices=choices, default=default)
    parser.add_argument("--returnparameterfile", default=None)
    return parser.parse_args(list(argv))


class Progress:
    """Slicer's progress protocol on stdout (fractions never go down)."""

    def __init__(self) -> None:
        self.done = 0.0

    def __call__(self, fraction: float) -> None:
        self.done = max(self.done, min(max(float(fraction), 0.0), 1.0))
        print(f"<filter-progress>{self.done:.4f}</filter-progress>", flush=True)

    @staticmethod
    def comment(text: str) -> None:
        print(f"<filter-comment>{text}</filter-comment>", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``argv[0]`` names the module."""
    from vafa.ops.messages import USER_ERRORS, one_line

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODULES:
        print(f"vafa slicer: first argument must be one of {sorted(MODULES)}", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    module = MODULES[name]()
    args = parse(module, rest)
    try:
        results = RUNNERS[name](args, Progress())
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as err:
        print(f"{module.title}: error: {one_line(err)}", file=sys.stderr)
        return 2
    if args.returnparameterfile:
        from vafa.io.files import write_text

        lines = [f"{key} = {_value(results.get(key))}" for key in
                 (p.name for p in module.params if p.returned)]  # fmt: skip
        write_text(args.returnparameterfile, "\n".join(lines) + "\n")
    return 0


# ----------------------------------------------------------------------------- modules
def run_attack_module(args, progress: Progress) -> dict[str, Any]:
    from vafa.attacks import VAFA, attack_class, drive
    from vafa.io.model_space import load_model_labels
    from vafa.run.pipeline import iter_run_attack
    from vafa.run.worst_case import WORST_CASE, is_worst_case, iter_worst_case
    from vafa.slicer.channels import check_channel_outputs, load_channels, split_output

    outputs = _outputs(args, (*ATTACK_OUTPUTS, *DCT_PICTURES, *ATTACK_CHANNEL_OUTPUTS))
    worst = is_worst_case(args.attack)
    classes = [attack_class(m.attack) for m in WORST_CASE] if worst else [attack_class(args.attack)]
    tables = [name for name in outputs if split_output(name)[0] == "q_table"]
    if tables and not all(issubclass(c, VAFA) for c in classes):
        raise ValueError(
            f"{tables[0]}: only VAFA and VAFA-2D learn a quantization table, not {args.attack} "
            "(leave the output empty)"
        )
    progress.comment("loading the model")
    model, card = _model(args)
    image = load_channels(args, card, "input", "channel")
    check_channel_outputs(image, list(outputs), card)
    labels = None if not args.labels else load_model_labels(args.labels, image, card)
    taken = {o.name for cls in classes for o in cls.options}
    options = _attack_options(args, MODULES["VAFAAttack"](), taken)
    progress.comment(f"attacking with {args.attack if worst else classes[0].name}")
    progress(0.0)

    def on_step(event) -> None:
        tiles = event.tiles or 1
        done = ((event.tile or 1) - 1 + event.step / max(event.total, 1)) / tiles
        progress(0.05 + 0.85 * done)

    run = dict(options=options, device=args.device, seed=args.seed, resample_back=True,
               through=args.through)  # fmt: skip
    if worst:
        job = iter_worst_case(model, card, image, labels, floor=args.floor, **run)
    else:
        job = iter_run_attack(model, card, image, labels, attack=args.attack, **run)
    outcome = drive(job, on_step)
    progress.comment("writing the outputs")
    _write_attack_outputs(outcome, outputs)
    progress(1.0)
    m = outcome.metrics
    return {
        "dice_fg_clean": m.dice_fg.clean,
        "dice_fg_adversarial": m.dice_fg.adversarial,
        "ssim": m.ssim,
        "winner": m.attack,
    }


def run_evaluate_module(args, progress: Progress) -> dict[str, Any]:
    from vafa.io.model_space import load_model_labels
    from vafa.run.pipeline import evaluate
    from vafa.slicer.channels import load_channels

    progress.comment("loading the model")
    model, card = _model(args)
    image = load_channels(args, card, "input", "channel")
    labels = None if not args.labels else load_model_labels(args.labels, image, card)
    adversarial = load_channels(args, card, "adversarial", "adversarial")
    progress(0.1)
    progress.comment("segmenting")
    m = evaluate(model, card, image, labels, adversarial, device=args.device)
    progress(1.0)
    return {
        "dice_fg": m.dice_fg.clean,
        "dice": m.dice.clean,
        "hd95": m.hd95.clean,
        "dice_fg_adversarial": m.dice_fg.adversarial,
        "hd95_adversarial": m.hd95.adversarial,
        "ssim": m.ssim,
    }


def run_train_module(args, progress: Progress) -> dict[str, Any]:
    from dataclasses import replace

    from vafa.attacks import attack_class
    from vafa.io.channels import channels_text
    from vafa.io.checkpoints import load_model, save_model
    from vafa.io.model_space import load_model_labels
    from vafa.io.volume import load_volume
    from vafa.training import MODE_ATTACKS, TrainingConfig, train
    from vafa.training.files import BEST, LATEST
    from vafa.training.settings import SETTINGS

    target = _outputs(args, ("output_weights",))["output_weights"]
    if not target.name.endswith(".safetensors"):
        raise ValueError(f"output weights {target} must end in .safetensors")
    progress.comment("loading the model")
    model, card = _model(args)
    if card.in_channels != 1:
        raise ValueError(
            f"{channels_text(card.in_channels, card.channel_names)}: the VAFT module fine-tunes "
            "single-channel models; use vafa train with a datalist of multi-channel cases"
        )
    image = load_volume(args.input)
    labels = load_model_labels(args.labels, image, card)
    attack = MODE_ATTACKS[args.mode]
    taken = {o.name for o in attack_class(attack).options} if attack else set()
    options = _attack_options(args, MODULES["VAFTFineTune"](), taken)
    values = {s.name: getattr(args, s.name) for s in SETTINGS if s.widget}
    config = TrainingConfig.from_settings(values, attack_options=options)
    if args.patch:  # 0: the card's roi_size
        card = replace(card, roi_size=(args.patch,) * 3)
    progress(0.0)

    def on_event(event) -> None:
        if event.total:
            progress(0.02 + 0.93 * event.iteration / event.total)

    with tempfile.TemporaryDirectory(prefix="vafa-slicer-vaft-") as tmp:  # not in the user's folder
        result = train(model, card, [(image, labels)], [(image, labels)], out_dir=tmp,
                       config=config, device=args.device, callback=on_event)  # fmt: skip
        chosen = Path(tmp) / (BEST if result.best is not None else LATEST)
        trained, trained_card = load_model(chosen, device="cpu")
        save_model(trained, trained_card, target)
    progress(1.0)
    validation = result.validation or {}
    return {
        "val_dice_fg": validation.get("dice_fg_clean"),
        "val_dice_fg_adversarial": validation.get("dice_fg_adv"),
    }


RUNNERS = {
    "VAFAAttack": run_attack_module,
    "VAFAEvaluate": run_evaluate_module,
    "VAFTFineTune": run_train_module,
}


# ----------------------------------------------------------------------------- helpers
def _write_attack_outputs(outcome, outputs: dict[str, Path]) -> None:
    """Every output of the attack module at once, all or nothing: the outcome's own fields
    through the one outcome writer (:func:`vafa.io.outcome_files.write_volumes`, each into its
    temporary file), the DCT pictures as float32 volumes on the adversarial volume's grid, and
    a multi-channel outcome's per-channel outputs (adversarial volume, perturbation, DCT
    pictures, q table) one volume per channel, or one vector volume
    (:func:`vafa.slicer.channels.channel_writers`)."""
    from vafa.io.files import atomic_write
    from vafa.io.outcome_files import write_volumes
    from vafa.io.volume import save_volume
    from vafa.report.figures import dct_pictures
    from vafa.slicer.channels import channel_writers

    channels = channel_writers(outcome, outputs)  # a multi-channel outcome's channels
    pictures = {}
    if any(name in DCT_PICTURES and path not in channels for name, path in outputs.items()):
        pictures = dict(zip(DCT_PICTURES, dct_pictures(outcome), strict=True))

    def writer(name: str):
        if name in pictures:
            volume = outcome.adversarial.with_array(pictures[name])
            return lambda tmp: save_volume(volume, tmp, overwrite=True, protect=outcome.inputs)
        return lambda tmp: write_volumes(outcome, {name: tmp}, overwrite=True)

    atomic_write({path: channels.get(path) or writer(name) for name, path in outputs.items()})


def _model(args):
    from vafa.io.handle import ModelSource

    if args.model == "file":
        if not args.weights:
            raise ValueError("model 'file' needs a weights file")
        source = ModelSource(args.weights, card=args.card or None)
    elif args.model == "folder":
        if not args.model_folder:
            raise ValueError("model 'folder' needs a model folder")
        nnunet = ModelSource(args.model_folder).kind == "nnunet"
        checkpoint = args.checkpoint if nnunet and args.checkpoint != "final" else None
        source = ModelSource(args.model_folder, fold=args.fold or None, checkpoint=checkpoint)
    else:
        source = ModelSource(args.model, card=args.card or None)
    source.path  # noqa: B018 - a missing file is an error before anything runs
    return source.load(device=args.device)


def _attack_options(args, module: Module, taken: set[str]) -> dict[str, Any]:
    """The values of the attack parameters the chosen attack takes ("default": its own)."""
    options = {}
    for p in module.params:
        if p.option is None or p.option not in taken:
            continue
        value = getattr(args, p.name)
        if p.tag == "boolean":
            value = True if value else None
        elif p.choices == TRISTATE:
            value = {"default": None, "on": True, "off": False}[value]
        elif value == "default" or (p.option == "block_size" and value == 0):
            value = None
        if value is not None:
            options[p.option] = value
    return options


def _outputs(args, names: Sequence[str]) -> dict[str, Path]:
    """The output paths given, checked: their folders exist and none is an input."""
    keys = ("input", "labels", "adversarial", "weights",
            *(f"{k}{c}" for k in ("channel", "adversarial") for c in EXTRA_CHANNELS))  # fmt: skip
    inputs = [Path(v) for k in keys if (v := getattr(args, k, None)) and k not in names]
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if not value:
            continue
        path = Path(value)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: folder does not exist (for {name})")
        if any(path.resolve() == i.resolve() for i in inputs):
            raise ValueError(f"{name} {path} is an input file")
        twin = next((n for n, p in out.items() if p.resolve() == path.resolve()), None)
        if twin is not None:
            raise ValueError(f"{twin} and {name} are the same file {path}: give each its own")
        out[name] = path
    if not out:
        raise ValueError(f"choose at least one output ({', '.join(names)})")
    return out


def _value(value) -> str:
    """A return parameter's text: numbers with 6 significant digits, None as nan."""
    if isinstance(value, str):
        return value
    return "nan" if value is None else f"{float(value):.6g}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
