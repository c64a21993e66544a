"""The "which frequencies fooled the model?" panel of the metrics dock: the perturbation band
analysis (:mod:`vafa.run.band_analysis`) of the last attack as a small bar chart.

After an attack, the perturbation ``δ = adversarial − clean`` is split by DCT band (low / middle /
high, :mod:`vafa.ops.bands`) and the model is run on the clean volume plus one band of ``δ`` at a
time. The bars show the foreground Dice *lost* (clean − Dice) with all of ``δ`` (the attack
itself) and with each band alone, each labelled with its Dice and the band's share of ``δ``'s
energy: a tall bar means that band alone does much of the damage.

The analysis runs in the attack's worker thread, right after the attack
(:func:`run_job_with_bands`), never on the GUI thread; Cancel stops it between bands.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_vafa._worker import JobDone, ModelCache, run_job

__all__ = ["BAND_BLOCKS", "BandsJobDone", "BandsPanel", "run_job_with_bands"]

#: Block sides offered for the analysis (32: VAFA's default block).
BAND_BLOCKS = (8, 16, 32)
_COLORS = {"all": "#ee6677", "low": "#4477aa", "middle": "#66ccee", "high": "#ccbb44"}
_NAMES = {"all": "all (δ)", "low": "low", "middle": "middle", "high": "high"}


@dataclass
class BandsJobDone(JobDone):
    """A finished attack run with its band analysis.

    Attributes:
        bands: the :class:`vafa.run.band_analysis.BandAnalysis`, or None when it failed.
        bands_error: one line saying why it failed, else None.
    """

    bands: Any = None
    bands_error: str | None = None


def run_job_with_bands(
    job, cancel: threading.Event, cache: ModelCache, block_size: int | None
) -> Generator[Any, Any, Any]:
    """:func:`napari_vafa._worker.run_job`, then (``block_size`` set, run not cancelled) the
    band analysis of its outcome in the same worker thread; returns a :class:`BandsJobDone`
    (or what ``run_job`` returned). Never raises."""
    done = yield from run_job(job, cancel, cache)
    if block_size is None or not isinstance(done, JobDone) or cancel.is_set():
        return done
    from vafa.ops.messages import one_line
    from vafa.run.band_analysis import analyse_outcome

    fields = {name: getattr(done, name) for name in JobDone.__dataclass_fields__}
    try:
        model, _ = cache.get(job.model)
        analysis = analyse_outcome(
            model,
            done.outcome,
            job.labels,
            block_size=block_size,
            callback=lambda _band: not cancel.is_set(),
        )
        return BandsJobDone(**fields, bands=analysis)
    except Exception as err:  # the attack's result is still shown
        return BandsJobDone(**fields, bands_error=one_line(err))


class BandsPanel(QWidget):
    """Bar chart of the band analysis, with an on/off switch and the block size.

    Attributes:
        enabled: the "analyse bands after each run" check box.
        block: the block-size combo box (:data:`BAND_BLOCKS`).
        analysis: the :class:`~vafa.run.band_analysis.BandAnalysis` shown, or None.
        bars: ``{band: matplotlib Rectangle}`` of the bars drawn.
        message: the text shown instead of / under the bars.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(parent)
        self.enabled = QCheckBox("which frequencies fooled the model? (band analysis)")
        self.enabled.setChecked(False)  # opt-in: it adds 4 predictions to every run
        self.enabled.setToolTip(
            "After each attack, split the perturbation by DCT band (low / middle / high, thirds "
            "of the normalised index within a block) and run the model on the clean volume plus "
            "one band at a time: 4 more predictions, in the background."
        )
        self.block = QComboBox()
        for side in BAND_BLOCKS:
            self.block.addItem(f"{side}³ blocks", side)
        self.block.setCurrentIndex(BAND_BLOCKS.index(32))
        self.block.setToolTip("DCT block side of the analysis (32³: VAFA's default block)")
        row = QHBoxLayout()
        row.addWidget(self.enabled, stretch=1)
        row.addWidget(self.block)
        self.figure = Figure(figsize=(4.2, 2.3), dpi=80)
        self.figure.subplots_adjust(left=0.13, right=0.98, bottom=0.16, top=0.86)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.canvas, stretch=1)
        layout.addWidget(self.note)
        self.ax = self.figure.add_subplot()
        self.analysis = None
        self.bars: dict[str, Any] = {}
        self.message = ""
        self.block.setEnabled(False)
        self.enabled.toggled.connect(lambda on: self.block.setEnabled(on))
        self.clear("tick the box, run an attack: the band analysis follows it")

    def block_size(self) -> int | None:
        """The analysis block side, or None when the analysis is switched off."""
        return int(self.block.currentData()) if self.enabled.isChecked() else None

    def clear(self, message: str) -> None:
        """No bars, only ``message``."""
        self.analysis = None
        self.bars = {}
        self.ax.clear()
        self.ax.set_axis_off()
        self.ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=8, color="gray",
                     transform=self.ax.transAxes, wrap=True)  # fmt: skip
        self._set_note(message)
        self.canvas.draw_idle()

    def start(self) -> None:
        """A run starts."""
        if self.block_size() is None:
            self.clear("band analysis off")
        else:
            self.clear(f"band analysis ({self.block_size()}³ blocks) runs after the attack…")

    def show_result(self, done) -> None:
        """Show the analysis of a finished run (or why there is none)."""
        analysis = getattr(done, "bands", None)
        if analysis is not None:
            self.show_analysis(analysis)
        elif getattr(done, "bands_error", None):
            self.clear(f"band analysis failed: {done.bands_error}")
        elif self.block_size() is None:
            self.clear("band analysis off")
        else:
            self.clear("no band analysis (the run was cancelled)")

    def show_analysis(self, analysis) -> None:
        """Four bars: fg Dice lost with all of δ and with each band alone; Dice and energy
        share on top."""
        from vafa.run.band_analysis import ANALYSIS_BANDS

        self.analysis = analysis
        ax = self.ax
        ax.clear()
        ax.set_axis_on()
        heights = [analysis.row(b).dice_fg_drop for b in ANALYSIS_BANDS]
        drawn = ax.bar(
            range(len(ANALYSIS_BANDS)),
            [0.0 if h is None else h for h in heights],
            0.65,
            color=[_COLORS[b] for b in ANALYSIS_BANDS],
        )
        self.bars = dict(zip(ANALYSIS_BANDS, drawn, strict=True))
        top = max([h for h in heights if h is not None] + [0.01])
        for bar, band in zip(drawn, ANALYSIS_BANDS, strict=True):
            row = analysis.row(band)
            text = "not run"
            if row.dice_fg is not None:
                text = f"Dice {row.dice_fg:.3f}\n{100 * row.energy_fraction:.0f} % energy"
            ax.text(bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0) + 0.02 * top,
                    text, ha="center", va="bottom", fontsize=7)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(ANALYSIS_BANDS)))
        ax.set_xticklabels([_NAMES[b] for b in ANALYSIS_BANDS], fontsize=8)
        ax.set_ylim(min(0.0, *(h or 0.0 for h in heights)), 1.45 * top)
        ax.set_ylabel("fg Dice lost", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        block = "×".join(map(str, analysis.block_size))
        clean = analysis.dice_fg_clean
        clean_text = "–" if clean is None or not math.isfinite(clean) else f"{clean:.3f}"
        ax.set_title(f"which frequencies fooled the model? clean Dice {clean_text}, {block} "
                     "DCT blocks", fontsize=8)  # fmt: skip
        lowest = min(
            (b for b in ANALYSIS_BANDS[1:] if analysis.row(b).dice_fg is not None),
            key=lambda b: analysis.row(b).dice_fg,  # the lowest Dice: the most lost
            default=None,
        )
        note = "" if lowest is None else f"alone, the {lowest} band hurts most"
        if analysis.cancelled:
            note = "cancelled: some bands were not evaluated"
        self._set_note(note)
        self.canvas.draw_idle()

    def _set_note(self, text: str) -> None:
        self.message = text
        self.note.setText(text)
