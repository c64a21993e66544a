"""``vafa info``: a checkpoint's model card, parameter count, its input channels (the order in
which IMAGE files are given), how its outputs are read (softmax classes or sigmoid regions) and
the inference it is evaluated with (the model's own: window, weighting, overlap, mirroring
axes, folds)."""

from __future__ import annotations

import json

from vafa.cli.common import (
    TRUST_HELP,
    add_common_arguments,
    add_fold_arguments,
    add_inference_arguments,
    load_model,
)

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a model card and parameter count",
        description="Print the model card of a checkpoint and its parameter count.",
    )
    add_common_arguments(
        p,
        ignored={
            "device": "the card is read on the CPU",
            "seed": "nothing is drawn at random",
            "quiet": "prints only the card, no bar or table",
            "overwrite": "writes no files",
        },
        json='print {"card": …, "parameters": N} as JSON',
    )
    p.add_argument(
        "weights",
        help="a .safetensors/.pt checkpoint, 'demo' for the bundled model, or a model folder "
        "(a MONAI bundle or an nnU-Net v2 result folder)",
    )
    p.add_argument("--card", help="model card JSON (default: beside the weights)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_fold_arguments(p)
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from vafa.io.models import count_parameters

    args.model, args.device = args.weights, "cpu"
    model, card = load_model(args)
    folds = card.provenance.get("folds")
    if args.json:
        doc = {"card": card.to_dict(), "parameters": count_parameters(model),
               "inference": card.inference.summary()}  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 0
    print(json.dumps(card.to_dict(), indent=2))
    print(f"parameters: {count_parameters(model):,}")
    print(f"channels: {_channels(card)}")
    print(f"outputs: {_outputs(card)}")
    print(f"inference: {card.inference.summary()}")
    if folds:
        print(f"folds: {', '.join(map(str, folds))} (the mean of their logits)")
    return 0


def _channels(card) -> str:
    """``4 (T1c, T1, T2, FLAIR): one file each, in this order, or one 4D file``."""
    names = ", ".join(card.channel_names or [])
    if card.in_channels == 1:
        return f"1 ({names})"
    return f"{card.in_channels} ({names}): one file each, in this order, or one 4D file"


def _outputs(card) -> str:
    """``softmax over 3 classes (…)`` or ``sigmoid regions TC = labels 1, 4; … (threshold 0.5)``."""
    heads = card.heads()
    if not heads.sigmoid:
        return f"softmax over {card.out_channels} classes ({', '.join(card.class_names)})"
    regions = "; ".join(
        f"{name} = label{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}"
        for name, v in heads.region_dict().items()
    )
    return f"sigmoid regions {regions} (threshold {heads.threshold:g})"
