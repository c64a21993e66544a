"""``vafa attack``: attack one NIfTI volume, a folder of them, or a datalist's cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vafa.cli.common import (
    CLIError,
    add_amp_argument,
    add_common_arguments,
    add_inference_arguments,
    add_model_arguments,
    datalist_cases,
    load_model,
    print_metrics,
    refuse_existing,
    roi_triple,
    with_roi,
)
from vafa.cli.options import add_attack_arguments, attack_options
from vafa.io.datalist import (
    ImagePaths,
    case_name,
    check_channels,
    describe,
    group_channel_files,
    image_files,
)
from vafa.ops.messages import one_line
from vafa.run.cases import CASES_CSV
from vafa.run.outcome_metrics import OutcomeMetrics

__all__ = ["add_parser", "run_attack_command"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attack",
        help="attack NIfTI volumes",
        description="Attack one NIfTI volume, a folder of them, or the cases "
        "of a decathlon-style datalist. A model with several input channels takes a 4D file "
        "(channels on the last axis) or one file per channel in the model's order.",
    )
    add_common_arguments(
        p,
        json="print the metrics as JSON (also with --quiet); a folder or a datalist: one JSON "
        "object per case and line (JSON Lines), each naming its case",
    )
    add_attack_arguments(p, worst_case=True)
    p.add_argument(
        "image",
        nargs="*",
        help="a .nii/.nii.gz file, a folder of them, or one file per channel in the model's "
        "channel order (vafa info lists them)",
    )
    add_model_arguments(p)
    add_inference_arguments(p)
    p.add_argument("--labels", help="ground-truth labels for IMAGE (else pseudo-labels)")
    p.add_argument(
        "--out",
        help="output .nii.gz for a single IMAGE (a .json is written beside it); one file per "
        "channel in: OUT_0000.nii.gz, OUT_0001.nii.gz …",
    )
    p.add_argument("--out-dir", help="output folder for a folder or a datalist")
    p.add_argument("--datalist", help="decathlon-style JSON with cases {image, label}")
    p.add_argument("--split", default="validation", help="datalist split (default validation)")
    p.add_argument(
        "--resample-back",
        action="store_true",
        help="write on the input grid when the card resamples (default: model grid)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the cases already done in --out-dir (same settings) and attack the rest",
    )
    add_amp_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Attack the cases; under ``torchrun`` each process takes its share (:meth:`Dist.owns`:
    case ``i`` on rank ``i mod world_size``), on its own device."""
    from vafa.run.distributed import EVALUATION_TIMEOUT, Dist

    dist = Dist.setup(args.device, timeout=EVALUATION_TIMEOUT)
    try:
        if dist.world_size > 1:
            args.device = str(dist.device)  # cuda:LOCAL_RANK, or the CPU under gloo
        model, card = load_model(args)
        cases = _cases(args, card)
        single = args.datalist is None and (len(args.image) > 1 or Path(args.image[0]).is_file())
        if single and not args.out:
            raise CLIError("--out OUT.nii.gz is required for a single image")
        if not single and not args.out_dir:
            raise CLIError("--out-dir DIR is required for a folder or a datalist")
        if args.resume and args.overwrite:
            raise CLIError("--resume keeps finished outputs, --overwrite replaces them: pick one")
        table = None if single else Path(args.out_dir) / CASES_CSV
        if table is not None and table.exists() and not (args.resume or args.overwrite):
            raise CLIError(f"{table} exists (pass --resume to continue, --overwrite to replace)")
        expected = _expected_settings(args, model, card) if args.resume else None
        lines = args.json and not single and dist.is_writer  # JSON Lines, one per case
        if not dist.is_writer:  # one process speaks: no bar, table or JSON from the others
            args.quiet, args.json = True, False
        rows = []
        check_channels(
            [image for image, _ in cases], card.in_channels, card.channel_names, _where(args)
        )
        for index, (image_path, label_path) in dist.shard(cases):
            target = Path(args.out) if single else Path(args.out_dir) / _adv_name(image_path)
            title = f"{index + 1}/{len(cases)} {case_name(image_path)}"
            case = (image_path, label_path)
            row = _attack_case(args, model, card, case, target, title, args.quiet, expected, single)
            rows.append({"index": index, **row})
            if lines:  # as each case ends; the other processes' cases after the gathering
                _print_case_line(rows[-1])
        own = {row["index"] for row in rows}
        rows = [row for part in dist.gather_json(rows) for row in part]
        if lines:
            for row in sorted(rows, key=lambda r: r["index"]):
                if row["index"] not in own:
                    _print_case_line(row)
        return _finish(args, dist, rows, table, len(cases))
    finally:
        dist.close()


def _attack_case(args, model, card, case, target, title, quiet, expected, single) -> dict:
    """Attack one case and write its files (or find them done with ``--resume``); returns its
    row of ``attack_results.csv`` (:func:`vafa.run.cases.case_row`) with its ``--json`` line
    under ``"line"`` (:func:`_case_line`). A failing case is reported and gives a ``failed``
    row (a single IMAGE raises instead)."""
    from vafa.io.channels import load_image
    from vafa.io.model_space import load_model_labels

    image_path, label_path = case
    sidecar = _sidecar(target)
    written = _written(target, image_path)
    try:
        overwrite = args.overwrite
        if expected is not None and (any(p.exists() for p in written) or sidecar.exists()):
            metrics = _finished(written, sidecar, expected)
            if metrics is not None:  # read back from the case's JSON
                return _row(case, target, args.seed, metrics, resumed=True)
            overwrite = True  # a case cut short: its partial files are replaced
        _check_target(target, written, [*image_files(image_path), label_path], overwrite)
        image = load_image(image_path, card.in_channels, card.channel_names)
        labels = None if label_path is None else load_model_labels(label_path, image, card)
        outcome = run_attack_command(args, model, card, image, labels, title=title, quiet=quiet)
        _write_adversarial(outcome, target)
        worst = outcome.settings.get("worst_case")
        if single or not args.json:  # a batch's --json: one line per case (_print_case_line)
            print_metrics(args, outcome.metrics, describe(image_path), worst)  # also w. --quiet
        if outcome.model_input.resampled and not args.resample_back and not quiet:
            spacing = "×".join(f"{s:g}" for s in outcome.model_input.grid.spacing)
            print(
                f"note: {target} is on the model grid ({spacing} mm); "
                "use --resample-back for the input grid",
                file=sys.stderr,
            )
        return _row(case, target, args.seed, outcome.metrics, worst_case=worst)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a bad case must not stop the batch
        if single:
            raise
        print(f"vafa attack: {describe(image_path)}: {one_line(err)}", file=sys.stderr)
        return _row(case, target, args.seed, None, error=one_line(err))


def _row(case, target: Path, seed, metrics, *, resumed=False, error=None, worst_case=None) -> dict:
    """The case's row of ``attack_results.csv`` (its ``attack``: the winner of a worst case),
    with its ``--json`` line under ``"line"``."""
    from vafa.io.files import json_ready
    from vafa.run.cases import case_row

    image_path, label_path = case
    status = "ok" if error is None else f"failed: {error}"
    row = case_row(image_path, label_path, target.name, status, metrics, seed)
    line = _case_line(row, target, metrics, resumed, error)
    if worst_case is not None:
        line["worst_case"] = json_ready(worst_case)
    return {**row, "line": line}


def _case_line(row: dict, target: Path, metrics, resumed: bool, error: str | None) -> dict:
    """What ``--json`` prints for one case of a folder or a datalist (one line, JSON-ready):
    ``case`` (the image's name without ``.nii``/``.nii.gz``), ``image``, ``labels`` (None: the
    model's own clean prediction was attacked), ``adversarial`` and ``json`` (the files
    written), ``status`` (``"ok"`` or ``"failed"``), ``error`` (the one-line message, or
    None), ``resumed`` (found finished by ``--resume``) and ``metrics`` (what ``--json``
    prints for a single IMAGE; None for a failed case); ``--attack worst-case`` adds
    ``worst_case`` (every member's Dice, the winner)."""
    from vafa.io.files import json_ready

    return json_ready(
        {
            "case": row["case"],
            "image": row["image"],
            "labels": row["labels"],
            "adversarial": str(target),
            "json": str(_sidecar(target)),
            "status": "ok" if error is None else "failed",
            "error": error,
            "resumed": resumed,
            "metrics": None if metrics is None else metrics.to_dict(),
        }
    )


def _print_case_line(row: dict) -> None:
    """One case's ``--json`` line on stdout, with its place in the input (``index``, from 0)."""
    line = {"case": row["line"]["case"], "index": row["index"], **row["line"]}
    print(json.dumps(line, allow_nan=False), flush=True)


def _finish(args, dist, rows, table: Path | None, total: int) -> int:
    """Rank 0 writes ``attack_results.csv`` (every case, in input order) and prints the
    failures; every process returns the same status."""
    from vafa.run.cases import write_case_table

    failures = [r for r in rows if r["status"] != "ok"]
    if dist.is_writer:
        if table is not None and table.parent.is_dir():  # no folder: every case failed
            write_case_table(table, sorted(rows, key=lambda r: r["index"]))
        if failures:
            print(f"\n{len(failures)} of {total} case(s) failed:", file=sys.stderr)
            for row in failures:
                print(
                    f"  {row['image']}: {row['status'].removeprefix('failed: ')}", file=sys.stderr
                )
    dist.barrier()  # nobody leaves (and torchrun ends nothing) before the table is written
    return 1 if failures else 0


def run_attack_command(args, model, card, image, labels, title: str, quiet: bool | None = None):
    """:func:`vafa.run.pipeline.run_attack` (or the worst case over attacks,
    :func:`vafa.run.worst_case.iter_worst_case`) with the attack arguments of ``args`` and a
    progress bar (unless ``--quiet`` or ``quiet``)."""
    from vafa.attacks import drive
    from vafa.run.pipeline import iter_run_attack
    from vafa.run.progress import StepBar
    from vafa.run.worst_case import is_worst_case, iter_worst_case

    if args.roi:
        card = with_roi(card, roi_triple(args.roi))
    quiet = args.quiet if quiet is None else quiet
    bar = None if quiet else StepBar(title)
    run = dict(
        options=attack_options(args),
        tile_batch=args.tile_batch,
        device=args.device,
        seed=args.seed,
        resample_back=getattr(args, "resample_back", False),
        amp=getattr(args, "amp", "off"),
        through=args.through,
    )
    if is_worst_case(args.attack):
        job = iter_worst_case(model, card, image, labels, floor=args.floor, **run)
    else:
        job = iter_run_attack(model, card, image, labels, attack=args.attack, **run)
    try:
        return drive(job, bar)
    finally:
        if bar is not None:
            bar.close()


def _cases(args, card) -> list[tuple[ImagePaths, Path | None]]:
    if args.datalist:
        if args.image:
            raise CLIError("give IMAGE or --datalist FILE, not both")
        return datalist_cases(Path(args.datalist), args.split)
    if not args.image:
        raise CLIError("give IMAGE (a file or a folder) or --datalist FILE")
    if len(args.image) > 1:
        files = tuple(Path(p) for p in args.image)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise CLIError(f"no such file: {', '.join(missing)} (several IMAGEs: one per channel)")
        return [(files, Path(args.labels) if args.labels else None)]
    image = Path(args.image[0])
    if image.is_dir():
        files = sorted(p for p in image.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        if not files:
            raise CLIError(f"{image}: no .nii/.nii.gz files in this folder")
        if args.labels:
            raise CLIError("--labels goes with a single IMAGE; use --datalist for labelled batches")
        if card.in_channels > 1:  # nnU-Net's imagesTs: case_0000.nii.gz, case_0001.nii.gz …
            return [(case, None) for case in group_channel_files(files)]
        return [(p, None) for p in files]
    if not image.exists():
        raise CLIError(f"{image}: no such file or folder")
    return [(image, Path(args.labels) if args.labels else None)]


def _expected_settings(args, model, card) -> dict:
    """What a finished case's JSON must say to be kept by ``--resume``: the attack's settings
    (its schema options, steps, seed…; the worst case: every member's, under ``"ensemble"``),
    the tile size and batch, ``resample_back`` and ``amp``."""
    from vafa.attacks import build_attack
    from vafa.io.files import json_ready
    from vafa.run.worst_case import ensemble_settings, is_worst_case

    tiles = {"tile_batch": args.tile_batch, "through": args.through}
    if args.through == "tiles":  # through the sliding window the one "tile" is the volume
        tiles["roi"] = list(roi_triple(args.roi) if args.roi else card.roi_size)
    options = attack_options(args)
    if is_worst_case(args.attack):
        ensemble = ensemble_settings(model, options=options, floor=args.floor, seed=args.seed)
        made = {"ensemble": {**ensemble, **tiles}}
    else:
        attack = build_attack(args.attack, model, **options, seed=args.seed)
        made = {"attack": {**attack.settings(), **tiles}}
    return json_ready({**made, "resample_back": args.resample_back, "amp": args.amp})


def _finished(written: list[Path], sidecar: Path, expected: dict) -> OutcomeMetrics | None:
    """The metrics (:class:`vafa.run.outcome_metrics.OutcomeMetrics`) of a case whose volume
    and JSON are both written (the JSON is renamed into place last), else None.

    Raises:
        CLIError: the files were made with other settings than this run's.
    """
    from vafa.io.files import read_json

    if not (all(p.is_file() for p in written) and sidecar.is_file()):
        return None
    target = written[0]
    doc = read_json(sidecar, "attack result")
    settings = doc.get("settings") if isinstance(doc, dict) else None
    settings = settings if isinstance(settings, dict) else {}
    kind = "ensemble" if "ensemble" in expected else "attack"
    made = settings.get(kind) if isinstance(settings.get(kind), dict) else {}
    differ = [k for k, v in expected[kind].items() if made.get(k, "absent") != v]
    differ += [k for k in ("resample_back", "amp") if settings.get(k, "off") != expected[k]]
    if differ:
        raise CLIError(
            f"{target} was made with other settings ({', '.join(differ)}): pass --overwrite "
            "to replace it, or choose another --out-dir"
        )
    metrics = doc.get("metrics")
    return None if metrics is None else OutcomeMetrics.from_dict(metrics)


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name.removesuffix(".gz").removesuffix(".nii") + ".json")


def _adv_name(image: ImagePaths) -> str:
    return case_name(image) + "_adv.nii.gz"


def _written(target: Path, image: ImagePaths) -> list[Path]:
    """The image files an attack of ``image`` writes at ``target``: one, or one per channel."""
    from vafa.io.channels import channel_paths

    if not target.name.endswith((".nii", ".nii.gz")):
        raise CLIError(f"--out {target}: must end in .nii.gz or .nii")
    return channel_paths(target, len(image)) if isinstance(image, tuple) else [target]


def _where(args) -> str | None:
    return f"--datalist {args.datalist}" if args.datalist else None


def _check_target(target: Path, written: list[Path], inputs, overwrite: bool) -> None:
    for src in inputs:
        for path in written:
            if src is not None and path.resolve() == Path(src).resolve():
                raise CLIError(f"refusing to overwrite the input {src}")
    refuse_existing(written, overwrite)
    if target.parent.exists() and not target.parent.is_dir():
        raise CLIError(f"{target.parent}: not a folder")


def _write_adversarial(outcome, target: Path) -> None:
    """The adversarial volume and its JSON (metrics, settings, history), both or neither."""
    from vafa.io.outcome_files import write_volumes

    target.parent.mkdir(parents=True, exist_ok=True)  # made only once there is a result
    sidecar = _sidecar(target)
    # _check_target has refused existing files and inputs
    write_volumes(outcome, {"adversarial": target, "metrics": sidecar}, overwrite=True)
