"""Transfer matrix of a report: adversarial volumes made on one model, scored on every model.

When a report has two or more models, every Table-1 attack entry's adversarial volume (made on
the *source* model) is scored on every *target* model (Malik et al., BMVC 2024): foreground
Dice of the target's own sliding-window prediction (``card.inference``) against the labels, or
against the target's own clean prediction when the case has no labels.

The adversarial volume travels in file units (e.g. HU) on the case's grid, so targets with
other cards (intensity window, spacing, roi) see it through their own model space
(:func:`vafa.io.model_space.adversarial_model_input`). The diagonal (target = source) uses the
attack's own model input, so it equals the report's adversarial Dice of that entry.

Rows go to ``transfer.csv`` (:data:`TRANSFER_FIELDS`) as they finish; a resumed report re-runs
an entry whose transfer rows are missing for one of the current models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafa.ops.messages import one_line
from vafa.report.results import ResultsWriter, parse_number, read_results

__all__ = [
    "TRANSFER_CSV",
    "TRANSFER_FIELDS",
    "TransferRecorder",
    "plot_transfer",
    "transfer_markdown",
    "transfer_matrix",
    "write_transfer_figure",
]

TRANSFER_CSV = "transfer.csv"
TRANSFER_FIELDS = (
    "source",
    "target",
    "case",
    "key",
    "label",
    "status",
    "reference",
    "dice_fg_clean",
    "dice_fg",
)
_NUMERIC = ("dice_fg_clean", "dice_fg")


class TransferRecorder:
    """Scores each finished attack entry on every model and appends the rows to
    ``transfer.csv``.

    Args:
        out_dir: the report folder.
        targets: ``(name, model, card)`` of every model of the report.
        keys: the entry keys that get a transfer row (the Table-1 attacks).

    Raises:
        ValueError: an existing ``transfer.csv`` with other columns (before anything runs).
    """

    def __init__(self, out_dir: str | os.PathLike, targets: Sequence[tuple[str, Any, Any]],
                 keys: Iterable[str]) -> None:  # fmt: skip
        self.path = Path(out_dir) / TRANSFER_CSV
        self.targets = list(targets)
        self.keys = set(keys)
        self.rows = read_results(self.path, TRANSFER_FIELDS, _NUMERIC)
        self._clean: dict[tuple[str, str], tuple[Any, Any, float | None]] = {}

    def missing(self, source: str, case: str, key: str) -> bool:
        """Whether this entry still lacks an ``ok`` row for one of the targets."""
        if key not in self.keys:
            return False
        done = {
            r["target"]
            for r in self.rows
            if (r["source"], r["case"], r["key"], r["status"]) == (source, case, key, "ok")
        }
        return any(name not in done for name, _, _ in self.targets)

    def record(self, source: str, case: str, entry, outcome, image, labels) -> None:
        """Score ``outcome`` (of ``entry`` on model ``source``) on every target."""
        if entry.key not in self.keys:
            return
        from vafa.io.model_space import back_to_source

        adversarial = back_to_source(outcome.adversarial, outcome.model_input)
        rows = []
        for name, model, card in self.targets:
            row = {"source": source, "target": name, "case": case, "key": entry.key,
                   "label": entry.label, "status": "ok"}  # fmt: skip
            try:
                own = outcome.adversarial01 if name == source else None
                row.update(self._score(name, model, card, case, image, labels, adversarial, own))
            except Exception as err:  # one target failing must not stop the report
                row["status"] = f"failed: {one_line(err)}"
            rows.append(row)
        with ResultsWriter(self.path, TRANSFER_FIELDS) as writer:
            for row in rows:
                writer.write(row)
        self.rows += rows

    def in_scope(self, models: Sequence[str], cases: Sequence[str]) -> list[dict[str, Any]]:
        """The latest row of every (source, target, case, key) of these models and cases (an
        ``ok`` row wins over a later failed one)."""
        return _latest(
            (r for r in self.rows if {r["source"], r["target"]} <= set(models)
             and r["case"] in cases),
            ("source", "target", "case", "key"),
        )  # fmt: skip

    def _score(self, name, model, card, case, image, labels, adversarial, own) -> dict[str, Any]:
        from vafa.io.model_space import adversarial_model_input
        from vafa.run.tiling import sliding_window_labels

        model_input, reference, clean = self._clean_of(name, model, card, case, image, labels)
        adv01 = own if own is not None else adversarial_model_input(adversarial, model_input)[1]
        heads = card.heads()
        pred = sliding_window_labels(model, adv01, card.roi_size, card.inference, heads=heads)
        dice = heads.summary(heads.dice(pred.cpu(), reference, card.out_channels))["dice_fg"]
        return {
            "reference": "clean_prediction" if labels is None else "labels",
            "dice_fg_clean": clean,
            "dice_fg": dice if math.isfinite(dice) else None,
        }

    def _clean_of(self, name, model, card, case, image, labels):
        """The target's model input, reference and clean fg Dice on this case (cached)."""
        from vafa.io.model_space import labels_to_model_space, to_model_space
        from vafa.run.tiling import sliding_window_labels

        if (name, case) not in self._clean:
            heads, k = card.heads(), card.out_channels
            model_input = to_model_space(image, card)
            pred = sliding_window_labels(
                model, model_input.tensor, card.roi_size, card.inference, heads=heads
            ).cpu()
            if labels is None:
                reference = pred
            else:
                reference = heads.target(labels_to_model_space(labels, model_input), k)
            dice = heads.summary(heads.dice(pred, reference, k))["dice_fg"]
            self._clean[name, case] = (
                model_input,
                reference,
                dice if math.isfinite(dice) else None,
            )
        return self._clean[name, case]


# ----------------------------------------------------------------------------- rendering
def transfer_matrix(
    rows: Iterable[Mapping[str, Any]], models: Sequence[str]
) -> tuple[list[tuple[str, str, str]], np.ndarray, dict[str, float | None]]:
    """Means over cases of the ``ok`` rows of these models.

    Returns:
        ``(lines, values, clean)``: ``lines`` = ``(key, label, source)`` in first-seen order;
        ``values`` ``[len(lines), len(models)]`` fg Dice (NaN where missing), columns in
        ``models`` order; ``clean`` = each target's mean clean fg Dice.
    """
    cells: dict[tuple[str, str, str], list[float]] = {}
    clean: dict[str, list[float]] = {}
    lines: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.get("status") != "ok" or row["source"] not in models or row["target"] not in models:
            continue
        lines.setdefault((row["key"], row["source"]), str(row.get("label") or row["key"]))
        value = parse_number(row.get("dice_fg"))
        if value is not None:
            cells.setdefault((row["key"], row["source"], row["target"]), []).append(value)
        base = parse_number(row.get("dice_fg_clean"))
        if base is not None:
            clean.setdefault(row["target"], []).append(base)
    keys = list(dict.fromkeys(key for key, _ in lines))  # attacks in first-seen order
    ordered = [
        (key, lines[key, source], source)
        for key in keys
        for source in models
        if (key, source) in lines
    ]
    values = np.full((len(ordered), len(models)), np.nan)
    for i, (key, _, source) in enumerate(ordered):
        for j, target in enumerate(models):
            found = cells.get((key, source, target))
            if found:
                values[i, j] = float(np.mean(found))
    return ordered, values, {m: float(np.mean(clean[m])) if m in clean else None for m in models}


def transfer_markdown(rows: Iterable[Mapping[str, Any]], models: Sequence[str]) -> str:
    """Markdown: a line per attack × source model, a column per target model (fg Dice; the
    diagonal in bold), and a first line with each model's clean fg Dice."""
    lines, values, clean = transfer_matrix(rows, models)
    header = ["adversarial made on → scored on", *(f"`{m}`" for m in models)]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out.append("| clean | " + " | ".join(_cell(clean[m]) for m in models) + " |")
    for i, (_, label, source) in enumerate(lines):
        cells = []
        for j, target in enumerate(models):
            text = _cell(None if np.isnan(values[i, j]) else float(values[i, j]))
            cells.append(f"**{text}**" if target == source and text != "–" else text)
        out.append(f"| {label} on `{source}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_transfer(ax, rows: Iterable[Mapping[str, Any]], models: Sequence[str]) -> None:
    """Heat map of :func:`transfer_matrix` (fg Dice, 0–1, annotated), clean line first."""
    lines, values, clean = transfer_matrix(rows, models)
    data = np.vstack([[np.nan if clean[m] is None else clean[m] for m in models], values])
    names = ["clean", *(f"{label} on {source}" for _, label, source in lines)]
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                color = "k" if data[i, j] > 0.6 else "w"
                ax.text(
                    j, i, f"{data[i, j]:.3f}", ha="center", va="center", fontsize=8, color=color
                )
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"scored on {m}" for m in models], fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.figure.colorbar(image, ax=ax, label="foreground Dice")


def write_transfer_figure(out_dir, rows, models: Sequence[str]) -> Path:
    """``transfer.png``: the heat map of :func:`plot_transfer` (written atomically)."""
    from vafa.io.files import save_figure
    from vafa.report.render import _figure

    lines, _, _ = transfer_matrix(rows, models)
    fig = _figure(figsize=(3.0 + 1.6 * len(models), 1.2 + 0.32 * (len(lines) + 1)), dpi=90)
    plot_transfer(fig.add_subplot(), rows, models)
    fig.suptitle("Transfer: adversarial volumes of one model scored on every model", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "transfer.png")


def _latest(rows: Iterable[Mapping[str, Any]], ident: Sequence[str]) -> list[dict[str, Any]]:
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in ident)
        old = latest.get(key)
        if old is None or row["status"] == "ok" or old["status"] != "ok":
            latest[key] = dict(row)
    return list(latest.values())


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
