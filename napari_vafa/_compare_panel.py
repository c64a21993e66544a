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

__all__ = ["CompareAttacks"]


class CompareAttacks:
    """*Compare attacks*: ``compare()`` starts it; the widget routes a
    :class:`~napari_vafa._compare.CompareProgress` to :meth:`_on_compare_progress` and the
    :class:`~napari_vafa._compare.CompareDone` to :meth:`_show_comparison`.

    Attributes:
        last_comparison: the last :class:`~napari_vafa._compare.CompareDone` (None before).
    """

    last_comparison: CompareDone | None = None

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
        self.plots.show_comparison(result.rows, result.model_name)
        done = sum(row["status"] == "ok" for row in result.rows)
        head = "comparison cancelled" if result.cancelled else "comparison done"
        self.status.value = (
            f"{head} in {self._elapsed():.0f} s: {done}/{len(result.entries)} attacks"
        )
