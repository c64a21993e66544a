"""``vafa demo``: attack the bundled CT sample with the bundled demo model."""

from __future__ import annotations

from pathlib import Path

from vafa.cli.attack import run_attack_command
from vafa.cli.common import add_common_arguments, print_metrics, refuse_existing
from vafa.cli.options import add_attack_arguments

__all__ = ["add_parser"]

#: What ``vafa demo`` writes into ``--out`` besides the outcome's files (``OUTCOME_FILES``).
CLEAN, FIGURE = "clean.nii.gz", "figure.png"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="attack the bundled CT sample with the bundled demo model",
        description="Attack the bundled abdominal CT sample with the bundled demo "
        "model; print the damage and write volumes, metrics and a figure.",
    )
    add_common_arguments(
        p,
        json="print the metrics as JSON (also with --quiet)",
        overwrite="replace the files of an earlier run in --out",
    )
    add_attack_arguments(p)
    p.add_argument("--out", default="vafa-demo", help="output folder (default vafa-demo/)")
    p.set_defaults(func=run)


def run(args) -> int:
    from vafa.io.data import load_demo_model, load_sample
    from vafa.io.outcome_files import OUTCOME_FILES, write_outcome
    from vafa.io.volume import save_volume
    from vafa.report.figures import attack_figure

    out = Path(args.out)
    # every file a demo can write, in the order it writes them: nothing replaced without
    # --overwrite, checked before anything is computed
    refuse_existing([out / f for f in (*OUTCOME_FILES.values(), CLEAN, FIGURE)], args.overwrite)
    image, labels = load_sample()
    model, card = load_demo_model(device=args.device)
    outcome = run_attack_command(args, model, card, image, labels, title="demo")
    paths = write_outcome(outcome, out, overwrite=args.overwrite)
    clean = outcome.model_input.grid
    paths["clean"] = save_volume(
        clean, out / CLEAN, overwrite=args.overwrite, protect=[image.source]
    )
    block = (outcome.settings.get("attack") or {}).get("block_size")
    paths["figure"] = attack_figure(
        outcome.model_input.tensor[0, 0].numpy(),
        outcome.adversarial01[0, 0].numpy(),
        outcome.clean_prediction.array,
        outcome.adversarial_prediction.array,
        outcome.metrics,
        out / FIGURE,
        block_size=block if block and len(block) == 3 else 32,
    )
    print_metrics(
        args,
        outcome.metrics,
        title="Bundled CT sample (labels: TotalSegmentator output), demo model",
    )
    if not args.quiet and not args.json:
        print(f"\nwrote {', '.join(sorted(p.name for p in paths.values()))} to {out}/")
    return 0
