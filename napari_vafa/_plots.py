"""Matplotlib canvases docked in napari: live attack curve, per-class Dice, perturbation numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import MaxNLocator
from qtpy.QtWidgets import QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

if TYPE_CHECKING:  # the plugin imports the library (and torch) only when it runs
    from vafa.run.outcome_metrics import OutcomeMetrics

__all__ = ["COMPARISON_COLUMNS", "MetricsPlot", "summary_text"]

CLEAN_COLOR = "#4477aa"
ADVERSARIAL_COLOR = "#ee6677"
LOSS_COLOR = "#228833"


#: Columns of the comparison table: (row key, header, format).
COMPARISON_COLUMNS = (
    ("dice_fg", "fg Dice", "{:.3f}"),
    ("dice", "DSC", "{:.3f}"),
    ("hd95", "HD95 mm", "{:.1f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("psnr", "PSNR dB", "{:.1f}"),
    ("linf", "L∞ /255", "{:.1f}"),
)


class MetricsPlot(QWidget):
    """Two canvases: the live curve (objective and Dice per step) and, after a run, Dice per
    class clean vs adversarial with a text line of SSIM / PSNR / L∞.

    The live curve is blitted: a step redraws only its two lines over a cached background
    (about 1 ms) instead of the whole figure (60–150 ms of GUI time on a small CPU, several
    times that while the attack keeps the cores busy); the axes are redrawn only when a value
    leaves the current limits. Call :meth:`start` before a run, :meth:`add_step` for every
    step and :meth:`show_outcome` with the run's metrics.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(parent)
        self.curve_figure = Figure(figsize=(4.2, 1.9), dpi=80)
        self.result_figure = Figure(figsize=(4.2, 3.4), dpi=80)
        self.curve_figure.subplots_adjust(left=0.17, right=0.83, bottom=0.22, top=0.87)
        self.result_figure.subplots_adjust(left=0.13, right=0.98, bottom=0.4, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.curve_figure)
        self.result_canvas = FigureCanvasQTAgg(self.result_figure)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for canvas, height in ((self.canvas, 140), (self.result_canvas, 230)):
            canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
            canvas.setMinimumHeight(height)
            layout.addWidget(canvas, stretch=height)
        self.table = QTableWidget(0, len(COMPARISON_COLUMNS) + 1, self)
        self.table.setHorizontalHeaderLabels(["attack", *(t for _, t, _ in COMPARISON_COLUMNS)])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(120)
        self.table.hide()  # shown by show_comparison
        layout.addWidget(self.table, stretch=120)
        self.ax_curve = self.curve_figure.add_subplot()
        self.ax_dice = self.ax_curve.twinx()
        self.ax_bars = self.result_figure.add_subplot()
        self._text = self.result_figure.text(
            0.02, 0.02, "", ha="left", va="bottom", fontsize=8, family="monospace"
        )
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.dices: list[float] = []
        self.summary = ""
        self.full_redraws = 0
        self._background = None
        (self._loss_line,) = self.ax_curve.plot([], [], color=LOSS_COLOR, marker=".")
        (self._dice_line,) = self.ax_dice.plot([], [], color=ADVERSARIAL_COLOR, marker=".")
        # the step the scrubber shows (a vertical line; hidden until it is used)
        self._marker = self.ax_curve.axvline(0, color="#555555", linestyle="--", linewidth=1)
        self._marker.set_visible(False)
        for line in (self._loss_line, self._dice_line, self._marker):
            line.set_animated(True)  # drawn by _draw_lines, not by a full draw
        self.ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ax_curve.set_xlabel("step", fontsize=8)
        self.ax_curve.set_ylabel("objective (scaled)", fontsize=8, color=LOSS_COLOR)
        self.ax_curve.tick_params(axis="y", left=False, labelleft=False)
        self.ax_dice.set_ylabel("fg Dice", fontsize=8, color=ADVERSARIAL_COLOR)
        self.ax_dice.set_ylim(0, 1.02)
        for ax in (self.ax_curve, self.ax_dice):
            ax.tick_params(labelsize=7)
        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.start()
        self._warm_up_text()

    # ------------------------------------------------------------------ updates
    def start(self, title: str = "", total_steps: int | None = None) -> None:
        """Clear the panels for a new run (``total_steps``: x range, if known)."""
        self.table.hide()
        self.steps.clear()
        self.losses.clear()
        self.dices.clear()
        self._loss_line.set_data([], [])
        self._dice_line.set_data([], [])
        self._marker.set_visible(False)
        self.ax_curve.set_title(title or "attack progress", fontsize=9)
        self.ax_curve.set_xlim(0.5, max(total_steps or 1, 2) + 0.5)
        self.ax_curve.set_ylim(0.0, 1.0)
        self.canvas.draw_idle()
        if self.summary or self.ax_bars.patches:
            self._draw_bars(None)
            self._set_text("")
            self.result_canvas.draw_idle()
        elif not self.ax_bars.texts:
            self._draw_bars(None)

    def add_step(self, step: float, loss: float, dice: float) -> None:
        """Append one step (global index across tiles): blit, or redraw if the limits grow."""
        self.steps.append(step)
        self.losses.append(loss if _finite(loss) else math.nan)
        self.dices.append(dice if _finite(dice) else math.nan)
        self._loss_line.set_data(self.steps, self.losses)
        self._dice_line.set_data(self.steps, self.dices)
        if self._grow_limits(step, loss) or self._background is None:
            self.canvas.draw_idle()
        else:
            self._blit()

    def mark_step(self, step: float | None) -> None:
        """A dashed line at ``step`` of the curve (the step scrubber's position; None hides
        it), blitted like the curve."""
        self._marker.set_visible(step is not None)
        if step is not None:
            self._marker.set_xdata([step, step])
        if self._background is not None:
            self._blit()

    def show_outcome(self, metrics: OutcomeMetrics) -> None:
        """Dice bars per class and the perturbation numbers of a finished run."""
        self.table.hide()
        self._draw_bars(metrics)
        self._set_text(summary_text(metrics))
        self.result_canvas.draw_idle()

    def show_comparison(self, rows: Sequence[Mapping[str, Any]], model_name: str) -> None:
        """The "Compare attacks" result: foreground Dice per attack (bars) and a table of
        Dice, HD95, SSIM, PSNR and L∞ (rows of :func:`vafa.report.iter_grid` with ``label``;
        failed rows show their status). Rows with ``"bar": False`` are in the table only
        (e.g. the lowest Dice per class)."""
        ok = [row for row in rows if row.get("status") == "ok" and row.get("bar", True)]
        ax = self.ax_bars
        ax.clear()
        x = range(len(ok))
        colors = [CLEAN_COLOR if row["attack"] == "clean" else ADVERSARIAL_COLOR for row in ok]
        ax.bar(x, [row.get("dice_fg") or 0.0 for row in ok], 0.7, color=colors)
        ax.set_xticks(list(x))
        ax.set_xticklabels([row["label"] for row in ok], rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("fg Dice", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"Table 1 · {model_name}", fontsize=8)
        self._set_text("")
        self.result_canvas.draw_idle()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row["label"]]
            for key, _, fmt in COMPARISON_COLUMNS:
                value = row.get(key)
                if key == "linf" and _finite(value):
                    value = value * 255
                cells.append(fmt.format(value) if _finite(value) else "–")
            if row.get("status") != "ok":
                cells[1] = str(row.get("status"))
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.table.show()

    # ------------------------------------------------------------------ drawing
    def set_total(self, total: int) -> None:
        """Fix the x range to ``total`` steps (all tiles); redraws only when it changes."""
        if self.ax_curve.get_xlim() != (0.5, max(total, 2) + 0.5):
            self.ax_curve.set_xlim(0.5, max(total, 2) + 0.5)
            self.canvas.draw_idle()

    def _grow_limits(self, step: float, loss: float) -> bool:
        """Widen the step axis when a point falls outside (True: the axes need a redraw).

        The objective axis has no tick labels (its value is in the widget's status line), so
        rescaling it to the data needs no redraw of the axes: the blit does it.
        """
        finite = [v for v in self.losses if _finite(v)]
        if finite:
            lo, hi = min(finite), max(finite)
            pad = 0.1 * (hi - lo) + 0.02 * max(abs(hi), abs(lo)) + 1e-6
            self.ax_curve.set_ylim(lo - pad, hi + pad)
        low, high = self.ax_curve.get_xlim()
        if step > high - 0.5:
            self.ax_curve.set_xlim(low, 2 * step + 0.5)
            return True
        return False

    def _on_full_draw(self, _event) -> None:
        self.full_redraws += 1
        self._background = self.canvas.copy_from_bbox(self.curve_figure.bbox)
        self._draw_lines()

    def _draw_lines(self) -> None:
        self.ax_curve.draw_artist(self._loss_line)
        self.ax_dice.draw_artist(self._dice_line)
        if self._marker.get_visible():
            self.ax_curve.draw_artist(self._marker)

    def _blit(self) -> None:
        """Redraw only the lines into the canvas buffer; shown with the next paint (``update``,
        not matplotlib's ``blit``, whose synchronous ``repaint`` makes Qt compose the whole
        window once more per step — costly under software OpenGL)."""
        self.canvas.restore_region(self._background)
        self._draw_lines()
        self.canvas.update()

    def _draw_bars(self, metrics: OutcomeMetrics | None) -> None:
        """Dice per class clean vs adversarial (None: no run yet, a hint instead)."""
        ax = self.ax_bars
        ax.clear()
        clean, adversarial, names = {}, {}, []
        if metrics is not None:
            clean = metrics.dice_per_class.clean or {}
            adversarial = metrics.dice_per_class.adversarial or {}
            names = [
                n
                for n in (metrics.class_names or list(clean))
                if n != "background" and clean.get(n) is not None
            ]
        x = list(range(len(names)))
        ax.bar([i - 0.2 for i in x], [clean.get(n) or 0.0 for n in names], 0.4,
               color=CLEAN_COLOR, label="clean")  # fmt: skip
        ax.bar([i + 0.2 for i in x], [adversarial.get(n) or 0.0 for n in names], 0.4,
               color=ADVERSARIAL_COLOR, label="adversarial")  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("Dice per class", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if names:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "run an attack", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="gray")  # fmt: skip

    @staticmethod
    def _warm_up_text() -> None:
        """Draw, off screen, text like the Dice chart's (rotated 6-point class names, 7- and
        8-point labels): matplotlib finds and loads the fonts and glyphs once, here, while
        the widget is being built, instead of in the first run's result (measured: a 200 ms
        GUI stall when the first run's chart was drawn)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.2, 3.4), dpi=80)
        ax = figure.add_subplot()
        names = ["spleen", "right kidney", "left kidney", "liver", "inferior vena cava"]
        ax.bar(range(len(names)), [0.5] * len(names), label="clean")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("Dice per class", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
        ax.text(0.5, 0.5, "Dice 0.890 → 0.777 · SSIM 0.979", fontsize=7)
        FigureCanvasAgg(figure).draw()

    def _set_text(self, text: str) -> None:
        self.summary = text
        self._text.set_text(text)


def summary_text(metrics: OutcomeMetrics) -> str:
    """Two or three lines: Dice clean → adversarial, SSIM / PSNR / L∞, attack settings."""
    lines = []
    fg = metrics.dice_fg
    if fg.clean is not None and fg.adversarial is not None:
        lines.append(f"fg Dice {fg.clean:.3f} → {fg.adversarial:.3f}")
    parts = []
    if metrics.ssim is not None:
        parts.append(f"SSIM {metrics.ssim:.3f}")
    if metrics.psnr is not None:
        parts.append(f"PSNR {metrics.psnr:.1f} dB")
    if metrics.linf is not None:
        parts.append(f"L∞ {metrics.linf * 255:.1f}/255")
    if parts:
        lines.append(" · ".join(parts))
    settings = [str(metrics.attack or "")]
    if metrics.normalize:
        settings.append(f"normalize={metrics.normalize}")
    if metrics.zeroed_fraction is not None:
        settings.append(f"zeroed {100 * metrics.zeroed_fraction:.0f}%")
    if metrics.cancelled:
        settings.append("CANCELLED")
    lines.append(" · ".join(s for s in settings if s))
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
