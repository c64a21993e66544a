"""``vafa report``: robustness reports in the form of the paper's tables (:mod:`vafa.report`).

Every input is checked before anything runs (one line, exit 2, nothing written). Rows are appended to
``results.csv`` as they finish, so Ctrl-C keeps them and a re-run resumes; ``report.md`` and
the plots are written only at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vafa.cli.common import (
    TRUST_HELP,
    CLIError,
    add_amp_argument,
    add_band_arguments,
    add_common_arguments,
    datalist_cases,
    model_source,
)
from vafa.cli.options import add_through_argument
from vafa.io.datalist import case_name, image_files
from vafa.run.progress import StepBar

__all__ = ["add_parser"]

_EPILOG = """\
examples:
  vafa report --quick --out report/          # bundled CT sample, every bundled model, trimmed grid
  vafa report --model demo --model runs/vaft/best.safetensors --out report/
  vafa report --model model.safetensors --datalist data.json --split validation --paper --out r/
  vafa report --model model.safetensors a.nii.gz b.nii.gz --labels a_seg.nii.gz b_seg.nii.gz \\
      --no-sweeps --out r/

grid: Table 1/5 (clean; PGD, FGSM, BIM, SegPGD, CosPGD at eps 4 and 8; GN sigma 4 and 8;
VAFA-2D; VAFA q_max 20 and 30; SA2) on every model; the VAFA sweeps of Tables 2-4 (q_max 10..80, steps 10..60, block
4..96) on the first model (--sweep-all: on every model). --quick: 10 steps, fewer settings.
--through sliding-window: every attack through the model's own sliding-window prediction.
A "worst case over attacks" section takes, per case, the lowest fg Dice of SA2, PGD, SegPGD,
CosPGD (eps 4) and VAFA (q_max 20). Re-running with the same --out skips the entries already
in results.csv.
With two or more models, every Table-1 attack's adversarial volume is also scored on every
model (the transfer matrix: transfer.csv, transfer.png). --bands adds the perturbation band
analysis of every Table-1 attack (bands.csv, bands.png).
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="robustness report: the paper's tables on any model and data",
        description="Run the paper's attack grid (Table 1/5, the sweeps of Tables 2-4, Table 6)\n"
        "on models x cases; write results.csv, report.md and plots.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(
        p,
        ignored={"overwrite": "a report resumes in --out (start over in a new folder)"},
        json="print the result as JSON: the files written, entries run and skipped, the rows "
        "(also with --quiet)",
    )
    p.add_argument(
        "images", nargs="*", metavar="IMAGE", help="NIfTI cases (default: the bundled CT sample)"
    )
    p.add_argument(
        "--model",
        action="append",
        help="weights (.safetensors/.pt, card beside them) or a bundled model ('demo', "
        "'robust-demo'); repeat for several (default: every installed bundled model)",
    )
    p.add_argument(
        "--labels", nargs="+", action="extend", help="labels of the IMAGEs, in the same order"
    )
    p.add_argument("--datalist", help="decathlon-style JSON with cases {image, label}")
    p.add_argument("--split", default="validation", help="datalist split (default validation)")
    p.add_argument("--out", required=True, help="report folder (re-use it to resume)")
    p.add_argument("--quick", action="store_true", help="trimmed grid: a few minutes on 2 cores")
    p.add_argument(
        "--paper",
        action="store_true",
        help="VAFA as the published code: normalize=slice, keep=last, q in [5, q_max] from q_max",
    )
    p.add_argument("--no-sweeps", action="store_true", help="Table 1/5 and 6 only")
    p.add_argument("--sweep-all", action="store_true", help="run the sweeps on every model")
    p.add_argument(
        "--lpips-weights",
        nargs="+",
        metavar="FILE",
        help="fill the LPIPS column from local weights (nothing is downloaded): torchvision's "
        "alexnet-owt-7be5be79.pth and the lpips package's weights/v0.1/alex.pth, or one file "
        "holding both",
    )
    add_band_arguments(p, "every Table-1 attack (bands.csv, bands.png)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_amp_argument(p)
    add_through_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Under ``torchrun`` every process runs its share of the model × case × entry items on
    its own device; rank 0 merges ``results.csv`` and writes the report."""
    from vafa.run.distributed import EVALUATION_TIMEOUT, Dist

    dist = Dist.setup(args.device, timeout=EVALUATION_TIMEOUT)
    try:
        if dist.world_size > 1:
            args.device = str(dist.device)  # cuda:LOCAL_RANK, or the CPU under gloo
            args.quiet = args.quiet or not dist.is_writer
        return _run(args, dist)
    finally:
        dist.close()


def _run(args, dist) -> int:
    from vafa.report import run_report

    models = _models(args)
    cases = _report_cases(args)
    for path in args.lpips_weights or []:
        if not Path(path).is_file():
            raise CLIError(f"--lpips-weights {path}: no such file")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    bar = None if args.quiet else _ReportProgress()
    try:
        result = run_report(
            models,
            cases,
            out,
            quick=args.quick,
            paper=args.paper,
            sweeps=not args.no_sweeps,
            sweep_models="all" if args.sweep_all else "first",
            device=args.device,
            seed=args.seed,
            trust=args.trust_checkpoint,
            lpips_weights=args.lpips_weights,
            callback=bar,
            bands=args.bands,
            band_block=args.band_block,
            amp=args.amp,
            through=args.through,
            dist=dist,
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(
            f"vafa report: interrupted; finished entries are in {out / 'results.csv'} "
            "(run the same command again to resume; report.md was not updated)",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    failed = [r for r in result.rows if r["status"] != "ok"]
    if args.json and dist.is_writer:
        print(json.dumps(_result_doc(result), indent=2))
    elif not args.quiet:
        print(
            f"ran {result.ran} entries, skipped {result.skipped} already in results.csv; "
            f"wrote {result.report} ({', '.join(p.name for p in result.plots.values())})"
        )
        print("\nTable 6: foreground Dice and DSC of every model under every Table-1 attack\n")
        print(result.table6)
        if result.transfer:
            print("\nTransfer matrix: fg Dice of each model on each model's adversarial volumes\n")
            print(result.transfer)
    if failed and dist.is_writer:  # every process returns 1, rank 0 says why
        print(f"\n{len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed:", file=sys.stderr)
        for row in failed:
            print(
                f"  {row['model']} / {row['case']} / {row['key']}: {row['status']}", file=sys.stderr
            )
    return 1 if failed else 0


def _result_doc(result) -> dict:
    """What ``--json`` prints: the :class:`vafa.report.job.ReportResult` without its tables."""
    from vafa.io.files import json_ready

    keys = ("out_dir", "results_csv", "report", "plots", "ran", "skipped", "failed", "rows")
    return json_ready({key: getattr(result, key) for key in keys})


def _models(args) -> list[tuple[str, str]]:
    """``(name, weights)`` of --model (unique names), or every installed bundled model."""
    from vafa.io.data import bundled_models

    if not args.model:
        installed = bundled_models()
        if not installed:
            raise CLIError("no bundled model is installed: give --model WEIGHTS")
        return [(name, name) for name in installed]
    models = []
    for weights in args.model:
        source = model_source(args, weights)
        try:
            source.path  # noqa: B018 - checks the file (or bundled model) exists
        except FileNotFoundError as err:
            raise CLIError(f"--model {err}") from None
        models.append((source.name, weights))
    return _dedupe(models)


def _report_cases(args) -> list[tuple[str, Path, Path | None]]:

    if args.datalist and args.images:
        raise CLIError("give IMAGE files or --datalist, not both")
    if args.datalist:
        if args.labels:
            raise CLIError("--labels goes with IMAGE files (a datalist names its labels)")
        pairs = datalist_cases(Path(args.datalist), args.split)
    elif args.images:
        labels = args.labels or []
        if labels and len(labels) != len(args.images):
            raise CLIError(
                f"--labels: {len(labels)} file(s) for {len(args.images)} IMAGE(s); give one per "
                "image, in the same order"
            )
        pairs = [
            (Path(image), Path(labels[i]) if labels else None)
            for i, image in enumerate(args.images)
        ]
    else:
        if args.labels:
            raise CLIError("--labels needs IMAGE files")
        from vafa.io.data import sample_paths

        pairs = [sample_paths()]
    for image, labels in pairs:
        for path in (*image_files(image), labels):
            if path is not None and not path.is_file():
                raise CLIError(f"{path}: no such file")
    named = [(case_name(image), image, labels) for image, labels in pairs]
    names = _dedupe([(name, i) for i, (name, _, _) in enumerate(named)])
    return [
        (name, image, labels) for (name, _), (_, image, labels) in zip(names, named, strict=True)
    ]


def _dedupe(items):
    """Make the names (first element) unique by suffixing ``-2``, ``-3``…"""
    seen: dict[str, int] = {}
    out = []
    for name, value in items:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", value))
    return out


class _ReportProgress:
    """A step bar per grid entry (:class:`vafa.run.progress.StepBar`) and one line per finished
    entry."""

    def __init__(self) -> None:
        self.steps = None

    def __call__(self, event) -> None:
        title = f"{event.model} · {event.case} [{event.index}/{event.total}] {event.entry.label}"
        if event.step is None and event.row is None:
            self.close()
            self.steps = StepBar(title)
        elif event.step is not None and self.steps is not None:
            self.steps(event.step)
        elif event.row is not None:
            self.close()
            StepBar.write(f"{title}: {_row_text(event.row)}")

    def close(self) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None


def _row_text(row) -> str:
    if row["status"] != "ok":
        return row["status"]

    def fmt(value) -> str:
        return "–" if value is None else f"{value:.3f}"

    return (
        f"Dice fg {fmt(row['dice_fg_clean'])} → {fmt(row['dice_fg'])}, SSIM {fmt(row['ssim'])} "
        f"({row['seconds']:.0f} s)"
    )
