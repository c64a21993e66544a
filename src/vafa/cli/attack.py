"""``vafa attack``: attack one NIfTI volume, a folder of them, or a datalist's cases."""

from __future__ import annotations

import sys
from pathlib import Path

from vafa.cli.common import (
    CLIError,
    add_model_arguments,
    datalist_cases,
    load_model,
    one_line,
    print_metrics,
    roi_triple,
    with_roi,
)
from vafa.cli.options import add_attack_arguments, attack_options

__all__ = ["add_parser", "run_attack_command"]


def add_parser(subparsers, common) -> None:
    p = subparsers.add_parser(
        "attack",
        parents=[common],
        help="attack NIfTI volumes",
        description="Attack one NIfTI volume, a folder of them, or the cases "
        "of a decathlon-style datalist.",
    )
    add_attack_arguments(p)
    p.add_argument("image", nargs="?", help="a .nii/.nii.gz file or a folder of them")
    add_model_arguments(p)
    p.add_argument("--labels", help="ground-truth labels for IMAGE (else pseudo-labels)")
    p.add_argument("--out", help="output .nii.gz for a single IMAGE (a .json is written beside it)")
    p.add_argument("--out-dir", help="output folder for a folder or a datalist")
    p.add_argument("--datalist", help="decathlon-style JSON with cases {image, label}")
    p.add_argument("--split", default="validation", help="datalist split (default validation)")
    p.add_argument(
        "--resample-back",
        action="store_true",
        help="write on the input grid when the card resamples (default: model grid)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from vafa.io.volume import load_labels, load_volume

    model, card = load_model(args)
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
            title = f"{index}/{len(cases)} {image_path.name}"
            outcome = run_attack_command(args, model, card, image, labels, title=title)
            _write_adversarial(outcome, target)
            print_metrics(args, outcome.metrics, title=str(image_path))
            if outcome.model_input.resampled and not args.resample_back and not args.quiet:
                spacing = "×".join(f"{s:g}" for s in outcome.model_input.grid.spacing)
                print(
                    f"note: {target} is on the model grid ({spacing} mm); "
                    "use --resample-back for the input grid",
                    file=sys.stderr,
                )
        except KeyboardInterrupt:
            raise
        except Exception as err:  # a bad case must not stop the batch
            if single:
                raise
            failures.append((image_path, one_line(err)))
            print(f"vafa attack: {image_path}: {one_line(err)}", file=sys.stderr)
    if failures:
        print(f"\n{len(failures)} of {len(cases)} case(s) failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def run_attack_command(args, model, card, image, labels, title: str):
    """:func:`vafa.run.pipeline.run_attack` with the attack arguments of ``args`` and a
    progress bar (unless ``--quiet``)."""
    from vafa.run.pipeline import run_attack
    from vafa.run.progress import StepBar

    options = attack_options(args)
    if args.roi:
        card = with_roi(card, roi_triple(args.roi))
    bar = None if args.quiet else StepBar(title)
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


def _cases(args) -> list[tuple[Path, Path | None]]:
    if args.datalist:
        return datalist_cases(Path(args.datalist), args.split)
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


def _write_adversarial(outcome, target: Path) -> None:
    """The adversarial volume and its JSON (metrics, settings, history), both or neither."""
    from vafa.run.pipeline import write_volumes

    target.parent.mkdir(parents=True, exist_ok=True)  # made only once there is a result
    sidecar = target.with_name(target.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    # _check_target has refused existing files and inputs
    write_volumes(outcome, {"adversarial": target, "metrics": sidecar}, overwrite=True)
