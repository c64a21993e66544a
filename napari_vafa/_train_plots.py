"""Live matplotlib canvas of the VAFT widget: training losses and validation Dice.

Two stacked panels sharing the iteration axis: the loss of every update (the total and, for
``vafa-fr``, its terms) and the validation foreground Dice, clean and under the training
attack. Points arrive in batches from the worker's progress records; the canvas redraws at
most every ``MIN_REDRAW_INTERVAL`` seconds, and a redraw is a blit of the lines over a cached
background (a few ms) unless a value leaves the axes' limits (then one full draw).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_vafa._plots import ADVERSARIAL_COLOR, CLEAN_COLOR, LOSS_COLOR, _finite

__all__ = ["MIN_REDRAW_INTERVAL", "TrainingPlot"]

#: Least seconds between two redraws of the curves (at most ~5 per second).
MIN_REDRAW_INTERVAL = 0.2
#: Loss terms drawn for each mode besides the total (the total is the only term otherwise).
LOSS_TERMS = {"vafa-fr": ("clean", "adv", "fr")}
TERM_STYLE = {
    "loss": {"color": LOSS_COLOR, "lw": 1.6, "label": "total"},
    "clean": {"color": CLEAN_COLOR, "lw": 0.9, "label": "clean"},
    "adv": {"color": ADVERSARIAL_COLOR, "lw": 0.9, "label": "adversarial"},
    "fr": {"color": "#999999", "lw": 0.9, "ls": "--", "label": "fr"},
}


class TrainingPlot(QWidget):
    """Losses per iteration (top) and validation Dice per round (bottom), updated live.

    Call :meth:`start` before a run, :meth:`add_losses` / :meth:`add_validation` as points
    arrive (they schedule a throttled redraw) and :meth:`flush` to draw at once.

    Attributes:
        iterations, losses: the iteration and loss terms of every update received.
        val_iterations, dice_clean, dice_adv, dice_adv_tiles: the validation rounds received
            (``dice_adv_tiles``: foreground Dice of the attacked tiles' own predictions).
        redraws: redraws done (blits and full draws); full_redraws: full draws only.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(parent)
        self.figure = Figure(figsize=(4.2, 3.6), dpi=80)
        self.figure.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.84, hspace=0.4)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(260)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.ax_loss, self.ax_dice = self.figure.subplots(2, 1, sharex=True)
        self.iterations: list[int] = []
        self.losses: list[dict[str, float]] = []
        self.val_iterations: list[int] = []
        self.dice_clean: list[float] = []
        self.dice_adv: list[float] = []
        self.dice_adv_tiles: list[float] = []
        self.redraws = 0
        self.full_redraws = 0
        self._terms: tuple[str, ...] = ("loss",)
        self._loss_lines: dict[str, Any] = {}
        self._background = None
        self._last_draw = -math.inf
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        (self._clean_line,) = self.ax_dice.plot(
            [], [], color=CLEAN_COLOR, marker="o", ms=4, label="clean"
        )
        (self._adv_line,) = self.ax_dice.plot(
            [], [], color=ADVERSARIAL_COLOR, marker="o", ms=4, label="under attack"
        )
        (self._tiles_line,) = self.ax_dice.plot(
            [], [], color=ADVERSARIAL_COLOR, marker="s", ms=4, ls=":",
            label="under attack, attacked tiles",
        )  # fmt: skip
        for line in (self._clean_line, self._adv_line, self._tiles_line):
            line.set_animated(True)
        self.ax_dice.set_ylim(0, 1.02)
        self.ax_dice.set_xlabel("iteration", fontsize=8)
        self.ax_dice.set_ylabel("val fg Dice", fontsize=8)
        self.ax_loss.set_ylabel("loss", fontsize=8)
        for ax in (self.ax_loss, self.ax_dice):
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.25, lw=0.5)
        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.start()

    # ------------------------------------------------------------------ updates
    def start(self, title: str = "", total: int | None = None, mode: str = "") -> None:
        """Clear the curves for a new run (``total``: iterations planned, if known)."""
        self._timer.stop()
        for values in (
            self.iterations,
            self.losses,
            self.val_iterations,
            self.dice_clean,
            self.dice_adv,
            self.dice_adv_tiles,
        ):
            values.clear()
        for line in self._loss_lines.values():
            line.remove()
        self._terms = ("loss", *LOSS_TERMS.get(mode, ()))
        self._loss_lines = {}
        for term in self._terms:
            (line,) = self.ax_loss.plot([], [], **TERM_STYLE[term])
            line.set_animated(True)
            self._loss_lines[term] = line
        self._clean_line.set_data([], [])
        for line in (self._adv_line, self._tiles_line):  # the widget validates every mode
            line.set_data([], [])  # under attack (a clean run under VAFA)
        self.figure.suptitle(title or "VAFT training", fontsize=9)
        self.ax_loss.set_ylim(0.0, 1.0)
        self.ax_loss.set_xlim(*_xlim(total or 1))
        self._legends()
        self._background = None
        self.canvas.draw_idle()

    def set_total(self, total: int) -> None:
        """Fix the iteration axis to ``[0, total]`` (a full redraw only when it changes)."""
        if total > 0 and self.ax_loss.get_xlim() != _xlim(total):
            self.ax_loss.set_xlim(*_xlim(total))
            self._background = None
            self._schedule()

    def add_losses(self, iteration: int, losses: Mapping[str, float]) -> None:
        """Append the loss terms of one update."""
        self.iterations.append(int(iteration))
        self.losses.append({k: float(v) for k, v in losses.items()})
        self._schedule()

    def add_validation(self, iteration: int, validation: Mapping[str, Any]) -> None:
        """Append one validation round (``dice_fg_clean``, ``dice_fg_adv``)."""
        self.val_iterations.append(int(iteration))
        self.dice_clean.append(_value(validation.get("dice_fg_clean")))
        self.dice_adv.append(_value(validation.get("dice_fg_adv")))
        self.dice_adv_tiles.append(_value(validation.get("dice_fg_adv_tiles")))
        self._schedule()

    def flush(self) -> None:
        """Draw the points received so far now."""
        self._timer.stop()
        self._last_draw = time.perf_counter()
        self.redraws += 1
        for term, line in self._loss_lines.items():
            line.set_data(self.iterations, [_value(v.get(term)) for v in self.losses])
        self._clean_line.set_data(self.val_iterations, self.dice_clean)
        self._adv_line.set_data(self.val_iterations, self.dice_adv)
        self._tiles_line.set_data(self.val_iterations, self.dice_adv_tiles)
        if self._grow_limits() or self._background is None:
            self.canvas.draw_idle()
        else:
            self._blit()

    # ------------------------------------------------------------------ drawing
    def _schedule(self) -> None:
        if self._timer.isActive():
            return
        wait = max(0.0, MIN_REDRAW_INTERVAL - (time.perf_counter() - self._last_draw))
        self._timer.start(int(1000 * wait))

    def _grow_limits(self) -> bool:
        """Widen the axes when a point falls outside (True: they need a full redraw)."""
        grown = False
        high = max((v for row in self.losses for v in row.values() if _finite(v)), default=0.0)
        top = self.ax_loss.get_ylim()[1]
        if high > top:
            self.ax_loss.set_ylim(0.0, 1.15 * high)
            grown = True
        last = max(self.iterations[-1:] + self.val_iterations[-1:], default=0)
        right = self.ax_loss.get_xlim()[1]
        if last > right:
            self.ax_loss.set_xlim(*_xlim(2 * last))
            grown = True
        return grown

    def _legends(self) -> None:
        """Legends from proxy lines (a legend copies its lines' "animated" flag, and animated
        artists are left out of full draws)."""
        from matplotlib.lines import Line2D

        if len(self._terms) > 1:
            _legend_above(self.ax_loss, [Line2D([], [], **TERM_STYLE[t]) for t in self._terms], 4)
        elif self.ax_loss.get_legend() is not None:
            self.ax_loss.get_legend().remove()
        lines = [self._clean_line]
        lines += [line for line in (self._adv_line, self._tiles_line) if line.get_visible()]
        handles = [
            Line2D(
                [], [], color=line.get_color(), marker=line.get_marker(), ms=4,
                ls=line.get_linestyle(), label=line.get_label(),
            )
            for line in lines
        ]  # fmt: skip
        _legend_above(self.ax_dice, handles, 2)

    def _on_full_draw(self, _event) -> None:
        self.full_redraws += 1
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_lines()

    def _draw_lines(self) -> None:
        for line in self._loss_lines.values():
            self.ax_loss.draw_artist(line)
        self.ax_dice.draw_artist(self._clean_line)
        for line in (self._adv_line, self._tiles_line):
            if line.get_visible():
                self.ax_dice.draw_artist(line)

    def _blit(self) -> None:
        self.canvas.restore_region(self._background)
        self._draw_lines()
        self.canvas.blit(self.figure.bbox)


def _xlim(total: float) -> tuple[float, float]:
    """Iteration axis ``[0, total]`` with a small margin (end points stay clear of the frame)."""
    return (0.0, max(float(total), 1.0) * 1.03 + 0.1)


def _value(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _legend_above(ax, handles, ncol: int) -> None:
    """A small frameless legend in one row above the axes."""
    ax.legend(
        handles=handles,
        fontsize=6,
        loc="lower left",
        ncol=ncol,
        bbox_to_anchor=(0.0, 1.0),
        frameon=False,
        borderaxespad=0.1,
    )
