"""The attack widget's *Compare attacks* button on the GUI side: start the Table-1 grid in the
widget's worker (:func:`napari_vafa._compare.run_comparison`), grow the table and bars in the
metrics dock as each attack finishes, and sum it up at the end.

:class:`CompareAttacks` is a mixin of :class:`napari_vafa._attack_widget.AttackWidget`: it uses
the widget's inputs, worker, progress bar, plots and status line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_vafa._worker_widget import notify_error

if TYPE_CHECKING:
    from napari_vafa._compare import CompareDone, CompareProgress
    from vafa.report.grid import GridEntry

__all__ = ["CompareAttacks"]


class CompareAttacks:
    """*Compare attacks*: ``compare()`` starts it; the widget routes a
    :class:`~napari_vafa._compare.CompareProgress` to :meth:`_on_compare_progress` and the
    :class:`~napari_vafa._compare.CompareDone` to :meth:`_show_comparison`.

    Attributes:
        last_comparison: the last :class:`~napari_vafa._compare.CompareDone` (None before).
        compare_grid: the :class:`vafa.report.GridEntry` list that *Compare attacks* runs
            (None: the paper's Table 1, quick or full as the check box says).
    """

    last_comparison: CompareDone | None = None
    compare_grid: list[GridEntry] | None = None

    def compare(self, *_: Any) -> bool:
        """Run the paper's Table-1 attacks on the current volume and model in the background;
        the table and bars grow in the metrics dock (returns False when it did not start)."""
        import torch

        from napari_vafa._compare import CompareJob, run_comparison

        if self.is_running:
            return False
        try:
            layer, image, _, labels = self._inputs()
            job = CompareJob(
                image=image,
                labels=labels,
                model=self.model_picker.spec(),
                quick=bool(self.quick_compare.value),
                seed=int(self.seed.value),
                threads=torch.get_num_threads(),
                grid=self.compare_grid,
                through=self.through.value,
            )
        except (ValueError, TypeError, OSError) as err:
            notify_error(f"{self.TITLE}: {err}")
            self.status.value = f"not started: {err}"
            return False
        self.last_comparison = None
        self._comparison_rows = []
        self.plots.start(f"Table 1 on {layer.name}")
        self.status.value = f"loading {job.model.describe()}…"
        self._start_worker(run_comparison, job, self._cache, progress="VAFA: compare attacks")
        return True

    def _on_compare_progress(self, p: CompareProgress) -> None:
        if self._pbar is not None:
            if self._pbar.total != p.total:
                self._pbar.total = p.total
            self._pbar.set_description(f"VAFA compare: {p.label}")
            self._pbar.n = p.index - 1
            self._pbar.refresh()
        if p.row is not None:
            self._comparison_rows.append(p.row)
            self.plots.show_comparison(self._comparison_rows, p.row["model"])
        text = f"comparing attacks: {p.index}/{p.total} {p.label}"
        if p.steps:
            text += f" · step {p.step}/{p.steps}"
        self.status.value = f"{self.CANCEL_TEXT} {text}" if self.cancelling else text

    def _show_comparison(self, result: CompareDone) -> None:
        self.last_comparison = result
        self.plots.show_comparison(result.rows + _worst_case_rows(result), result.model_name)
        done = sum(row["status"] == "ok" for row in result.rows)
        head = "comparison cancelled" if result.cancelled else "comparison done"
        self.status.value = (
            f"{head} in {self._elapsed():.0f} s: {done}/{len(result.entries)} attacks"
        )


def _worst_case_rows(result: CompareDone) -> list[dict[str, Any]]:
    """Table rows of the worst case over the grid's members (:mod:`vafa.report.worst_case`):
    the lowest foreground Dice and which attack reached it, then per class the attack that
    brought that class lowest (table only)."""
    from vafa.report.worst_case import class_winners, worst_cases

    found = worst_cases(result.rows, result.entries)
    if not found or found[0].winner is None:
        return []
    worst = found[0]
    rows = [{"label": f"worst case: {worst.winner}", "status": "ok", "attack": "worst-case",
             "dice_fg": worst.dice_fg}]  # fmt: skip
    for name, (label, dice) in class_winners(result.entries, result.per_class).items():
        rows.append({"label": f"  {name}: {label}", "status": "ok", "dice_fg": dice, "bar": False})
    return rows
