"""Rendering report rows: summary tables (Markdown) and the plots of Tables 1–4."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafa.io.files import save_figure
from vafa.report.grid import (
    SWEEP_TITLES,
    GridEntry,
    ReportGrid,
    format_option,
    sweep_value,
    unique_entries,
)
from vafa.report.results import METRIC_COLUMNS, NUMERIC_FIELDS, parse_number, slice_path


# ----------------------------------------------------------------------------- tables
def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Mean over cases of the ``ok`` rows: ``{(model, key): {metric: mean or None, "cases": n}}``."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault((row["model"], row["key"]), []).append(row)
    out = {}
    for ident, members in groups.items():
        summary: dict[str, Any] = {"cases": len(members)}
        for key in NUMERIC_FIELDS:
            values = [v for v in (parse_number(r.get(key)) for r in members) if v is not None]
            summary[key] = float(np.mean(values)) if values else None
        out[ident] = summary
    return out


def format_table(
    rows: Iterable[Mapping[str, Any]],
    entries: Sequence[GridEntry],
    models: Sequence[str],
    *,
    metrics: Sequence[str] = ("dice_fg", "dice", "hd95", "ssim", "psnr", "linf"),
    setting_header: str = "attack",
) -> str:
    """A Markdown table: a row per entry, for every model the columns ``metrics`` (means over
    cases; ``–`` when missing or failed)."""
    from vafa.report.tables import _num

    summary = summarize(rows)
    names = {key: (title, digits) for key, title, digits in METRIC_COLUMNS}
    multi = len(models) > 1
    header = [setting_header]
    for model in models:
        header += [f"{model} {names[m][0]}" if multi else names[m][0] for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in unique_entries(entries):
        cells = [entry.label if setting_header == "attack" else entry.setting]
        for model in models:
            values = summary.get((model, entry.key)) or {}
            cells += [_num(values.get(m), names[m][1]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def plot_setting_curves(axes, rows, entries: Sequence[GridEntry], table: str, models) -> None:
    """Dice fg (``axes[0]``) and SSIM (``axes[1]``) against a swept setting, a line per model
    (dashed: the model's clean Dice)."""
    summary = summarize(rows)
    _, xlabel, _ = SWEEP_TITLES[table]
    points = sorted((sweep_value(e, table), e.key) for e in entries if e.table == table)
    for n, model in enumerate(models):
        color = f"C{n}"
        xs, dice, ssim = [], [], []
        for x, key in points:
            values = summary.get((model, key))
            if values is not None and values["dice_fg"] is not None:
                xs.append(x)
                dice.append(values["dice_fg"])
                ssim.append(values["ssim"] if values["ssim"] is not None else np.nan)
        if not xs:
            continue
        axes[0].plot(xs, dice, "o-", color=color, label=model)
        axes[1].plot(xs, ssim, "o-", color=color, label=model)
        clean = (summary.get((model, "clean")) or {}).get("dice_fg")
        if clean is not None:
            axes[0].axhline(clean, color=color, ls="--", lw=1, label=f"{model} clean")
    for ax, name in zip(axes, ("foreground Dice", "SSIM"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        if table == "block":
            ax.set_xscale("log", base=2)
        ax.set_xticks([x for x, _ in points])
        ax.set_xticklabels([format_option(x) for x, _ in points])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


def plot_attack_bars(ax, rows, entries: Sequence[GridEntry], models, metric="dice_fg") -> None:
    """Grouped bars: ``metric`` per entry (x) and model (colour)."""
    summary = summarize(rows)
    entries = unique_entries(entries)
    x = np.arange(len(entries))
    width = 0.8 / max(1, len(models))
    for n, model in enumerate(models):
        values = [(summary.get((model, e.key)) or {}).get(metric) for e in entries]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (n - (len(models) - 1) / 2) * width, heights, width, label=model)
    ax.set_xticks(x)
    ax.set_xticklabels([e.label for e in entries], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.15)  # room for the legend above the bars
    ax.set_ylabel({"dice_fg": "foreground Dice", "dice": "DSC", "ssim": "SSIM"}.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right", ncol=len(models))


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def write_plots(
    out_dir, rows, models, sweep_models, cases, settings, grid: ReportGrid
) -> dict[str, Path]:
    """The report's PNGs: the sweep curves (``settings.sweeps``), the Table-1 bars and the
    qualitative figure (when slices were kept); returns ``{name: path}``."""
    paths: dict[str, Path] = {}
    if settings.sweeps:
        for table, (_, _, filename) in SWEEP_TITLES.items():
            fig = _figure(figsize=(10, 4), dpi=90)
            axes = fig.subplots(1, 2)
            plot_setting_curves(axes, rows, grid.sweeps, table, sweep_models)
            fig.suptitle(SWEEP_TITLES[table][0])
            fig.tight_layout()
            paths[table] = save_figure(fig, out_dir / filename)
    table1 = grid.table1
    fig = _figure(figsize=(11, 7), dpi=90)
    top, bottom = fig.subplots(2, 1)
    plot_attack_bars(top, rows, table1, models, "dice_fg")
    plot_attack_bars(bottom, rows, table1, models, "ssim")
    fig.suptitle("Table 1: foreground Dice and SSIM under each attack")
    fig.tight_layout()
    paths["table1_bars"] = save_figure(fig, out_dir / "table1_bars.png")
    qualitative = _qualitative(out_dir, rows, table1, models, cases[0][0])
    if qualitative is not None:
        paths["qualitative"] = qualitative
    return paths


def _qualitative(out_dir, rows, entries, models, case) -> Path | None:
    """The paper's Fig. 2: one case, a column per attack, per model the (attacked) image and
    its prediction over it; the ground truth in the first column when labels exist."""
    from matplotlib.colors import ListedColormap

    from vafa.report.figures import label_colors

    summary = summarize(r for r in rows if r["case"] == case)
    panels: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for model in models:
        for entry in entries:
            path = slice_path(out_dir, model, case, entry.key)
            if path.is_file():
                with np.load(path) as data:
                    panels[model, entry.key] = {k: data[k] for k in data.files}
    if not panels:
        return None
    columns = [e for e in entries if any((m, e.key) in panels for m in models)]
    has_truth = any("labels" in p for p in panels.values())
    n_cols = len(columns) + has_truth
    n_classes = 1 + max(
        int(p[k].max()) for p in panels.values() for k in ("prediction", "labels") if k in p
    )
    cmap = ListedColormap(label_colors(max(n_classes, 2)))
    style = dict(cmap=cmap, vmin=0, vmax=max(n_classes, 2) - 1, interpolation="nearest")
    fig = _figure(figsize=(1.9 * n_cols, 2.0 * 2 * len(models) + 0.6), dpi=90)
    axes = np.asarray(fig.subplots(2 * len(models), n_cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for m, model in enumerate(models):
        image_ax, pred_ax = axes[2 * m], axes[2 * m + 1]
        image_ax[0].set_ylabel(f"{model}\nimage", fontsize=8)
        pred_ax[0].set_ylabel(f"{model}\nprediction", fontsize=8)
        clean = panels.get((model, "clean"))
        if clean is not None and "labels" in clean:
            image_ax[0].imshow(clean["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred_ax[0].imshow(clean["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            truth = np.ma.masked_equal(clean["labels"].T, 0)
            pred_ax[0].imshow(truth, origin="lower", alpha=0.8, **style)
            image_ax[0].set_title("ground truth", fontsize=8)
        for j, entry in enumerate(columns, int(has_truth)):
            panel = panels.get((model, entry.key))
            if panel is None:
                continue
            image_ax[j].imshow(panel["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred_ax[j].imshow(panel["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred = np.ma.masked_equal(panel["prediction"].T, 0)
            pred_ax[j].imshow(pred, origin="lower", alpha=0.8, **style)
            dice = (summary.get((model, entry.key)) or {}).get("dice_fg")
            title = entry.label if dice is None else f"{entry.label}\nDice {dice:.3f}"
            image_ax[j].set_title(title, fontsize=8)
    index = next(int(p["index"]) for p in panels.values())
    fig.suptitle(f"{case}: axial slice {index} (model grid)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "qualitative.png")
