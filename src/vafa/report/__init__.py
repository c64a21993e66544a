"""Robustness reports in the form of the paper's tables: attack grids, ``results.csv``,
``report.md`` and plots.

* Grids (:mod:`vafa.report.grid`: :func:`table1_grid`, :func:`sweep_grid`,
  :func:`report_grid`) are lists of :class:`GridEntry`: one attack with explicit options
  (Table 1/5 rows, the q_max / steps / block-size sweeps of Tables 2–4). ``paper=True``
  switches every VAFA entry (3D and 2D) to the published code's behaviour; ``quick=True``
  trims the grid (:data:`QUICK_STEPS` steps, fewer settings). A report's grid is one
  :class:`ReportGrid` (Table-1 rows and sweep rows; :meth:`ReportGrid.standard` is the paper's).
* :func:`iter_grid` (:mod:`vafa.report.runner`) runs a grid on one model × one case as a
  generator of :class:`GridProgress` events (``gen.send(False)`` cancels) and returns the rows.
* :func:`run_report` (:mod:`vafa.report.job`) is plan → run → write: :func:`plan_report`
  (:mod:`vafa.report.plan`) checks the inputs and loads the models into a :class:`ReportPlan`
  (the grid is a parameter), :func:`run_plan` appends rows to ``results.csv``
  (:mod:`vafa.report.results`, resumable), :func:`write_plan_report` writes ``report.md`` and
  the plots (:func:`write_report`, :mod:`vafa.report.markdown`).
* :func:`format_table`, :func:`summarize`, :func:`plot_setting_curves`,
  :func:`plot_attack_bars` (:mod:`vafa.report.render`) render rows (for the napari widget as
  well as the files).

Numbers are measured with :func:`vafa.run.pipeline.run_attack` (whole volume, tiled attack,
the model's own sliding-window evaluation, ``card.inference``) and
:func:`vafa.run.pipeline.evaluate` (clean row).
"""

from vafa.report.grid import (
    LIBRARY_VAFA,
    PAPER_VAFA,
    QUICK_STEPS,
    GridEntry,
    ReportGrid,
    ReportSettings,
    report_grid,
    sweep_grid,
    table1_grid,
)
from vafa.report.job import ReportResult, run_plan, run_report, write_plan_report
from vafa.report.markdown import write_report
from vafa.report.plan import ReportPlan, plan_report
from vafa.report.render import format_table, plot_attack_bars, plot_setting_curves, summarize
from vafa.report.results import RESULT_FIELDS, read_results
from vafa.report.runner import GridProgress, iter_grid

__all__ = [
    "LIBRARY_VAFA",
    "PAPER_VAFA",
    "QUICK_STEPS",
    "RESULT_FIELDS",
    "GridEntry",
    "GridProgress",
    "ReportGrid",
    "ReportPlan",
    "ReportResult",
    "ReportSettings",
    "format_table",
    "iter_grid",
    "plan_report",
    "plot_attack_bars",
    "plot_setting_curves",
    "read_results",
    "report_grid",
    "run_plan",
    "run_report",
    "summarize",
    "sweep_grid",
    "table1_grid",
    "write_plan_report",
    "write_report",
]
