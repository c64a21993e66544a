"""Plain-text and CSV renderings of the metrics of :mod:`vafa.run.pipeline`
(:class:`vafa.run.outcome_metrics.OutcomeMetrics`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from vafa.run.outcome_metrics import OutcomeMetrics

__all__ = ["format_metrics_table", "metrics_csv", "metrics_rows"]


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_rows(metrics: OutcomeMetrics) -> list[tuple[str, Any, Any]]:
    """``(name, clean, adversarial)`` rows: per-class Dice, the means and HD95."""
    rows: list[tuple[str, Any, Any]] = []
    clean = metrics.dice_per_class.clean or {}
    adv = metrics.dice_per_class.adversarial or {}
    for name in metrics.class_names or clean:
        if name == "background" or (clean.get(name) is None and adv.get(name) is None):
            continue
        rows.append((f"Dice {name}", clean.get(name), adv.get(name)))
    rows.append(("Dice foreground mean", metrics.dice_fg.clean, metrics.dice_fg.adversarial))
    rows.append(("Dice all classes (paper's DSC)", metrics.dice.clean, metrics.dice.adversarial))
    rows.append(("HD95 mean (mm)", metrics.hd95.clean, metrics.hd95.adversarial))
    if metrics.per_tile is not None:
        fg = metrics.per_tile.dice_fg
        rows.append(("Dice fg, attacked tiles", fg.clean, fg.adversarial))
    return rows


def format_metrics_table(metrics: OutcomeMetrics, title: str | None = None) -> str:
    """A text table: Dice per class clean vs adversarial, means, HD95, then perturbation size."""
    rows = metrics_rows(metrics)
    width = max(len(r[0]) for r in rows) + 2
    has_adv = any(r[2] is not None for r in rows)
    lines = [title] if title else []
    header = f"{'':{width}}{'clean':>9}" + (f"{'adversarial':>13}{'change':>9}" if has_adv else "")
    lines += [header, "-" * len(header)]
    for name, c, a in rows:
        line = f"{name:{width}}{_num(c):>9}"
        if has_adv:
            change = a - c if isinstance(a, (int, float)) and isinstance(c, (int, float)) else None
            line += f"{_num(a):>13}{_num(change, 3) if change is None else f'{change:+.3f}':>9}"
        lines.append(line)
    extras = [
        ("SSIM", metrics.ssim, 3),
        ("PSNR (dB)", metrics.psnr, 1),
        ("L∞ ([0,1] units)", metrics.linf, 4),
        ("L∞ (file units, in window)", metrics.linf_original_units, 1),
        ("zeroed DCT coefficients", metrics.zeroed_fraction, 3),
        ("voxels whose class flipped", metrics.flip_rate, 4),
    ]
    shown = [(n, v, d) for n, v, d in extras if v is not None]
    if shown:
        lines.append("")
        lines += [f"{n:{width}}{_num(v, d):>9}" for n, v, d in shown]
    notes = []
    if metrics.attack:
        notes.append(f"attack: {metrics.attack}")
    if metrics.normalize:
        notes.append(f"normalize={metrics.normalize}")
    if metrics.reference:
        notes.append(f"Dice against: {metrics.reference}")
    if metrics.protocol is not None and metrics.protocol.inference is not None:
        notes.append(f"prediction: {metrics.protocol.summary()}")
    if metrics.per_tile is not None:
        notes.append(
            "Dice rows: the model's sliding-window inference; 'attacked tiles': the "
            "padded tiles the attack optimised"
        )
    if metrics.cancelled:
        notes.append("CANCELLED: later tiles are clean")
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines)


def metrics_csv(metrics: OutcomeMetrics) -> str:
    """CSV with columns ``metric,clean,adversarial`` (same rows as the table plus extras)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["metric", "clean", "adversarial"])
    for name, c, a in metrics_rows(metrics):
        writer.writerow([name, "" if c is None else c, "" if a is None else a])
    for key in (
        "ssim",
        "psnr",
        "linf",
        "l2",
        "linf_original_units",
        "zeroed_fraction",
        "flip_rate",
    ):
        value = getattr(metrics, key)
        if value is not None:
            writer.writerow([key, "", value])
    return out.getvalue()
