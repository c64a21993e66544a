"""``vafa train``: VAFT adversarial training from the command line (:mod:`vafa.training`).

Under ``torchrun --nproc_per_node N -m vafa train …`` every process runs this command;
DistributedDataParallel is set up by the trainer and only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vafa.cli.common import (
    CLIError,
    add_common_arguments,
    add_model_arguments,
    model_source,
    roi_triple,
    same_path,
    with_roi,
)
from vafa.cli.options import add_attack_arguments, attack_options

__all__ = ["SHARED_FLAGS", "add_parser", "add_setting_arguments", "setting_help"]

_EPILOG = """\
examples:
  vafa train                                  # fine-tune the demo model on the bundled sample
  vafa train --datalist data.json --preset unetr-btcv --mode vafa-fr --q-max 20 \\
      --block-size 32 --epochs 100 --out-dir runs/vaft
  vafa train --datalist data.json --model model.safetensors --mode pgd --eps 4
  vafa train --resume --out-dir runs/vaft --epochs 200   # continue (and extend) a run
  torchrun --nproc_per_node 4 -m vafa train --datalist data.json --preset unetr-btcv
"""


def add_parser(subparsers) -> None:
    from vafa.io.models import list_presets
    from vafa.training.settings import QUICK_DEMO, setting

    p = subparsers.add_parser(
        "train",
        help="adversarial training (VAFT) of a segmentation model",
        description="Train a segmentation model with VAFA or voxel adversarial samples\n"
        "(VAFT, Hanif et al., MICCAI 2023) on a decathlon-style datalist, or on the\n"
        "bundled CT sample.",
        epilog=_EPILOG + _profile_note(QUICK_DEMO),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(
        p,
        json="print the result as JSON: iterations, epochs, best metric, the files written "
        "(also with --quiet)",
        overwrite="replace a run in --out-dir",
        seed=setting_help(setting("seed")),
    )
    p.add_argument("--attack", help=argparse.SUPPRESS)  # only to explain that --mode decides
    add_attack_arguments(  # the training attack follows --mode
        p,
        choose_attack=False,
        through=False,  # the training attack works on patches
        roi_help=setting_help(setting("patch"), "e.g. 96 or 96,96,96"),
        tile_batch_help=setting_help(setting("tile_batch")),
    )
    data = p.add_argument_group("data and model")
    data.add_argument(
        "--datalist",
        help="JSON with 'training'/'validation' lists of {image, label} (paths relative to it); "
        "default: the bundled CT sample for training and validation",
    )
    add_model_arguments(
        data,
        required=False,
        card_help="model card JSON or preset name: of --model, or alone to train that model "
        "from scratch",
    )
    data.add_argument("--preset", choices=list_presets(), help="train this preset from scratch")
    add_setting_arguments(p.add_argument_group("training"))
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", default="vafa-train", help="output folder (vafa-train/)")
    out.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    p.set_defaults(func=run)


#: Settings whose flags other argument groups add (the common ``--seed``, the attack group's
#: ``--roi`` and ``--tile-batch``), with their help from the schema.
SHARED_FLAGS = ("seed", "patch", "tile_batch")


def add_setting_arguments(group) -> None:
    """One flag per training setting of the schema (:data:`vafa.training.settings.SETTINGS`)
    that has flags, with its type, choices, default and help; a ``bool`` setting's flag sets
    the opposite of its default."""
    from vafa.training.settings import SETTINGS

    for s in SETTINGS:
        if not s.cli_flags or s.name in SHARED_FLAGS:
            continue
        if s.kind is bool:
            action = "store_false" if s.default else "store_true"
            group.add_argument(*s.cli_flags, dest=s.name, action=action, help=setting_help(s))
            continue
        kind = s.kind if s.kind in (int, float) else str
        group.add_argument(
            *s.cli_flags, dest=s.name, type=kind, choices=s.choices, default=s.default,
            help=setting_help(s),
        )  # fmt: skip


def setting_help(s, example: str = "") -> str:
    """``"<help> (<unit>; e.g. …; default <value>)"``; a flag that turns a setting off says so."""
    if s.kind is bool and s.default:
        return f"turn off: {s.text}".replace("%", "%%")
    notes = [n for n in (s.unit, example, f"default {s.shown(s.default)}") if n]
    if s.off is not None and s.default is not None:
        notes.append(f"0: {s.off}")
    return f"{s.help} ({'; '.join(notes)})".replace("%", "%%")


def _profile_note(profile) -> str:
    """The epilog's line on the interactive faces' profile, as flags of this command."""
    from vafa.training.settings import setting

    flags = [
        f"{setting(name).cli_flags[0]} {setting(name).shown(value)}"
        for name, value in profile.settings.items()
    ]
    flags += [f"--{name.replace('_', '-')} {value}" for name, value in profile.attack.items()]
    return (
        f"\nThe napari widget and the Slicer module start from the {profile.title!r} profile, "
        f"here:\n  vafa train {' '.join(flags)}\n"
    )


def run(args) -> int:
    from vafa.training import MODE_ATTACKS, TrainingConfig, train

    attack = MODE_ATTACKS[args.mode]
    if args.attack is not None and args.attack != attack:
        raise CLIError(
            f"--attack {args.attack} does not apply here: the training attack follows --mode "
            f"({args.mode} uses {attack or 'no attack'})"
        )
    if args.resume and args.overwrite:
        raise CLIError("give --resume or --overwrite, not both")
    options = attack_options(args)
    out_dir = Path(args.out_dir)
    model, card = _train_model(args, out_dir)
    if args.roi:
        card = with_roi(card, roi_triple(args.roi))
    train_data, val_data, note = _train_data(args)
    config = TrainingConfig.from_settings(_config_values(args), attack_options=options)
    quiet = args.quiet or int(os.environ.get("RANK", "0") or 0) != 0
    if note and not quiet:
        print(f"note: {note}", file=sys.stderr)
    bar = None if quiet else _TrainProgress(args.mode)
    try:
        result = train(
            model,
            card,
            train_data,
            val_data,
            out_dir=out_dir,
            config=config,
            resume=args.resume,
            overwrite=args.overwrite,
            device=args.device,
            callback=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json and int(os.environ.get("RANK", "0") or 0) == 0:
        print(json.dumps(_result_doc(result), indent=2))
    elif not quiet:
        _summary(result, attack)
    return 0


def _config_values(args) -> dict[str, Any]:
    """The training settings given (or defaulted) on the command line, by setting name (the
    patch size, ``--roi``, goes to the model card)."""
    from vafa.training.settings import SETTINGS

    return {s.name: getattr(args, s.name) for s in SETTINGS if s.cli_flags and s.home != "card"}


def _train_model(args, out_dir: Path):
    """``(model, card)`` from --model / --preset / --card (or the defaults, see --help)."""
    import torch

    from vafa.io.checkpoints import card_path_for, load_card, load_card_or_preset
    from vafa.io.models import build_model
    from vafa.training.files import LATEST, TRAINING_FILES

    if args.model and args.preset:
        raise CLIError("give --model (weights to fine-tune) or --preset (from scratch), not both")
    if args.preset and args.card:
        raise CLIError("give --preset or --card for a model from scratch, not both")
    if args.model:
        source = model_source(args)
        if source.bundled is not None and args.card:
            raise CLIError(f"--card does not go with --model {args.model} (it has its own card)")
        try:
            path = source.path
        except FileNotFoundError as err:
            raise CLIError(f"--model {err}") from None
        if not args.resume and any(same_path(path, out_dir / n) for n in TRAINING_FILES):
            raise CLIError(f"--model {path} lies in --out-dir and would be overwritten")
        return source.load(device="cpu")
    if args.preset or args.card:
        card = load_card_or_preset(args.card or args.preset)
    elif args.resume:
        card = load_card(card_path_for(out_dir / LATEST))
    elif args.datalist is None:
        from vafa.io.data import load_demo_model

        return load_demo_model(device="cpu")
    else:
        raise CLIError("give the model: --model WEIGHTS|demo, --preset NAME or --card CARD.json")
    torch.manual_seed(args.seed)
    return build_model(card), card


def _train_data(args) -> tuple[Any, Any, str | None]:
    if args.datalist:
        return Path(args.datalist), None, None
    from vafa.io.data import load_sample

    image, labels = load_sample()
    note = (
        "no --datalist: training on the bundled CT sample and validating on the same case "
        "(a demo of the workflow, not a measure of generalisation)"
    )
    return [(image, labels)], [(image, labels)], note


class _TrainProgress:
    """A tqdm bar over the training iterations, fed by :class:`vafa.training.TrainingEvent` s."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None  # created at the first event: errors before training stay one line
        self.postfix: dict[str, str] = {}

    def __call__(self, event) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=f"train {self.mode}", unit="it", leave=False, file=sys.stderr)
            self.bar.update(event.iteration)
        if self.bar.total != event.total:
            self.bar.total = event.total
        if event.stage == "train":
            self.bar.update(event.iteration - self.bar.n)
            self.postfix = {
                "epoch": f"{event.epoch}/{event.epochs}",
                "loss": f"{event.losses.get('loss', float('nan')):.4f}",
                "lr": f"{event.lr:.2e}",
            }
            self.bar.set_postfix(self.postfix, refresh=True)
        elif event.validation is not None:
            from vafa.training import validation_summary

            line = f"epoch {event.epoch}: {validation_summary(event.validation)}"
            self.bar.write(line, file=sys.stderr)  # with the bar: stdout keeps the result
        elif event.stage == "validation":
            where = f"validating {event.case}/{event.cases}"
            if event.attack_step is not None:
                where += f" attack {event.attack_step}/{event.attack_steps}"
            self.bar.set_postfix({**self.postfix, "now": where}, refresh=False)
        elif event.stage == "attack":
            step = f"attack {event.attack_step}/{event.attack_steps}"
            self.bar.set_postfix({**self.postfix, "now": step}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _result_doc(result) -> dict[str, Any]:
    """What ``--json`` prints: the :class:`vafa.training.TrainingResult` without the model."""
    from vafa.io.files import json_ready

    keys = ("out_dir", "latest", "best", "log", "plot", "iterations", "epochs_done")
    keys += ("cancelled", "selection", "best_metric", "validation")
    return json_ready({key: getattr(result, key) for key in keys})


def _summary(result, attack: str | None) -> None:
    from vafa.training import validation_summary

    state = "cancelled after" if result.cancelled else "done:"
    print(f"{state} {result.iterations} iterations, {result.epochs_done} epoch(s)")
    if result.validation is not None:
        print(validation_summary(result.validation) + (f" ({attack})" if attack else ""))
    if result.best is not None:
        print(f"best {result.selection} = {result.best_metric:.4f} → {result.best}")
    names = [p.name for p in (result.latest, result.best, result.log, result.plot) if p]
    print(f"wrote {', '.join(names)} (+ cards, training_state.pt) to {result.out_dir}/")
