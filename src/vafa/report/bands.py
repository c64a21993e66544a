"""The perturbation band analysis (:mod:`vafa.run.band_analysis`) as text, report rows, a
Markdown table and a bar plot.

* :func:`format_band_table` — the plain-text table of ``vafa evaluate --bands``;
* :func:`band_rows` — one ``bands.csv`` row per band of an analysis (:data:`BAND_FIELDS`);
* :func:`band_markdown` / :func:`plot_band_bars` — the report's table and figure from those
  rows (means over cases, per model and attack entry).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafa.ops.messages import one_line
from vafa.report.results import ResultsWriter, parse_number, read_results
from vafa.run.band_analysis import ANALYSIS_BANDS, BandAnalysis

__all__ = [
    "BANDS_CSV",
    "BAND_FIELDS",
    "BandRecorder",
    "band_csv",
    "band_markdown",
    "band_rows",
    "format_band_table",
    "plot_band_bars",
    "summarize_bands",
    "write_band_figure",
]

#: The report file of the band analysis and its columns.
BANDS_CSV = "bands.csv"
BAND_FIELDS = (
    "model",
    "case",
    "key",
    "label",
    "status",
    "block",
    "band",
    "energy",
    "energy_fraction",
    "coefficient_fraction",
    "dice_fg_clean",
    "dice_fg",
    "dice_fg_drop",
)
_NUMERIC = BAND_FIELDS[BAND_FIELDS.index("block") :]
_LABELS = {"all": "all (δ)", "low": "low", "middle": "middle", "high": "high"}
#: Bar colours per band (``all``: the attack's red of the other plots).
BAND_COLORS = {"all": "#ee6677", "low": "#4477aa", "middle": "#66ccee", "high": "#ccbb44"}


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_band_table(analysis: BandAnalysis, title: str | None = None) -> str:
    """Plain text: per band the energy, its share, the share of coefficients, fg Dice and the
    drop from clean."""
    block = "×".join(map(str, analysis.block_size))
    reference = "labels" if analysis.reference == "labels" else "the clean prediction"
    lines = [
        title or "Perturbation band analysis",
        f"DCT blocks {block} (zero-padded); fg Dice against {reference}, the model on "
        "clamp(x + band of δ, 0, 1)",
        f"{'band':<10}{'energy':>12}{'energy %':>10}{'coeff. %':>10}{'fg Dice':>9}{'drop':>9}",
    ]
    lines.append("-" * len(lines[-1]))
    for row in analysis.rows:
        drop = "–" if row.dice_fg_drop is None else f"{row.dice_fg_drop:+.3f}"
        lines.append(
            f"{_LABELS[row.band]:<10}{row.energy:>12.4g}{100 * row.energy_fraction:>10.1f}"
            f"{100 * row.coefficient_fraction:>10.1f}{_fmt(row.dice_fg, '.3f'):>9}{drop:>9}"
        )
    lines.append(f"clean fg Dice {_fmt(analysis.dice_fg_clean, '.3f')}")
    lines += _channel_lines(analysis)
    if analysis.cancelled:
        lines.append("CANCELLED: the bands without Dice were not evaluated")
    return "\n".join(lines)


def _channel_lines(analysis: BandAnalysis) -> list[str]:
    """Several input channels: per band, each channel's share of the band's energy (%)."""
    first = analysis.rows[0].channel_energy
    if len(first) < 2:
        return []
    names = analysis.channel_names or tuple(f"channel {c}" for c in range(len(first)))
    width = max(7, *(len(n) + 2 for n in names))
    lines = ["energy % by channel", f"{'band':<10}" + "".join(f"{n:>{width}}" for n in names)]
    for row in analysis.rows:
        shares = [100 * e / row.energy if row.energy > 0 else 0.0 for e in row.channel_energy]
        lines.append(f"{_LABELS[row.band]:<10}" + "".join(f"{v:>{width}.1f}" for v in shares))
    return lines


def band_csv(analysis: BandAnalysis) -> str:
    """CSV rows (no header) in the ``metric,clean,adversarial`` columns of
    :func:`vafa.report.tables.metrics_csv`: per band its fg Dice (clean Dice beside it) and
    its energy fraction."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in analysis.rows:
        clean = "" if analysis.dice_fg_clean is None else analysis.dice_fg_clean
        writer.writerow(
            [f"band {row.band}: fg Dice", clean, "" if row.dice_fg is None else row.dice_fg]
        )
        writer.writerow([f"band {row.band}: energy fraction", "", row.energy_fraction])
    return out.getvalue()


def band_rows(
    analysis: BandAnalysis, *, model: str, case: str, key: str, label: str
) -> list[dict[str, Any]]:
    """One row of :data:`BAND_FIELDS` per band."""
    return [
        {
            "model": model,
            "case": case,
            "key": key,
            "label": label,
            "block": analysis.block_size[0],
            "band": row.band,
            "energy": row.energy,
            "energy_fraction": row.energy_fraction,
            "coefficient_fraction": row.coefficient_fraction,
            "dice_fg_clean": analysis.dice_fg_clean,
            "dice_fg": row.dice_fg,
            "dice_fg_drop": row.dice_fg_drop,
        }
        for row in analysis.rows
    ]


def summarize_bands(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Means over cases of the ``ok`` rows: ``{(model, key): {"label": …, band: {field: mean
    or None}}}``."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        groups.setdefault((row["model"], row["key"], row["band"]), []).append(row)
        labels[row["model"], row["key"]] = str(row.get("label") or row["key"])
    out: dict[tuple[str, str], dict[str, Any]] = {
        ident: {"label": label} for ident, label in labels.items()
    }
    for (model, key, band), members in groups.items():
        means = {}
        for name in _NUMERIC:
            values = [v for v in (parse_number(r.get(name)) for r in members) if v is not None]
            means[name] = float(np.mean(values)) if values else None
        means["cases"] = len(members)
        out[model, key][band] = means
    return out


def band_markdown(rows: Iterable[Mapping[str, Any]], models: Sequence[str]) -> str:
    """Markdown: a line per model × attack entry: clean fg Dice, fg Dice under the whole
    perturbation and its energy ``Σδ²``, then per band its energy share and fg Dice."""
    summary = summarize_bands(rows)
    header = ["model", "attack", "clean fg Dice", "all (δ) fg Dice", "Σδ²"]
    for band in ANALYSIS_BANDS[1:]:
        header += [f"{band} energy %", f"{band} fg Dice"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        for (m, _key), entry in summary.items():
            if m != model:
                continue
            whole = entry.get("all") or {}
            cells = [
                f"`{model}`",
                entry["label"],
                _fmt(whole.get("dice_fg_clean"), ".3f"),
                _fmt(whole.get("dice_fg"), ".3f"),
                _fmt(whole.get("energy"), ".3g"),
            ]
            for band in ANALYSIS_BANDS[1:]:
                values = entry.get(band) or {}
                share = values.get("energy_fraction")
                cells += [_fmt(None if share is None else 100 * share, ".1f"),
                          _fmt(values.get("dice_fg"), ".3f")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_band_bars(axes, rows: Iterable[Mapping[str, Any]], model: str) -> None:
    """Two panels for one model: the bands' shares of the perturbation's energy
    (``axes[0]``) and the fg Dice lost (clean − Dice) with all of δ and with each band alone
    (``axes[1]``), bars grouped by attack entry."""
    summary = {k: v for k, v in summarize_bands(rows).items() if k[0] == model}
    entries = list(summary.values())
    x = np.arange(len(entries))
    width = 0.8 / len(ANALYSIS_BANDS)
    for n, band in enumerate(ANALYSIS_BANDS):
        offset = (n - (len(ANALYSIS_BANDS) - 1) / 2) * width
        share = [(e.get(band) or {}).get("energy_fraction") for e in entries]
        drop = [(e.get(band) or {}).get("dice_fg_drop") for e in entries]
        style = dict(width=width, color=BAND_COLORS[band], label=_LABELS[band])
        if band != "all":  # the whole perturbation is 100 % of its energy
            axes[0].bar(x + offset, [np.nan if v is None else v for v in share], **style)
        axes[1].bar(x + offset, [np.nan if v is None else v for v in drop], **style)
    axes[0].set_ylim(0, 1.0)
    axes[1].axhline(0.0, color="k", lw=0.8)
    labels = ("share of δ's energy", "fg Dice lost (clean − band)")
    for ax, ylabel in zip(axes, labels, strict=True):
        ax.set_xticks(x)
        ax.set_xticklabels([e["label"] for e in entries], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{model}", fontsize=9)
    axes[1].legend(fontsize=7, loc="upper right", ncol=2)


def write_band_figure(out_dir, rows, models: Sequence[str]) -> Path:
    """``bands.png``: :func:`plot_band_bars` for every model with rows (a row of two panels
    each), written atomically."""
    from vafa.io.files import save_figure
    from vafa.report.render import _figure

    shown = [m for m in models if any(r["model"] == m for r in rows)]
    fig = _figure(figsize=(10, 3.2 * max(1, len(shown))), dpi=80)
    axes = np.asarray(fig.subplots(max(1, len(shown)), 2, squeeze=False))
    for row_axes, model in zip(axes[: len(shown)], shown, strict=True):
        plot_band_bars(row_axes, rows, model)
    fig.suptitle("Perturbation bands: energy share, and fg Dice lost with only that band applied")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "bands.png")


class BandRecorder:
    """Runs the band analysis of each finished attack entry (on the model that made it) and
    appends its rows to ``bands.csv``.

    Args:
        out_dir: the report folder.
        models: ``{name: model}``.
        keys: the entry keys analysed (the Table-1 attacks).
        block: side of the analysis blocks.

    Raises:
        ValueError: an existing ``bands.csv`` with other columns (before anything runs).
    """

    def __init__(self, out_dir, models: Mapping[str, Any], keys: Iterable[str], block: int):
        self.path = Path(out_dir) / BANDS_CSV
        self.models = dict(models)
        self.keys = set(keys)
        self.block = int(block)
        self.rows = read_results(self.path, BAND_FIELDS, _NUMERIC)

    def missing(self, model: str, case: str, key: str) -> bool:
        """Whether this entry has no ``ok`` analysis with this block size yet."""
        return key in self.keys and not any(
            (r["model"], r["case"], r["key"], r["status"], r["block"])
            == (model, case, key, "ok", self.block)
            for r in self.rows
        )

    def in_scope(self, models: Sequence[str], cases: Sequence[str]) -> list[dict[str, Any]]:
        """The latest ``ok`` rows of this block size for these models and cases."""
        latest: dict[tuple, dict[str, Any]] = {}
        for row in self.rows:
            if (
                row["status"] == "ok"
                and row["block"] == self.block
                and row["model"] in models
                and row["case"] in cases
            ):
                latest[row["model"], row["case"], row["key"], row["band"]] = dict(row)
        return list(latest.values())

    def record(self, model: str, case: str, entry, outcome, image, labels) -> None:
        """Analyse ``outcome`` (of ``entry`` on ``model``) and append its rows."""
        from vafa.run.band_analysis import analyse_outcome

        if entry.key not in self.keys:
            return
        ident = {"model": model, "case": case, "key": entry.key, "label": entry.label}
        try:
            analysis = analyse_outcome(self.models[model], outcome, labels, block_size=self.block)
            rows = [{**row, "status": "ok"} for row in band_rows(analysis, **ident)]
        except Exception as err:  # a failed analysis must not stop the report
            rows = [{**ident, "status": f"failed: {one_line(err)}", "block": self.block}]
        with ResultsWriter(self.path, BAND_FIELDS) as writer:
            for row in rows:
                writer.write(row)
        self.rows += rows
