"""A whole report: :func:`run_report` plans it (:func:`vafa.report.plan.plan_report`), runs the
plan into ``results.csv`` (:func:`run_plan`) and writes ``report.md`` and the plots
(:func:`write_plan_report`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from pathlib import Path
from typing import Any

from vafa.attacks.base import drive
from vafa.report.grid import ReportGrid, ReportSettings
from vafa.report.markdown import write_report
from vafa.report.plan import PlannedCase, PlannedModel, ReportPlan, plan_report
from vafa.report.render import format_table
from vafa.report.results import ResultsWriter, read_results, rows_in_scope, save_slice
from vafa.report.runner import GridProgress, case_failure_row, iter_grid

__all__ = ["ReportResult", "run_plan", "run_report", "write_plan_report"]


@dataclass
class ReportResult:
    """What :func:`run_report` did.

    Attributes:
        out_dir: the report folder; ``results_csv``: its ``results.csv``.
        report: ``report.md`` (None when cancelled: no partial report is written).
        plots: ``{name: path}`` of the PNGs written.
        rows: the rows of ``results.csv`` for the given models and cases (latest per entry).
        ran, skipped, failed: entries run now, skipped as already done, failed now.
        cancelled: the callback stopped the run.
        table6: Table 6 (every model × every Table-1 attack) as Markdown.
        transfer: the transfer matrix as Markdown ("" with one model).
    """

    out_dir: Path
    results_csv: Path
    report: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: bool = False
    table6: str = ""
    transfer: str = ""


def run_report(
    models: Sequence[tuple[str, str | os.PathLike]],
    cases: Sequence[tuple[str, str | os.PathLike, str | os.PathLike | None]],
    out_dir: str | os.PathLike,
    *,
    grid: ReportGrid | None = None,
    quick: bool = False,
    paper: bool = False,
    sweeps: bool = True,
    sweep_models: str = "first",
    device: str = "auto",
    seed: int = 0,
    trust: bool = False,
    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    callback: Callable[[GridProgress], bool | None] | None = None,
    bands: bool = False,
    band_block: int = 32,
    amp: str = "off",
    through: str = "tiles",
    dist=None,
) -> ReportResult:
    """Run the report grid on every model × case and write the report into ``out_dir``.

    Args:
        models: ``(name, weights)``: a path (card beside it) or a bundled model name
            (:data:`vafa.io.data.BUNDLED_MODELS`). Names must be unique.
        cases: ``(name, image, labels or None)`` NIfTI paths. Names must be unique; the first
            case is the one of the qualitative figure.
        out_dir: the report folder (created). Writes ``results.csv`` (one row per model ×
            case × entry, appended and flushed row by row), ``report.md``, ``dice_vs_qmax.png``,
            ``dice_vs_steps.png``, ``dice_vs_block.png``, ``table1_bars.png``,
            ``qualitative.png`` and ``slices/`` (the figure's slices, kept for resumed runs).
        grid: the attacks (:class:`ReportGrid`); None: the paper's grid
            (:meth:`ReportGrid.standard` of ``quick`` and ``paper``).
        quick, paper, sweeps, sweep_models: see :class:`ReportSettings`.
        device: where the models run. seed: seed of every attack.
        trust: allow pickled checkpoints (:func:`vafa.io.checkpoints.load_model`), LPIPS weight
            files included.
        lpips_weights: local LPIPS/AlexNet weight file(s) (:func:`vafa.io.lpips.load_lpips`):
            fills the ``lpips`` column of the entries run now.
        callback: receives every :class:`GridProgress`; returning False cancels (the rows done
            stay in ``results.csv``; no report is written).
        bands: run the perturbation band analysis (:mod:`vafa.run.band_analysis`, blocks of
            ``band_block``) of every Table-1 attack entry: ``bands.csv``, a table and
            ``bands.png``. With two or more models, every Table-1 attack's adversarial volume
            is also scored on every model: ``transfer.csv``, the transfer matrix and
            ``transfer.png`` (:mod:`vafa.report.transfer`).
        amp: mixed precision of the model passes (see :func:`vafa.report.runner.iter_grid`).
        through: the threat model of the standard grid's attacks (:class:`ReportSettings`).
        dist: a :class:`vafa.run.distributed.Dist` of a ``torchrun`` job: this process runs
            only its model × case × entry items and rank 0 merges the rows and writes the
            report (:mod:`vafa.report.shards`); None or one process: everything here.

    Resuming: entries whose ``(model, case, key)`` already has an ``ok`` row in
    ``results.csv`` are skipped. A case that cannot be loaded and an entry that fails are
    recorded as ``failed`` rows; the rest continue (re-running retries them).

    Raises:
        ValueError, TypeError, FileNotFoundError: bad names, missing files, models or LPIPS
            weights that do not load, a ``results.csv`` with other columns — all before
            anything is written.
    """
    settings = ReportSettings(
        quick, paper, sweeps, sweep_models, str(device), seed,
        amp=amp, bands=bands, band_block=band_block, through=through,
    )  # fmt: skip
    plan = plan_report(
        models, cases, out_dir, settings, grid=grid, trust=trust, lpips_weights=lpips_weights,
        dist=dist,
    )  # fmt: skip
    result = run_plan(plan, callback)
    if not result.cancelled and plan.shards.writes_report:
        write_plan_report(plan, result)
    return result


def run_plan(
    plan: ReportPlan, callback: Callable[[GridProgress], bool | None] | None = None
) -> ReportResult:
    """Run the entries of ``plan`` not done yet, appending their rows to ``results.csv`` (this
    process's part file under ``torchrun``; every process merges before it returns).

    ``callback`` receives every :class:`GridProgress`; returning False cancels. The result's
    ``rows`` are those of ``results.csv`` for the plan's models and cases.
    """
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=plan.out_dir, results_csv=plan.results_csv)
    with ResultsWriter(plan.shards.results_path()) as writer:
        for (m, model), (c, case) in product(enumerate(plan.models), enumerate(plan.cases)):
            _run_case(plan, m, model, case, c == 0, writer, result, callback)
            if result.cancelled:
                break
    plan.shards.finish(result)
    result.rows = rows_in_scope(read_results(plan.results_csv), plan.model_names, plan.case_names)
    return result


def write_plan_report(plan: ReportPlan, result: ReportResult) -> ReportResult:
    """Write ``report.md`` and the plots of a run plan from ``result.rows``; fills ``result``'s
    ``report``, ``plots``, ``table6`` and ``transfer``. Returns ``result``."""
    names = plan.model_names
    extras = {type(r).__name__: r.in_scope(names, plan.case_names) for r in plan.recorders}
    paths = write_report(
        plan.out_dir,
        result.rows,
        [(m.name, m.describe()) for m in plan.models],
        [(c.name, c.image, c.labels) for c in plan.cases],
        plan.settings,
        grid=plan.grid,
        transfer_rows=extras.get("TransferRecorder"),
        band_rows=extras.get("BandRecorder"),
    )
    result.report = paths.pop("report")
    result.plots = paths
    result.table6 = format_table(result.rows, plan.grid.table1, names, metrics=("dice_fg", "dice"))
    if extras.get("TransferRecorder"):
        from vafa.report.transfer import transfer_markdown

        result.transfer = transfer_markdown(extras["TransferRecorder"], names)
    return result


def _run_case(
    plan: ReportPlan,
    m: int,
    model: PlannedModel,
    case: PlannedCase,
    first_case: bool,
    writer: ResultsWriter,
    result: ReportResult,
    callback,
) -> None:
    """Run the entries of one model × case that are left (and this process's)."""
    entries = plan.entries(m)
    skip = plan.finished(model.name, case.name, entries)
    others = plan.shards.others(entries)
    result.skipped += len(skip - others)
    skip |= others
    if len(skip) == len(entries):
        return
    seed = plan.settings.seed
    try:
        image, labels = _load_case(case, model.card)
    except Exception as err:  # a bad case is recorded, the others continue
        writer.write(case_failure_row(model.name, case.name, err, seed))
        result.failed += 1
        return
    grid = iter_grid(
        model.model,
        model.card,
        image,
        labels,
        entries,
        model_name=model.name,
        case_name=case.name,
        device=plan.settings.device,
        seed=seed,
        skip=skip,
        slices=first_case,
        lpips=plan.lpips,
        on_outcome=partial(_record, plan.recorders, model.name, case.name, image, labels),
        amp=plan.settings.amp,
    )

    def answer(event: GridProgress) -> bool | None:
        """Write a finished row, then pass the event to the callback (False cancels)."""
        if event.row is not None:
            save_slice(plan.out_dir, event.row)
            writer.write(event.row)
            result.ran += 1
            result.failed += event.row["status"].startswith("failed")
        reply = callback(event) if callback is not None else None
        result.cancelled = result.cancelled or reply is False
        return reply

    drive(grid, answer)


def _record(recorders, model: str, case: str, image, labels, entry, outcome) -> None:
    for recorder in recorders:
        recorder.record(model, case, entry, outcome, image, labels)


def _load_case(case: PlannedCase, card):
    from vafa.io.channels import load_image
    from vafa.io.model_space import load_model_labels

    image = load_image(case.image, card.in_channels, card.channel_names)
    labels = None if case.labels is None else load_model_labels(case.labels, image, card)
    return image, labels
