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
from typing import Any

import numpy as np

from vafa.report.results import parse_number
from vafa.run.band_analysis import ANALYSIS_BANDS, BandAnalysis

__all__ = [
    "BANDS_CSV",
    "BAND_FIELDS",
    "band_csv",
    "band_markdown",
    "band_rows",
    "format_band_table",
    "plot_band_bars",
    "summarize_bands",
]

#: The report file of the band analysis and its columns.
BANDS_CSV = "bands.csv"
BAND_FIELDS = (
    "model",
    "case",
    "key",
    "label",
    "block",
    "band",
    "energy",
    "energy_fraction",
    "coefficient_fraction",
    "dice_fg_clean",
    "dice_fg",
    "dice_fg_drop",
)
_NUMERIC = BAND_FIELDS[BAND_FIELDS.index("energy") :]
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
    if analysis.cancelled:
        lines.append("CANCELLED: the bands without Dice were not evaluated")
    return "\n".join(lines)


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
    """Means over cases: ``{(model, key): {"label": …, band: {field: mean or None}}}``."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for row in rows:
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
    """Markdown: a line per model × attack entry, per band the energy share and fg Dice."""
    summary = summarize_bands(rows)
    header = ["model", "attack", "clean"]
    for band in ANALYSIS_BANDS:
        header += [f"{_LABELS[band]} energy %", f"{_LABELS[band]} fg Dice"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        for (m, _key), entry in summary.items():
            if m != model:
                continue
            first = next((entry[b] for b in ANALYSIS_BANDS if b in entry), {})
            cells = [f"`{model}`", entry["label"], _fmt(first.get("dice_fg_clean"), ".3f")]
            for band in ANALYSIS_BANDS:
                values = entry.get(band) or {}
                share = values.get("energy_fraction")
                cells += [_fmt(None if share is None else 100 * share, ".1f"),
                          _fmt(values.get("dice_fg"), ".3f")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_band_bars(axes, rows: Iterable[Mapping[str, Any]], model: str) -> None:
    """Two panels for one model: energy share per band (``axes[0]``) and fg Dice with only
    that band applied (``axes[1]``; dashed: clean), bars grouped by attack entry."""
    summary = {k: v for k, v in summarize_bands(rows).items() if k[0] == model}
    entries = list(summary.values())
    x = np.arange(len(entries))
    width = 0.8 / len(ANALYSIS_BANDS)
    for n, band in enumerate(ANALYSIS_BANDS):
        offset = (n - (len(ANALYSIS_BANDS) - 1) / 2) * width
        share = [(e.get(band) or {}).get("energy_fraction") for e in entries]
        dice = [(e.get(band) or {}).get("dice_fg") for e in entries]
        style = dict(width=width, color=BAND_COLORS[band], label=_LABELS[band])
        axes[0].bar(x + offset, [np.nan if v is None else v for v in share], **style)
        axes[1].bar(x + offset, [np.nan if v is None else v for v in dice], **style)
    clean = [(e.get("all") or {}).get("dice_fg_clean") for e in entries if (e.get("all") or {})]
    clean = [c for c in clean if c is not None]
    if clean:
        axes[1].axhline(float(np.mean(clean)), color="k", ls="--", lw=1, label="clean")
    for ax, ylabel in zip(axes, ("share of δ's energy", "fg Dice, only this band"), strict=True):
        ax.set_xticks(x)
        ax.set_xticklabels([e["label"] for e in entries], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{model}", fontsize=9)
    axes[1].legend(fontsize=7, loc="upper right", ncol=3)
