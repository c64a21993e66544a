"""The plan of a report (:func:`plan_report`): every input checked, the models loaded, the grid
chosen and what earlier runs finished read back — all before anything is written.

A report is plan → run → write: :func:`plan_report` makes a :class:`ReportPlan`,
:func:`vafa.report.job.run_plan` runs it into ``results.csv`` and
:func:`vafa.report.job.write_plan_report` writes ``report.md`` and the plots
(:func:`vafa.report.job.run_report` does the three).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vafa.io.datalist import ImagePaths, image_files, image_paths
from vafa.report.grid import GridEntry, ReportGrid, ReportSettings
from vafa.report.results import RESULTS_CSV, read_results
from vafa.report.shards import ReportShards

__all__ = ["PlannedCase", "PlannedModel", "ReportPlan", "plan_report"]


@dataclass(frozen=True)
class PlannedModel:
    """A model of the report, loaded.

    Attributes:
        name: its unique name in the report. path: its weights file (or bundled model file).
        model: the network (``[B, C, H, W, D]`` → logits ``[B, K, H, W, D]``). card: its
            :class:`vafa.io.models.ModelCard`.
    """

    name: str
    path: Path
    model: Any
    card: Any

    def describe(self) -> str:
        """One line for ``report.md``: file, architecture, classes, roi."""
        card = self.card
        return (
            f"`{self.path.name}` ({card.architecture}, {card.out_channels} classes, "
            f"roi {card.roi_size})"
        )


@dataclass(frozen=True)
class PlannedCase:
    """A case of the report: its unique name, image (a file, or one per channel) and labels
    (None: pseudo-labels) paths."""

    name: str
    image: ImagePaths
    labels: Path | None


@dataclass
class ReportPlan:
    """A report ready to run (:func:`plan_report`).

    Attributes:
        out_dir: the report folder (not created by planning).
        models, cases: in report order (the first case is the qualitative figure's).
        grid: the :class:`ReportGrid` run.
        settings: the :class:`ReportSettings`.
        shards: this process's share of a ``torchrun`` job (:class:`ReportShards`).
        done: ``(model, case, key)`` of the rows already ``ok`` in ``results.csv`` (or in the
            part files of an interrupted ``torchrun`` job).
        recorders: the transfer recorder (two or more models) and the band recorder
            (``settings.bands``) of the Table-1 attacks (:mod:`vafa.report.transfer`,
            :mod:`vafa.report.bands`).
        lpips: the LPIPS metric (:func:`vafa.io.lpips.load_lpips`), or None.
    """

    out_dir: Path
    models: list[PlannedModel]
    cases: list[PlannedCase]
    grid: ReportGrid
    settings: ReportSettings
    shards: ReportShards
    done: set[tuple[str, str, str]] = field(default_factory=set)
    recorders: list[Any] = field(default_factory=list)
    lpips: Any = None

    @property
    def results_csv(self) -> Path:
        return self.out_dir / RESULTS_CSV

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def case_names(self) -> list[str]:
        return [c.name for c in self.cases]

    def entries(self, model_index: int) -> list[GridEntry]:
        """The entries run on the ``model_index``-th model (the sweeps on the sweep models)."""
        return self.grid.entries(sweeps=self.settings.sweeps_on(model_index))

    def finished(self, model: str, case: str, entries: Sequence[GridEntry]) -> set[str]:
        """Keys of ``entries`` that need not run again on ``model`` × ``case``: an ``ok`` row,
        and every recorder has its rows."""
        return {
            e.key
            for e in entries
            if (model, case, e.key) in self.done
            and not any(r.missing(model, case, e.key) for r in self.recorders)
        }


def plan_report(
    models: Sequence[tuple[str, str | os.PathLike]],
    cases: Sequence[tuple[str, str | os.PathLike, str | os.PathLike | None]],
    out_dir: str | os.PathLike,
    settings: ReportSettings,
    *,
    grid: ReportGrid | None = None,
    trust: bool = False,
    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    dist=None,
) -> ReportPlan:
    """Check the inputs, load the models and read what earlier runs finished.

    Args:
        models, cases, trust, lpips_weights, dist: see :func:`vafa.report.job.run_report`.
        out_dir: the report folder.
        settings: how the report runs (``settings.lpips`` is set from ``lpips_weights``).
        grid: the grid; None: :meth:`ReportGrid.standard` of ``settings.quick`` and
            ``settings.paper``.

    Raises:
        ValueError, TypeError, FileNotFoundError: bad names, missing files, models or LPIPS
            weights that do not load, a ``results.csv`` (``transfer.csv``, ``bands.csv``) with
            other columns, the transfer matrix or band analysis under ``torchrun``.
    """
    if grid is None:
        grid = ReportGrid.standard(
            quick=settings.quick, paper=settings.paper, through=settings.through
        )
    model_names = _unique_names([m[0] for m in models], "model")
    planned_cases = _planned_cases(cases)
    out_dir = Path(out_dir)
    previous = read_results(out_dir / RESULTS_CSV)  # checks the columns before anything runs
    shards = ReportShards(out_dir, dist)
    previous += shards.previous_rows()
    plan = ReportPlan(
        out_dir=out_dir,
        models=_load_models(model_names, models, settings.device, trust),
        cases=planned_cases,
        grid=grid,
        settings=dataclasses.replace(settings, lpips=lpips_weights is not None),
        shards=shards,
        done={(r["model"], r["case"], r["key"]) for r in previous if r["status"] == "ok"},
    )
    if lpips_weights is not None:
        from vafa.io.lpips import load_lpips
        from vafa.ops.devices import resolve_device

        plan.lpips = load_lpips(lpips_weights, device=resolve_device(settings.device), trust=trust)
    plan.recorders = _recorders(plan)
    if shards.active and plan.recorders:  # they append to one file: not shared out yet
        raise ValueError(
            "the transfer matrix (two or more models) and the band analysis run in one process "
            f"only: run this report without torchrun, got {dist.world_size} processes"
        )
    return plan


def _planned_cases(cases) -> list[PlannedCase]:
    """The cases with unique names and existing files (FileNotFoundError names the case)."""
    names = _unique_names([c[0] for c in cases], "case")
    planned = []
    for name, (_, image, labels) in zip(names, cases, strict=True):
        image = image_paths(image)
        for path in (*image_files(image), labels):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"case {name}: {path} does not exist")
        planned.append(PlannedCase(name, image, None if labels is None else Path(labels)))
    return planned


def _load_models(names: list[str], models, device: str, trust: bool) -> list[PlannedModel]:
    from vafa.io.handle import ModelSource

    loaded = []
    for name, (_, weights) in zip(names, models, strict=True):
        source = ModelSource(str(weights), trust=trust)
        model, card = source.load(device=device)
        loaded.append(PlannedModel(name, source.path, model, card))
    return loaded


def _recorders(plan: ReportPlan) -> list[Any]:
    """The transfer recorder (two or more models) and the band recorder (``bands``), for the
    Table-1 attack entries."""
    from vafa.report.bands import BandRecorder
    from vafa.report.transfer import TransferRecorder

    keys = [e.key for e in plan.grid.table1 if e.attack != "clean"]
    out: list[Any] = []
    if len(plan.models) > 1:
        targets = [(m.name, m.model, m.card) for m in plan.models]
        out.append(TransferRecorder(plan.out_dir, targets, keys))
    if plan.settings.bands:
        models = {m.name: m.model for m in plan.models}
        out.append(BandRecorder(plan.out_dir, models, keys, plan.settings.band_block))
    return out


def _unique_names(names: Sequence[str], what: str) -> list[str]:
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"give at least one {what}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or any(not n for n in names):
        raise ValueError(f"{what} names must be unique and non-empty, got {names}")
    return names
