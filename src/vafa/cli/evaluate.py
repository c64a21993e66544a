"""``vafa evaluate``: segmentation metrics of a model on a volume (and an adversarial one)."""

from __future__ import annotations

import json
from pathlib import Path

from vafa.cli.common import (
    CLIError,
    add_amp_argument,
    add_band_arguments,
    add_common_arguments,
    add_inference_arguments,
    add_model_arguments,
    load_model,
)

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="segmentation metrics of a model",
        description="Dice/HD95 of a model on a volume, and on an adversarial version of it.",
    )
    add_common_arguments(
        p,
        ignored={"seed": "evaluation draws nothing at random", "overwrite": "writes no files"},
        quiet="no table (--json and --format csv still print)",
        json="print the metrics as JSON (the same as --format json; also with --quiet)",
    )
    p.add_argument(
        "image", nargs="+", help="a .nii/.nii.gz file, or one file per channel in the model's order"
    )
    add_model_arguments(p)
    add_inference_arguments(p)
    p.add_argument("--labels", help="ground truth (else the clean prediction is the reference)")
    p.add_argument(
        "--adversarial", nargs="+",
        help="adversarial volume(s) on IMAGE's grid; several (e.g. one per attack): the worst "
        "case, the one with the lowest fg Dice, is reported, with every volume's Dice; with one "
        "file per channel, A names A_0000.nii.gz, A_0001.nii.gz … (as vafa attack --out writes)",
    )  # fmt: skip
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        help="table (default), json (--json) or csv",
    )
    add_band_arguments(p, "--adversarial")
    add_amp_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from vafa.io.channels import load_image
    from vafa.io.datalist import image_paths
    from vafa.io.files import json_ready
    from vafa.io.model_space import load_model_labels
    from vafa.report.tables import format_metrics_table, metrics_csv

    if args.json and args.format not in (None, "json"):
        raise CLIError(f"--json and --format {args.format}: give one of them")
    fmt = "json" if args.json else args.format or "table"
    if args.bands and args.adversarial is None:
        raise CLIError("--bands needs --adversarial (the perturbation is adversarial − IMAGE)")
    if args.band_block < 1:
        raise CLIError(f"--band-block must be a positive int, got {args.band_block}")
    model, card = load_model(args)
    image = load_image(image_paths(args.image), card.in_channels, card.channel_names)
    labels = None if args.labels is None else load_model_labels(args.labels, image, card)
    metrics, adversarial, worst = _worst_of(args, model, card, image, labels)
    bands = _bands(args, model, card, image, adversarial, labels) if args.bands else None
    if fmt == "json":
        doc = metrics.to_dict()
        if bands is not None:
            doc["bands"] = bands.to_dict()
        if worst is not None:
            doc["worst_case"] = worst
        print(json.dumps(json_ready(doc), indent=2))
    elif fmt == "csv":
        print(metrics_csv(metrics), end="")
        if bands is not None:
            from vafa.report.bands import band_csv

            print(band_csv(bands), end="")
    elif not args.quiet:
        print(format_metrics_table(metrics, title=" + ".join(args.image)))
        if worst is not None:
            from vafa.report.worst_case import format_worst_case

            print(format_worst_case(worst))
        if bands is not None:
            from vafa.report.bands import format_band_table

            print("\n" + format_band_table(bands))
    return 0


def _worst_of(args, model, card, image, labels):
    """``(metrics, adversarial volume, worst-case account)`` of ``--adversarial``: with several
    volumes the one with the lowest fg Dice (the account lists every volume's Dice, in the
    form of :meth:`vafa.run.worst_case.WorstCase.to_dict`; None for one volume or none)."""
    from vafa.run.pipeline import evaluate_each

    paths = args.adversarial or [None]
    volumes = [None if path is None else _adversarial(path, image, card) for path in paths]
    each = evaluate_each(model, card, image, labels, volumes, amp=args.amp)
    scored = list(zip(each, volumes, paths, strict=True))
    if len(scored) == 1:
        return scored[0][0], scored[0][1], None

    def fg(metrics) -> float:
        value = metrics.dice_fg.adversarial
        return float("inf") if value is None or value != value else value

    metrics, volume, path = min(scored, key=lambda item: fg(item[0]))
    members = [{"attack": Path(p).name, "adversarial": str(p), "ran": True,
                "dice_fg": m.dice_fg.adversarial} for m, _, p in scored]  # fmt: skip
    worst = {"winner": Path(path).name, "floor": 0.0, "stopped_early": False,
             "clean_dice_fg": metrics.dice_fg.clean, "members": members}  # fmt: skip
    return metrics, volume, worst


def _adversarial(path: str, image, card):
    """An adversarial image like ``image``: one file (3D or 4D), or for an image given as one
    file per channel, the files :func:`vafa.io.channels.channel_paths` names after ``path``."""
    from vafa.io.channels import Channels, channel_paths, load_image

    paths = Path(path)
    if isinstance(image, Channels) and image.layout == "files":
        paths = channel_paths(path, len(image))
    return load_image(paths, card.in_channels, card.channel_names)


def _bands(args, model, card, image, adversarial, labels):
    """The band analysis of ``--bands`` (:func:`vafa.run.band_analysis.analyse_volumes`)."""
    from vafa.run.band_analysis import analyse_volumes

    return analyse_volumes(model, card, image, adversarial, labels, block_size=args.band_block)
