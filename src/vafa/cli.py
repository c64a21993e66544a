"""The ``vafa`` command line: ``demo``, ``attack``, ``evaluate``, ``info`` (and more).

Errors in what the user gave (paths, files, cards, options) print one line on stderr and exit
with status 2, never a traceback; Ctrl-C exits with 130 and leaves no partial file (every
write is atomic).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

ATTACK_CHOICES = ("vafa", "vafa2d", "pgd", "fgsm", "bim", "gn")
# attack option → (flags, type, help); None defaults mean "the attack's own default"
ATTACK_OPTIONS = {
    "steps": (("--steps",), int, "attack steps (default 20)"),
    "q_min": (("--q-min",), float, "VAFA: lower bound of the quantization table (default 5)"),
    "q_max": (("--q-max",), float, "VAFA: upper bound of the quantization table (default 20)"),
    "q_init": (("--q-init",), str, "VAFA: table start: max | min | random (default max)"),
    "q_step": (("--q-step",), float, "VAFA: table update per step (default 1)"),
    "ssim_weight": (("--ssim-weight",), float, "VAFA: weight of the SSIM term (default 1)"),
    "normalize": (
        ("--normalize",),
        str,
        "VAFA: clip (default) | slice (published per-slice min-max)",
    ),
    "keep": (
        ("--keep",),
        str,
        "best (default: the step with the highest objective) | last (the last step's volume)",
    ),
    "eps": (("--eps",), float, "PGD/FGSM/BIM: L-inf budget in [0,255] units (default 4)"),
    "alpha": (("--alpha",), float, "PGD/BIM: step in [0,1] units (default 0.01)"),
    "std": (("--std",), float, "GN: noise std in [0,255] units (default 4)"),
}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vafa`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vafa.devices import keep_freed_memory

    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vafa: interrupted (nothing partial was written)", file=sys.stderr)
        return 130
    except (
        CLIError,
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        PermissionError,
    ) as err:
        print(f"vafa {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vafa",
        description="Volumetric adversarial frequency attacks (VAFA) and training (VAFT) for 3D "
        "medical segmentation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--device", default="auto", help="auto (cuda → mps → cpu), cpu, cuda[:N], mps"
    )
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")
    attack_opts = _attack_parser()

    demo = sub.add_parser(
        "demo",
        parents=[common, attack_opts],
        help="attack the bundled CT sample with the bundled demo model",
        description="Attack the bundled abdominal CT sample with the bundled demo "
        "model; print the damage and write volumes, metrics and a figure.",
    )
    demo.add_argument("--out", default="vafa-demo", help="output folder (default vafa-demo/)")
    demo.add_argument("--json", action="store_true", help="print the metrics as JSON")
    demo.set_defaults(func=_cmd_demo)

    attack = sub.add_parser(
        "attack",
        parents=[common, attack_opts],
        help="attack NIfTI volumes",
        description="Attack one NIfTI volume, a folder of them, or the cases "
        "of a decathlon-style datalist.",
    )
    attack.add_argument("image", nargs="?", help="a .nii/.nii.gz file or a folder of them")
    _model_args(attack)
    attack.add_argument("--labels", help="ground-truth labels for IMAGE (else pseudo-labels)")
    attack.add_argument(
        "--out", help="output .nii.gz for a single IMAGE (a .json is written beside it)"
    )
    attack.add_argument("--out-dir", help="output folder for a folder or a datalist")
    attack.add_argument("--datalist", help="decathlon-style JSON with cases {image, label}")
    attack.add_argument("--split", default="validation", help="datalist split (default validation)")
    attack.add_argument(
        "--resample-back",
        action="store_true",
        help="write on the input grid when the card resamples (default: model grid)",
    )
    attack.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    attack.add_argument("--json", action="store_true", help="print the metrics as JSON")
    attack.set_defaults(func=_cmd_attack)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        help="segmentation metrics of a model",
        description="Dice/HD95 of a model on a volume, and on an adversarial version of it.",
    )
    evaluate.add_argument("image")
    _model_args(evaluate)
    evaluate.add_argument(
        "--labels", help="ground truth (else the clean prediction is the reference)"
    )
    evaluate.add_argument("--adversarial", help="adversarial volume on IMAGE's grid")
    evaluate.add_argument("--format", choices=("table", "json", "csv"), default="table")
    evaluate.set_defaults(func=_cmd_evaluate)

    info = sub.add_parser(
        "info",
        help="show a model card and parameter count",
        description="Print the model card of a checkpoint and its parameter count.",
    )
    info.add_argument(
        "weights", help="a .safetensors/.pt checkpoint, or 'demo' for the bundled model"
    )
    info.add_argument("--card", help="model card JSON (default: beside the weights)")
    info.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled checkpoints (can execute code: only for trusted files)",
    )
    info.set_defaults(func=_cmd_info)

    gui = sub.add_parser(
        "gui",
        help="open napari with the sample and the VAFA widget",
        description="Open napari with the bundled sample and the VAFA attack widget.",
    )
    gui.set_defaults(func=_cmd_gui)
    from vafa.report_cli import add_report_parser
    from vafa.train_cli import add_train_parser

    add_train_parser(sub, [common])
    add_report_parser(sub, [common])
    return parser


def _attack_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("attack")
    group.add_argument(
        "--attack", choices=ATTACK_CHOICES, default="vafa", help="attack (default vafa)"
    )
    group.add_argument("--block-size", help="VAFA block size: 32 or 32,32,32 (8,8 for vafa2d)")
    group.add_argument(
        "--ssim",
        dest="use_ssim_loss",
        action="store_true",
        default=None,
        help="VAFA: use the SSIM term (default for vafa)",
    )
    group.add_argument(
        "--no-ssim", dest="use_ssim_loss", action="store_false", help="VAFA: drop the SSIM term"
    )
    group.add_argument(
        "--paper",
        action="store_true",
        default=None,
        help="VAFA as the published code: normalize=slice, the last step's volume (keep=last), "
        "q from q_max in signed unit steps within [q_min, q_max]",
    )
    group.add_argument(
        "--hard-round",
        action="store_true",
        default=None,
        help="VAFA: return the kept table hard-rounded (a real quantization) instead of the "
        "soft-rounded iterate",
    )
    for dest, (flags, kind, text) in ATTACK_OPTIONS.items():
        group.add_argument(*flags, dest=dest, type=kind, default=None, help=text)
    group.add_argument("--roi", help="tile size, e.g. 96 or 96,96,96 (default: the card's)")
    group.add_argument(
        "--tile-batch", type=int, default=1, help="tiles attacked together (default 1)"
    )
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="weights (.safetensors, .pt), or a bundled model: 'demo', 'robust-demo'",
    )
    parser.add_argument(
        "--card",
        help="model card JSON, or a preset name such as unetr-btcv "
        "(default: <weights>.json beside the weights)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled checkpoints (can execute code: only for trusted files)",
    )


# ----------------------------------------------------------------------------- commands
def _cmd_demo(args) -> int:
    from vafa.data import load_demo_model, load_sample
    from vafa.figures import attack_figure
    from vafa.pipeline import write_outcome
    from vafa.volume import save_volume

    image, labels = load_sample()
    model, card = load_demo_model(device=args.device)
    outcome = _run(args, model, card, image, labels, title="demo")
    out = Path(args.out)
    paths = write_outcome(outcome, out, overwrite=True)
    clean = outcome.model_input.grid
    paths["clean"] = save_volume(
        clean, out / "clean.nii.gz", overwrite=True, protect=[image.source]
    )
    mapping = outcome.model_input.mapping
    paths["figure"] = attack_figure(
        outcome.model_input.tensor[0, 0].numpy(),
        mapping.forward(outcome.adversarial.array),
        outcome.clean_prediction.array,
        outcome.adversarial_prediction.array,
        outcome.metrics,
        out / "figure.png",
        block_size=_figure_block(outcome.settings),
    )
    _report(
        args,
        outcome.metrics,
        title="Bundled CT sample (labels: TotalSegmentator output), demo model",
    )
    if not args.quiet and not args.json:
        print(f"\nwrote {', '.join(sorted(p.name for p in paths.values()))} to {out}/")
    return 0


def _cmd_attack(args) -> int:
    from vafa.volume import load_labels, load_volume

    model, card = _load_model(args)
    cases = _cases(args)
    single = args.datalist is None and Path(args.image).is_file()
    if single and not args.out:
        raise CLIError("--out OUT.nii.gz is required for a single image")
    if not single and not args.out_dir:
        raise CLIError("--out-dir DIR is required for a folder or a datalist")
    failures = []
    for index, (image_path, label_path) in enumerate(cases, 1):
        target = Path(args.out) if single else Path(args.out_dir) / _adv_name(image_path)
        try:
            _check_target(target, [image_path, label_path], args.overwrite)
            image = load_volume(image_path)
            labels = (
                None if label_path is None else load_labels(label_path, image, card.out_channels)
            )
            outcome = _run(
                args, model, card, image, labels, title=f"{index}/{len(cases)} {image_path.name}"
            )
            _write_adversarial(outcome, target, args.overwrite)
            _report(args, outcome.metrics, title=str(image_path))
            if outcome.model_input.resampled and not args.resample_back and not args.quiet:
                print(
                    f"note: {target} is on the model grid ({_spacing(outcome)} mm); "
                    "use --resample-back for the input grid",
                    file=sys.stderr,
                )
        except KeyboardInterrupt:
            raise
        except Exception as err:  # a bad case must not stop the batch
            if single:
                raise
            failures.append((image_path, _one_line(err)))
            print(f"vafa attack: {image_path}: {_one_line(err)}", file=sys.stderr)
    if failures:
        print(f"\n{len(failures)} of {len(cases)} case(s) failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def _cmd_evaluate(args) -> int:
    from vafa.pipeline import evaluate
    from vafa.tables import format_metrics_table, metrics_csv
    from vafa.volume import load_labels, load_volume

    model, card = _load_model(args)
    image = load_volume(args.image)
    labels = None if args.labels is None else load_labels(args.labels, image, card.out_channels)
    adversarial = None if args.adversarial is None else load_volume(args.adversarial)
    metrics = evaluate(model, card, image, labels, adversarial)
    if args.format == "json":
        print(json.dumps(_json_ready(metrics), indent=2))
    elif args.format == "csv":
        print(metrics_csv(metrics), end="")
    else:
        print(format_metrics_table(metrics, title=args.image))
    return 0


def _cmd_info(args) -> int:
    from vafa.models import count_parameters

    args.model, args.device = args.weights, "cpu"
    model, card = _load_model(args)
    print(json.dumps(card.to_dict(), indent=2))
    print(f"parameters: {count_parameters(model):,}")
    return 0


def _cmd_gui(args) -> int:  # pragma: no cover - opens a window
    try:
        # the library never imports the plugin at module level (it must stay Qt-free)
        gui_main = importlib.import_module("napari_vafa.__main__").main
    except ImportError as err:
        raise CLIError(
            f"the napari plugin is not installed ({err}); pip install 'napari-vafa[napari,qt]'"
        ) from None
    return gui_main()


# ----------------------------------------------------------------------------- helpers
def _run(args, model, card, image, labels, title: str):
    from vafa.pipeline import run_attack

    options = _attack_options(args)
    roi = _triple(args.roi, "--roi") if args.roi else None
    if roi is not None:
        card = _with_roi(card, roi)
    bar = None if args.quiet else _progress(title)
    try:
        return run_attack(
            model,
            card,
            image,
            labels,
            attack=args.attack,
            options=options,
            tile_batch=args.tile_batch,
            device=args.device,
            seed=args.seed,
            callback=bar,
            resample_back=getattr(args, "resample_back", False),
        )
    finally:
        if bar is not None:
            bar.close()


def _attack_options(args) -> dict[str, Any]:
    options = {key: getattr(args, key) for key in ATTACK_OPTIONS}
    options.update(use_ssim_loss=args.use_ssim_loss, paper=args.paper, hard_round=args.hard_round)
    if args.block_size:
        sizes = [int(v) for v in _split_ints(args.block_size, "--block-size")]
        options["block_size"] = (
            sizes[0] if len(sizes) == 1 and args.attack == "vafa" else tuple(sizes)
        )
        if len(sizes) == 1 and args.attack == "vafa2d":
            options["block_size"] = (sizes[0], sizes[0])
    return options


class _progress:
    """A tqdm bar fed by step events (one tick per step of every tile batch)."""

    def __init__(self, title: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=title, unit="step", leave=False, file=sys.stderr)

    def __call__(self, event) -> None:
        total = event.total * (event.tiles or 1)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(1)
        postfix = {"dice": f"{event.dice:.3f}"}
        if event.ssim is not None:
            postfix["ssim"] = f"{event.ssim:.3f}"
        if event.tiles and event.tiles > 1:
            postfix["tile"] = f"{event.tile}/{event.tiles}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _report(args, metrics, title: str) -> None:
    from vafa.tables import format_metrics_table

    if getattr(args, "json", False):
        print(json.dumps(_json_ready(metrics), indent=2))
    elif not args.quiet:
        print(format_metrics_table(metrics, title=title))


def _load_model(args):
    from vafa.checkpoints import load_model
    from vafa.data import BUNDLED_MODELS, bundled_model_path

    if args.model in BUNDLED_MODELS:
        return load_model(bundled_model_path(args.model), device=args.device)
    path = Path(args.model)
    if not path.exists():
        raise CLIError(f"--model {path}: no such file")
    return load_model(path, card=args.card, device=args.device, trust=args.trust_checkpoint)


def _cases(args) -> list[tuple[Path, Path | None]]:
    if args.datalist:
        return _datalist_cases(Path(args.datalist), args.split)
    if not args.image:
        raise CLIError("give IMAGE (a file or a folder) or --datalist FILE")
    image = Path(args.image)
    if image.is_dir():
        files = sorted(p for p in image.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        if not files:
            raise CLIError(f"{image}: no .nii/.nii.gz files in this folder")
        if args.labels:
            raise CLIError("--labels goes with a single IMAGE; use --datalist for labelled batches")
        return [(p, None) for p in files]
    if not image.exists():
        raise CLIError(f"{image}: no such file or folder")
    return [(image, Path(args.labels) if args.labels else None)]


def _datalist_cases(path: Path, split: str) -> list[tuple[Path, Path | None]]:
    from vafa.jsonfile import read_json

    doc = read_json(path, "--datalist")
    entries = doc.get(split) if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        keys = sorted(doc) if isinstance(doc, dict) else []
        raise CLIError(f"--datalist {path}: no list of cases under {split!r} (keys: {keys})")
    cases = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(image, str):
            raise CLIError(f"--datalist {path}: every case needs an 'image' path, got {entry!r}")
        cases.append((path.parent / image, path.parent / label if label else None))
    return cases


def _adv_name(image: Path) -> str:
    return image.name.removesuffix(".gz").removesuffix(".nii") + "_adv.nii.gz"


def _check_target(target: Path, inputs, overwrite: bool) -> None:
    if not target.name.endswith((".nii", ".nii.gz")):
        raise CLIError(f"--out {target}: must end in .nii.gz or .nii")
    for src in inputs:
        if src is not None and target.resolve() == Path(src).resolve():
            raise CLIError(f"refusing to overwrite the input {src}")
    if target.exists() and not overwrite:
        raise CLIError(f"{target} exists (pass --overwrite to replace it)")
    if target.parent.exists() and not target.parent.is_dir():
        raise CLIError(f"{target.parent}: not a folder")


def _write_adversarial(outcome, target: Path, overwrite: bool) -> None:
    """The adversarial volume and its JSON (metrics, settings, history), both or neither."""
    from vafa.volume import save_volume

    target.parent.mkdir(parents=True, exist_ok=True)  # made only once there is a result
    sidecar = target.with_name(target.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    tmp_json = sidecar.with_name(f".{sidecar.name}.partial")
    doc = {"metrics": outcome.metrics, "settings": outcome.settings, "history": outcome.history}
    tmp_json.write_text(json.dumps(_json_ready(doc), indent=2, allow_nan=False) + "\n")
    try:
        save_volume(outcome.adversarial, target, overwrite=overwrite, protect=outcome.inputs)
        os.replace(tmp_json, sidecar)
    finally:
        tmp_json.unlink(missing_ok=True)


def _figure_block(settings) -> Any:
    block = (settings.get("attack") or {}).get("block_size")
    return block if block and len(block) == 3 else 32


def _spacing(outcome) -> str:
    return "×".join(f"{s:g}" for s in outcome.model_input.grid.spacing)


def _with_roi(card, roi):
    from dataclasses import replace

    return replace(card, roi_size=tuple(roi))


def _split_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{flag} must be integers like 32 or 32,32,32, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CLIError(f"{flag} must be positive integers, got {text!r}")
    return values


def _triple(text: str, flag: str) -> tuple[int, int, int]:
    values = _split_ints(text, flag)
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise CLIError(f"{flag} needs 1 or 3 integers, got {text!r}")
    return tuple(values)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"{err.filename}: no such file"
    return " ".join(text.split())


def _json_ready(value):
    from vafa.pipeline import json_ready

    return json_ready(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
