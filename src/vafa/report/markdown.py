"""``report.md``: the report's text, tables, plots and the trends it reads from the rows."""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vafa.io.datalist import image_files
from vafa.io.files import write_text
from vafa.report.grid import (
    FULL_STEPS,
    LIBRARY_VAFA,
    QUICK_STEPS,
    SWEEP_TITLES,
    ReportGrid,
    ReportSettings,
    format_option,
    sweep_value,
)
from vafa.report.render import format_table, summarize, write_plots
from vafa.report.results import REPORT_MD
from vafa.report.worst_case import worst_case_markdown


# ----------------------------------------------------------------------------- report.md
def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    models: Sequence[tuple[str, str]],
    cases: Sequence[tuple[str, Path, Path | None]],
    settings: ReportSettings,
    *,
    grid: ReportGrid | None = None,
    transfer_rows: Sequence[Mapping[str, Any]] | None = None,
    band_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``report.md`` and the plots from result rows (e.g. :func:`read_results`).

    Args:
        out_dir: the report folder (holds ``slices/`` for the qualitative figure).
        rows: result rows (one per model × case × entry).
        models: ``(name, description)`` in report order.
        cases: ``(name, image path, labels path or None)``; the first is the figure's case.
        settings: how the grid was run.
        grid: the grid run (its tables); None: :meth:`ReportGrid.standard` of
            ``settings.quick`` and ``settings.paper``.
        transfer_rows: ``transfer.csv`` rows (:mod:`vafa.report.transfer`): adds the transfer
            matrix and ``transfer.png``.
        band_rows: ``bands.csv`` rows (:mod:`vafa.report.bands`): adds the band analysis and
            ``bands.png``.

    Returns:
        ``{"report": path, <plot>: path, …}``. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    if grid is None:
        grid = ReportGrid.standard(quick=settings.quick, paper=settings.paper)
    names = [m[0] for m in models]
    sweep_models = names if settings.sweep_models == "all" else names[:1]
    plots = write_plots(out_dir, rows, names, sweep_models, cases, settings, grid)
    text = _markdown(rows, models, sweep_models, cases, settings, grid, plots)
    text += _extra_sections(out_dir, names, transfer_rows, band_rows, plots)
    path = out_dir / REPORT_MD
    write_text(path, text)
    return {"report": path, **plots}


def _markdown(rows, models, sweep_models, cases, settings, grid, plots) -> str:
    names = [m[0] for m in models]
    out = [
        *_preamble(models, cases, settings),
        "## Trends observed",
        "",
        *_trends(rows, names, sweep_models, grid, settings),
        "",
        "The paper (UNETR, Synapse, 12 volumes, published settings): clean DSC 74.3; PGD ε4 62.7; "
        "FGSM ε4 62.8; BIM ε4 62.8; GN σ4 74.2; VAFA-2D 61.7; VAFA q_max 20: 32.2, q_max 30: 29.8; "
        "DSC falls as q_max (10→80: 66.0→48.8), steps and block size (4→96: 63.5→28.1) grow.",
        "",
        *_tables(rows, names, sweep_models, settings, grid, plots),
        *_closing(rows, cases, plots),
    ]
    return "\n".join(out) + "\n"


def _preamble(models, cases, settings) -> list[str]:
    """Title, settings, data, models and protocol."""
    from vafa.attacks.vafa import PAPER_SETTINGS
    from vafa.io.data import sample_paths

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vafa_mode = {**PAPER_SETTINGS, "q_min": 5} if settings.paper else LIBRARY_VAFA
    mode = "published code (`--paper`)" if settings.paper else "library defaults"
    out = [
        "# VAFA robustness report",
        "",
        f"Date: {date}. Grid: {'quick' if settings.quick else 'full'} "
        f"({QUICK_STEPS if settings.quick else FULL_STEPS} steps for PGD/BIM/VAFA unless swept), "
        f"seed {settings.seed}, device {settings.device}.",
        "",
        f"**VAFA settings: {mode}** — "
        + ", ".join(f"{k}={v}" for k, v in vafa_mode.items())
        + "; 32³ blocks (VAFA-2D: 32² per axial slice), SSIM term on for VAFA (off for VAFA-2D). "
        "Voxel attacks: budgets in [0, 255] units, α = 0.01. SA²: ρ 0.2, factor steps 0.1, "
        "8³ blocks, 10 steps, all bands but the DC terms. "
        + (
            "These are the published code's choices, so the numbers can be set beside the paper's."
            if settings.paper
            else "`normalize=clip` measures the frequency perturbation alone; `--paper` switches "
            "to the published per-slice normalisation and last iterate."
        ),
        "",
        "**Data**:",
    ]
    sample = Path(sample_paths()[0]).resolve()
    for name, image, labels in cases:
        reference = (
            f"labels `{labels}`" if labels else "no labels: Dice against the clean prediction"
        )
        if not isinstance(image, tuple) and Path(image).resolve() == sample:
            reference += "; the bundled CT sample, whose labels are TotalSegmentator's output"
        files = " + ".join(f"`{p}`" for p in image_files(image))
        out.append(f"- `{name}`: {files} ({reference})")
    out += ["", "**Models**:"]
    out += [f"- `{name}`: {text}" for name, text in models]
    out += [
        "",
        "Protocol: the whole volume is attacked in roi-sized tiles and evaluated by "
        "each model's own sliding-window inference (its card's: overlap 0.5, constant weights "
        "for plain weights; a model folder's framework settings, see `vafa info`) on the model "
        "grid (`vafa.run.pipeline.run_attack`). "
        "Dice fg: mean over the foreground classes present in the reference; DSC: over all "
        "classes including background (the paper's DSC); HD95 in mm; SSIM, PSNR and L∞ ([0, 1] "
        "units) between the clean and the attacked model input. Values are means over cases. "
        + (
            "LPIPS: AlexNet LPIPS (local weights) between the clean and the attacked model "
            "input, mean over axial slices (`vafa.io.lpips`)."
            if settings.lpips
            else "LPIPS (column `lpips` of results.csv) is empty: give `--lpips-weights` (local "
            "AlexNet and LPIPS weights; nothing is downloaded) to fill it."
        ),
        "",
    ]
    return out


def _tables(rows, names, sweep_models, settings, grid: ReportGrid, plots) -> list[str]:
    """Table 1/5 per model, the worst case over attacks, the sweep tables (Tables 2–4) and
    Table 6, with their figures."""
    out = ["## Table 1/5: attacks", ""]
    lpips = ("lpips",) if settings.lpips or any(r.get("lpips") is not None for r in rows) else ()
    metrics = ("dice_fg", "dice", "hd95", "ssim", "psnr", "linf", *lpips)
    for name in names:
        out += [f"### {name}", "", format_table(rows, grid.table1, [name], metrics=metrics), ""]
    if "table1_bars" in plots:
        out += ["![Table 1 bars](table1_bars.png)", ""]
    worst = worst_case_markdown(rows, grid.table1, names)
    if worst:
        out += [worst]
    if settings.sweeps:
        for table, (title, _, filename) in SWEEP_TITLES.items():
            entries = [e for e in grid.sweeps if e.table == table]
            out += [f"## {title}", ""]
            out += [
                format_table(
                    rows,
                    entries,
                    sweep_models,
                    metrics=("dice_fg", "dice", "ssim", *lpips),
                    setting_header="setting",
                ),
                "",
            ]
            if table in plots:
                out += [f"![{title}]({filename})", ""]
    out += [
        "## Table 6: every model under every attack",
        "",
        "Foreground Dice and DSC of each model (columns) under each Table-1 attack (rows).",
        "",
        format_table(rows, grid.table1, names, metrics=("dice_fg", "dice")),
        "",
    ]
    return out


def _closing(rows, cases, plots) -> list[str]:
    """The qualitative figure and the entries that did not finish."""
    out: list[str] = []
    if "qualitative" in plots:
        out += [
            "## Qualitative (Fig. 2)",
            "",
            f"Case `{cases[0][0]}`, middle axial slice of the labelled extent: the attacked "
            "image and the prediction over it, per attack.",
            "",
            "![qualitative](qualitative.png)",
            "",
        ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["## Entries that did not finish", ""]
        out += [f"- {r['model']} / {r['case']} / {r['key']}: {r['status']}" for r in failed]
        out += ["", "Re-run the same command to retry them (finished entries are skipped).", ""]
    return out


def _extra_sections(out_dir, names, transfer_rows, band_rows, plots) -> str:
    """The transfer matrix and the band analysis sections (and their figures)."""
    out: list[str] = []
    if transfer_rows:
        from vafa.report.transfer import transfer_markdown, write_transfer_figure

        plots["transfer"] = write_transfer_figure(out_dir, transfer_rows, names)
        out += [
            "## Transfer matrix",
            "",
            "Foreground Dice of every model (columns) on the adversarial volumes that each "
            "Table-1 attack made on one model (rows); the diagonal (bold) is the attacked "
            "model itself, the first line each model's clean Dice (`transfer.csv`).",
            "",
            transfer_markdown(transfer_rows, names),
            "",
            "![transfer matrix](transfer.png)",
            "",
        ]
    if band_rows:
        from vafa.report.bands import band_markdown, write_band_figure

        plots["bands"] = write_band_figure(out_dir, band_rows, names)
        block = int(band_rows[0]["block"])
        out += [
            "## Perturbation bands",
            "",
            f"The perturbation δ = attacked − clean (model input, [0, 1]) of every Table-1 "
            f"attack, split by DCT band ({block}³ blocks, `vafa.ops.bands`): the share of δ's "
            "energy in each band, and fg Dice when only that band of δ is added to the clean "
            "volume ('all': the attack itself). White noise would put about "
            f"{_white_share(block)} of its energy in low / middle / high (`bands.csv`).",
            "",
            band_markdown(band_rows, names),
            "",
            "![perturbation bands](bands.png)",
            "",
        ]
    return "\n".join(out) + ("\n" if out else "")


def _white_share(block: int) -> str:
    from vafa.ops.bands import band_mask

    shares = [float(band_mask((block,) * 3, b).double().mean()) for b in ("low", "middle", "high")]
    return " / ".join(f"{100 * s:.0f} %" for s in shares)


def _trends(rows, names, sweep_models, grid: ReportGrid, settings) -> list[str]:
    """Sentences read off the numbers (directions as measured, never assumed)."""
    summary = summarize(rows)
    table1, sweeps = grid.table1, grid.sweeps

    def get(model, key, metric="dice_fg"):
        return (summary.get((model, key)) or {}).get(metric)

    lines = []
    by_label = {e.label: e.key for e in table1}
    for model in names:
        clean = get(model, "clean")
        attacked = [(get(model, e.key), e) for e in table1 if e.attack != "clean"]
        attacked = [(v, e) for v, e in attacked if v is not None]
        if clean is None or not attacked:
            continue
        worst, entry = min(attacked, key=lambda t: t[0])
        ssim = get(model, entry.key, "ssim")
        line = (
            f"- `{model}`: clean Dice fg {clean:.3f}; the strongest attack is {entry.label} "
            f"({worst:.3f}, SSIM {_fmt(ssim)})."
        )
        vafa, pgd = by_label.get("VAFA q_max=20"), by_label.get("PGD ε=4")
        if vafa and pgd and get(model, vafa) is not None and get(model, pgd) is not None:
            stronger = "stronger" if get(model, vafa) < get(model, pgd) else "weaker"
            line += (
                f" VAFA q_max 20 ({get(model, vafa):.3f}, SSIM {_fmt(get(model, vafa, 'ssim'))}) "
                f"is {stronger} than PGD ε 4 ({get(model, pgd):.3f}, SSIM "
                f"{_fmt(get(model, pgd, 'ssim'))})."
            )
        lines.append(line)
    if settings.sweeps:
        for table, (title, _, _) in SWEEP_TITLES.items():
            xlabel = {"qmax": "q_max", "steps": "steps", "block": "block size"}[table]
            points = sorted((sweep_value(e, table), e.key) for e in sweeps if e.table == table)
            for model in sweep_models:
                values = [(x, get(model, k)) for x, k in points if get(model, k) is not None]
                if len(values) < 2:
                    continue
                dice = [v for _, v in values]
                direction = "falls" if dice[-1] < dice[0] else "does not fall"
                monotone = all(b <= a + 1e-9 for a, b in itertools.pairwise(dice))
                lines.append(
                    f"- {title.split(':')[0]}, `{model}`: Dice fg {direction} with {xlabel} "
                    f"({format_option(values[0][0])} → {format_option(values[-1][0])}: "
                    f"{dice[0]:.3f} → {dice[-1]:.3f}"
                    f"{', monotonically' if monotone else ', not monotonically'})."
                )
    vafa = by_label.get("VAFA q_max=20")
    measured = [(m, get(m, "clean"), get(m, vafa)) for m in names] if vafa else []
    measured = [(m, c, v) for m, c, v in measured if c is not None and v is not None]
    if len(measured) > 1:
        drops = ", ".join(f"`{m}` {c:.3f} → {v:.3f} ({v - c:+.3f})" for m, c, v in measured)
        most = max(measured, key=lambda t: t[2] - t[1])[0]
        lines.append(f"- Table 6: under VAFA q_max 20, {drops}; `{most}` loses the least Dice fg.")
    return lines or ["- (no finished entries)"]


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"
