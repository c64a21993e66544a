"""Plain-text and CSV renderings of the metrics dictionaries of :mod:`vafa.run.pipeline`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

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


def clean_and_adversarial(metrics: Mapping[str, Any], key: str) -> tuple[Any, Any]:
    """``(clean, adversarial)`` of a ``{"clean": …, "adversarial": …}`` metric (or ``(v, None)``)."""
    value = metrics.get(key)
    if isinstance(value, Mapping):
        return value.get("clean"), value.get("adversarial")
    return value, None


def metrics_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, clean, adversarial)`` rows: per-class Dice, the means and HD95."""
    rows: list[tuple[str, Any, Any]] = []
    per_class = metrics.get("dice_per_class") or {}
    clean = per_class.get("clean") or {}
    adv = per_class.get("adversarial") or {}
    for name in metrics.get("class_names") or clean:
        if name == "background" or (clean.get(name) is None and adv.get(name) is None):
            continue
        rows.append((f"Dice {name}", clean.get(name), adv.get(name)))
    rows.append(("Dice foreground mean", *clean_and_adversarial(metrics, "dice_fg")))
    rows.append(("Dice all classes (paper's DSC)", *clean_and_adversarial(metrics, "dice")))
    rows.append(("HD95 mean (mm)", *clean_and_adversarial(metrics, "hd95")))
    per_tile = metrics.get("per_tile") or {}
    if per_tile.get("dice_fg"):
        fg = per_tile["dice_fg"]
        rows.append(("Dice fg, attacked tiles", fg.get("clean"), fg.get("adversarial")))
    return rows


def format_metrics_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
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
        ("SSIM", metrics.get("ssim"), 3),
        ("PSNR (dB)", metrics.get("psnr"), 1),
        ("L∞ ([0,1] units)", metrics.get("linf"), 4),
        ("L∞ (file units, in window)", metrics.get("linf_original_units"), 1),
        ("zeroed DCT coefficients", metrics.get("zeroed_fraction"), 3),
        ("voxels whose class flipped", metrics.get("flip_rate"), 4),
    ]
    shown = [(n, v, d) for n, v, d in extras if v is not None]
    if shown:
        lines.append("")
        lines += [f"{n:{width}}{_num(v, d):>9}" for n, v, d in shown]
    notes = []
    if metrics.get("attack"):
        notes.append(f"attack: {metrics['attack']}")
    if metrics.get("normalize"):
        notes.append(f"normalize={metrics['normalize']}")
    if metrics.get("reference"):
        notes.append(f"Dice against: {metrics['reference']}")
    if metrics.get("per_tile"):
        notes.append(
            "Dice rows: sliding-window inference (overlap 0.5); 'attacked tiles': the "
            "padded tiles the attack optimised"
        )
    if metrics.get("cancelled"):
        notes.append("CANCELLED: later tiles are clean")
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines)


def metrics_csv(metrics: Mapping[str, Any]) -> str:
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
        if metrics.get(key) is not None:
            writer.writerow([key, "", metrics[key]])
    return out.getvalue()
