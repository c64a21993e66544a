"""``vafa evaluate``: segmentation metrics of a model on a volume (and an adversarial one)."""

from __future__ import annotations

import json

from vafa.cli.common import add_model_arguments, load_model

__all__ = ["add_parser"]


def add_parser(subparsers, common) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[common],
        help="segmentation metrics of a model",
        description="Dice/HD95 of a model on a volume, and on an adversarial version of it.",
    )
    p.add_argument("image")
    add_model_arguments(p)
    p.add_argument("--labels", help="ground truth (else the clean prediction is the reference)")
    p.add_argument("--adversarial", help="adversarial volume on IMAGE's grid")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=run)


def run(args) -> int:
    from vafa.io.volume import load_labels, load_volume
    from vafa.report.tables import format_metrics_table, metrics_csv
    from vafa.run.pipeline import evaluate, json_ready

    model, card = load_model(args)
    image = load_volume(args.image)
    labels = None if args.labels is None else load_labels(args.labels, image, card.out_channels)
    adversarial = None if args.adversarial is None else load_volume(args.adversarial)
    metrics = evaluate(model, card, image, labels, adversarial)
    if args.format == "json":
        print(json.dumps(json_ready(metrics), indent=2))
    elif args.format == "csv":
        print(metrics_csv(metrics), end="")
    else:
        print(format_metrics_table(metrics, title=args.image))
    return 0
