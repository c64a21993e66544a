"""What every ``vafa`` command shares: the user-error type, the common and model arguments,
and small parsers. Errors in what the user gave print one line and exit with status 2
(:func:`vafa.cli.main`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = [
    "COMMON_FLAGS",
    "CLIError",
    "CLIParser",
    "add_amp_argument",
    "add_common_arguments",
    "add_fold_arguments",
    "add_inference_arguments",
    "add_model_arguments",
    "datalist_cases",
    "model_source",
    "print_metrics",
    "refuse_existing",
    "roi_triple",
    "with_roi",
]

TRUST_HELP = (
    "allow pickled checkpoints, and let MONAI evaluate a bundle's Python expressions (can "
    "execute code: only for trusted files)"
)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


#: The flags every command takes (:func:`add_common_arguments`): dest → (flags, help).
COMMON_FLAGS = {
    "device": (("--device",), "auto (cuda → mps → cpu), cpu, cuda[:N], mps"),
    "seed": (("--seed",), "random seed (default 0)"),
    "quiet": (("--quiet", "-q"), "no progress bar or table"),
    "json": (("--json",), "print the result as JSON on stdout (also with --quiet)"),
    "overwrite": (("--overwrite",), "replace existing outputs"),
}


class CLIParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), like every
    other user error of ``vafa``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_arguments(parser, *, ignored: dict[str, str] | None = None, **helps: str) -> None:
    """The common flags of every command: ``--device``, ``--seed``, ``--quiet``/``-q``,
    ``--json`` and ``--overwrite``. ``ignored`` maps the dest of those a command does not use
    to why (its help then says "ignored: why"); ``helps`` replace the default help texts."""
    ignored = ignored or {}
    unknown = (set(ignored) | set(helps)) - set(COMMON_FLAGS)
    if unknown:
        raise ValueError(f"not common flags: {sorted(unknown)}")
    for dest, (flags, text) in COMMON_FLAGS.items():
        text = f"ignored: {ignored[dest]}" if dest in ignored else helps.get(dest, text)
        if dest == "device":
            parser.add_argument(*flags, default="auto", help=text)
        elif dest == "seed":
            parser.add_argument(*flags, type=int, default=0, help=text)
        else:
            parser.add_argument(*flags, action="store_true", help=text)


def add_model_arguments(parser, *, required: bool = True, card_help: str | None = None) -> None:
    """``--model``, ``--card``, ``--trust-checkpoint``, ``--fold`` and ``--checkpoint`` (read by
    :func:`model_source`; help from :data:`vafa.io.handle.SOURCE_HELP`)."""
    from vafa.io.handle import SOURCE_HELP

    parser.add_argument("--model", required=required, help=SOURCE_HELP["model"])
    parser.add_argument("--card", help=card_help or SOURCE_HELP["card"])
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_fold_arguments(parser)


def add_fold_arguments(parser) -> None:
    """``--fold`` and ``--checkpoint`` of an nnU-Net result folder."""
    from vafa.io.handle import SOURCE_HELP
    from vafa.io.nnunet import CHECKPOINTS

    parser.add_argument("--fold", help=SOURCE_HELP["fold"])
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINTS), help=SOURCE_HELP["checkpoint"])


def add_inference_arguments(parser) -> None:
    """``--mirroring`` and ``--weighting``: change the model's own inference (``card.inference``)
    for speed; the change is recorded in the card and every result file (``inference.changed``)."""
    parser.add_argument(
        "--mirroring",
        choices=("model", "off", "on"),
        default="model",
        help="test-time mirroring of the predictions: model (default: as the model's framework "
        "does, e.g. nnU-Net over the axes its trainer allows), off (faster: 1 pass per window "
        "instead of up to 8), on (all axes the model allows; refused where its trainer allows "
        "none)",
    )
    parser.add_argument(
        "--weighting",
        choices=("model", "constant", "gaussian"),
        default="model",
        help="how overlapping windows are blended: model (default: the model's own), constant "
        "or gaussian",
    )


def inference_changes(args, card):
    """``card`` with the ``--mirroring``/``--weighting`` changes (none: ``card`` itself).

    Raises:
        ValueError: mirroring asked for a model whose trainer allows none (one line).
    """
    import dataclasses

    changes = {}
    mirroring, weighting = getattr(args, "mirroring", "model"), getattr(args, "weighting", "model")
    if mirroring == "off":
        changes["mirror_axes"] = ()
    elif mirroring == "on":
        allowed = card.inference.allowed_mirror_axes
        changes["mirror_axes"] = (0, 1, 2) if allowed is None or not allowed else allowed
    if weighting != "model":
        changes["mode"] = weighting
    if not changes:
        return card
    try:
        inference = card.inference.changed_by_user(**changes)
    except ValueError as err:
        raise CLIError(f"--mirroring {mirroring}: {err}") from None
    return dataclasses.replace(card, inference=inference)


def add_amp_argument(parser) -> None:
    """``--amp {off,bf16,fp16}``: mixed precision of the model passes (:mod:`vafa.ops.amp`)."""
    from vafa.ops.amp import AMP_MODES

    parser.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="off",
        help="mixed precision of the model passes (autocast; DCT, quantization and SSIM stay "
        "float32): off (default), bf16, fp16",
    )


def model_source(args, weights: str | None = None):
    """The :class:`~vafa.io.handle.ModelSource` of ``--model`` (or ``weights``) and its card."""
    from vafa.io.handle import ModelSource

    return ModelSource(
        weights if weights is not None else args.model,
        card=getattr(args, "card", None),
        trust=getattr(args, "trust_checkpoint", False),
        fold=getattr(args, "fold", None),
        checkpoint=getattr(args, "checkpoint", None),
    )


def load_model(args):
    """``(model, card)`` of ``--model``/``--card`` on ``--device``."""
    source = model_source(args)
    try:
        source.path  # noqa: B018 - resolves and checks the file before anything is built
    except FileNotFoundError as err:
        raise CLIError(f"--model {err}") from None
    model, card = source.load(device=args.device)
    return model, inference_changes(args, card)


def print_metrics(args, metrics, title: str, worst_case: dict | None = None) -> None:
    """The metrics (:class:`vafa.run.outcome_metrics.OutcomeMetrics`) as a table, or as JSON
    with ``--json`` (also with ``--quiet``, which silences only bars and tables); with the
    worst case's account (``outcome.settings["worst_case"]``) when given."""
    from vafa.io.files import json_ready
    from vafa.report.tables import format_metrics_table
    from vafa.report.worst_case import format_worst_case

    if getattr(args, "json", False):
        doc = (
            metrics.to_dict()
            if worst_case is None
            else {**metrics.to_dict(), "worst_case": worst_case}
        )
        print(json.dumps(json_ready(doc), indent=2))
    elif not args.quiet:
        print(format_metrics_table(metrics, title=title))
        if worst_case is not None:
            print(format_worst_case(worst_case))


def refuse_existing(paths, overwrite: bool) -> None:
    """Unless ``overwrite``: a :class:`CLIError` naming the first of ``paths`` that exists (the
    one rule of every command that writes files: nothing is replaced without ``--overwrite``)."""
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise CLIError(f"{path} exists (pass --overwrite to replace it)")


def datalist_cases(path: Path, split: str) -> list[tuple[Any, Path | None]]:
    """``(image, label or None)`` of a decathlon-style datalist's ``split``
    (:func:`vafa.io.datalist.read_split`: an image is a Path, or a tuple of channel files)."""
    from vafa.io.datalist import read_split

    try:
        return read_split(path, split)
    except ValueError as err:
        raise CLIError(f"--{err}") from None


def roi_triple(text: str, flag: str = "--roi") -> tuple[int, int, int]:
    """``"96"`` → ``(96, 96, 96)``; ``"96,96,64"`` → ``(96, 96, 64)``."""
    try:
        values = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{flag} must be integers like 96 or 96,96,96, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CLIError(f"{flag} must be positive integers, got {text!r}")
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise CLIError(f"{flag} needs 1 or 3 integers, got {text!r}")
    return tuple(values)


def with_roi(card, roi):
    """``card`` with another tile/patch size."""
    return replace(card, roi_size=tuple(roi))


def same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def add_band_arguments(parser, what: str) -> None:
    """``--bands`` (the perturbation band analysis of ``what``) and ``--band-block N``."""
    parser.add_argument(
        "--bands",
        action="store_true",
        help=f"perturbation band analysis of {what}: energy of the perturbation per DCT band "
        "(low/middle/high) and fg Dice with only that band applied",
    )
    parser.add_argument(
        "--band-block", type=int, default=32, metavar="N", help="DCT block side of --bands (32)"
    )
