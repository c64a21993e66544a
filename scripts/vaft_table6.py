#!/usr/bin/env python
"""Table 6 of the paper on the bundled task: clean and VAFT models under PGD and VAFA.

For every model (the bundled demo model and the checkpoints of ``scripts/vaft_evidence.sh``)
measures, on the bundled CT with its labels, foreground Dice clean, under PGD ε=4 (20 steps)
and under VAFA q_max 20 (20 steps, 32³, SSIM term) with ``normalize="clip"`` (the library's
default) and ``"slice"`` (the published per-slice min-max). Writes ``results.csv`` (rows of
:func:`vafa.report.iter_grid`) and ``table6.md`` into OUT (default ``runs/vaft-evidence``).

``--roi N`` runs every model with N³ tiles instead of its card's roi (the fine-tuned models were
trained on 96³ patches, the demo model runs the whole sample in one 128³ tile; with one tile the
attack optimises exactly the window that is evaluated).

Usage: ``python scripts/vaft_table6.py [--out DIR] [--roi N] [NAME=WEIGHTS ...]``
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

from vafa.checkpoints import load_model
from vafa.data import bundled_model_path, load_sample
from vafa.devices import keep_freed_memory
from vafa.report import RESULT_FIELDS, GridEntry, iter_grid, summarize

ENTRIES = [
    GridEntry("table6", "clean", {}, ""),
    GridEntry("table6", "pgd", {"eps": 4, "alpha": 0.01, "steps": 20}, "ε=4"),
    GridEntry("table6", "vafa", {"q_max": 20, "steps": 20, "normalize": "clip"}, "clip"),
    GridEntry("table6", "vafa", {"q_max": 20, "steps": 20, "normalize": "slice"}, "slice"),
]
DEFAULT_MODELS = ["demo"] + [
    f"{mode}=runs/vaft-evidence/{mode}/best.safetensors"
    for mode in ("clean", "vafa-fr", "vafa", "pgd", "vafa-fr-long")
]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--out", default="runs/vaft-evidence")
    parser.add_argument("--roi", type=int, default=None, help="tile size for every model")
    parser.add_argument("--no-slice", action="store_true", help="skip VAFA normalize=slice")
    args = parser.parse_args(argv)
    keep_freed_memory()
    entries = [e for e in ENTRIES if not (args.no_slice and e.setting == "slice")]
    image, labels = load_sample()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, names = [], []
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for spec in args.models:
            name, _, path = spec.partition("=")
            weights = Path(path) if path else bundled_model_path(name)
            if not weights.is_file():
                print(f"skipping {name}: {weights} not found")
                continue
            model, card = load_model(weights, device="cpu")
            if args.roi:
                card = dataclasses.replace(card, roi_size=(args.roi,) * 3)
            names.append(name)
            grid = iter_grid(
                model, card, image, labels, entries, model_name=name, case_name="sample"
            )
            try:
                event = next(grid)
                while True:
                    if event.row is not None:
                        writer.writerow(event.row)
                        fh.flush()
                        print(f"{name:14s} {event.entry.label:12s} Dice fg {event.row['dice_fg']}")
                    event = next(grid)
            except StopIteration as stop:
                rows += stop.value
    table = model_table(rows, names, entries)
    (out / "table6.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return out / "table6.md"


def model_table(rows, names, entries) -> str:
    """Markdown, the paper's Table 6 layout: a row per model, foreground Dice (SSIM) per attack."""
    summary = summarize(rows)
    head = ["model", *(entry.label for entry in entries)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name]
        for entry in entries:
            values = summary.get((name, entry.key)) or {}
            dice, ssim = values.get("dice_fg"), values.get("ssim")
            text = "–" if dice is None else f"{dice:.3f}"
            if dice is not None and entry.attack != "clean" and ssim is not None:
                text += f" ({ssim:.3f})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
