#!/usr/bin/env python
"""Evaluate the matched VAFT runs of ``scripts/vaft_evidence.sh`` and the untouched demo model.

Every model is run on the bundled CT with its labels, with the same 96³ tiles (card roi
overridden), the same seeds and the same entries:

* VAFA q_max 20 and q_max 30 (32³ blocks, 20 steps, ``normalize="clip"``, the library's
  ``keep="best"``);
* VAFA ``paper=True`` (q_max 20, 32³, 20 steps: per-slice min–max, the published last iterate);
* PGD ε 4 (α 0.01, 20 steps).

Foreground Dice is reported three ways: on the attacked tiles (the stitched per-tile
predictions the attack optimised against), with sliding-window prediction (overlap 0.5) of the
whole adversarial volume, and with sliding-window prediction on the held-out axial slab of the
demo model's report (k in [76, 92)). Writes ``--out`` (JSON) and a Markdown table beside it.
Each model's rows are kept in ``RUNS/eval/<model>.json`` with the weights' SHA-256 and the
steps, so a re-run (or a second process started early) only evaluates what is missing;
``--models`` restricts a run to some models.

Usage: ``python scripts/vaft_evaluate.py --runs runs/vaft-matched --out runs/vaft-matched/matched.json``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from vafa.io.checkpoints import load_model
from vafa.io.data import DATA_DIR, bundled_model_path, load_sample
from vafa.ops.metrics import dice_per_class, dice_summary
from vafa.run.pipeline import run_attack

ROI = 96
SEED = 0
ENTRIES = [
    ("VAFA q20", "vafa", {"q_max": 20, "block_size": 32, "steps": 20, "normalize": "clip"}),
    ("VAFA q30", "vafa", {"q_max": 30, "block_size": 32, "steps": 20, "normalize": "clip"}),
    ("VAFA paper", "vafa", {"q_max": 20, "block_size": 32, "steps": 20, "paper": True}),
    ("PGD ε4", "pgd", {"eps": 4, "alpha": 0.01, "steps": 20}),  # clean values: every row
]
MODES = ("clean", "vafa-fr", "vafa", "pgd")


def slab_range() -> tuple[int, int]:
    report = json.loads((DATA_DIR / "demo_model_report.json").read_text())
    slab = report["provenance"]["heldout_slab"]
    return int(slab["start"]), int(slab["stop"])


def slab_dice(prediction: np.ndarray, labels: np.ndarray, k0: int, k1: int, classes: int) -> float:
    pred = torch.from_numpy(np.ascontiguousarray(prediction[:, :, k0:k1])).long()[None, None]
    ref = torch.from_numpy(np.ascontiguousarray(labels[:, :, k0:k1])).long()[None, None]
    return dice_summary(dice_per_class(pred, ref, classes))["dice_fg"]


def evaluate_model(name, weights, image, labels, slab, steps):
    model, card = load_model(weights, device="cpu")
    card = dataclasses.replace(card, roi_size=(ROI,) * 3)
    rows = []
    for label, attack, options in ENTRIES:
        options = {**options, "steps": steps}
        t0 = time.perf_counter()
        outcome = run_attack(
            model, card, image, labels, attack=attack, options=options, seed=SEED, device="cpu"
        )
        m = outcome.metrics
        assert outcome.adversarial_prediction.shape == labels.shape, "model grid ≠ file grid"
        gt = np.rint(labels.array).astype(np.int64)
        k = card.out_channels
        row = {
            "model": name,
            "entry": label,
            "tiles_clean": m.per_tile.dice_fg.clean,
            "tiles_adv": m.per_tile.dice_fg.adversarial,
            "sw_clean": m.dice_fg.clean,
            "sw_adv": m.dice_fg.adversarial,
            "slab_clean": slab_dice(outcome.clean_prediction.array, gt, *slab, k),
            "slab_adv": slab_dice(outcome.adversarial_prediction.array, gt, *slab, k),
            "ssim": m.ssim,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(
            f"{name:9s} {label:11s} tiles {row['tiles_adv']:.3f}  sw {row['sw_adv']:.3f}  "
            f"slab {row['slab_adv']:.3f}  SSIM {row['ssim']:.3f}  ({row['seconds']} s)",
            flush=True,
        )
    return rows


def training_costs(runs: Path, time_log: Path | None) -> list[dict]:
    """Per mode: updates, median and fastest-50 seconds per update (from the training log's
    cumulative ``seconds``; rows right after a validation are left out), wall time and peak
    RSS (from the ``/usr/bin/time`` lines of ``vaft_evidence.sh``, when ``time_log`` is given)."""
    import csv
    import re

    timed = {}
    if time_log is not None and time_log.is_file():
        for m in re.finditer(
            r"^(\S+): ([\d.]+) s wall, (\d+) KiB peak", time_log.read_text(), re.M
        ):
            timed[m.group(1)] = (float(m.group(2)), int(m.group(3)))
    out = []
    for mode in MODES:
        log = runs / mode / "training_log.csv"
        if not log.is_file():
            continue
        rows = list(csv.DictReader(log.open()))
        steps, previous = [], None
        for row in rows:
            if row["stage"] == "train" and previous is not None and previous["stage"] == "train":
                steps.append(float(row["seconds"]) - float(previous["seconds"]))
            previous = row
        windows = [sum(steps[i : i + 50]) / 50 for i in range(0, max(len(steps) - 49, 1))]
        wall, rss = timed.get(mode, (None, None))
        out.append(
            {
                "mode": mode,
                "updates": sum(r["stage"] == "train" for r in rows),
                "s_per_update_median": round(float(np.median(steps)), 3),
                "s_per_update_fastest50": round(min(windows), 3),
                "wall_s": wall,
                "peak_rss_gib": None if rss is None else round(rss / 2**20, 2),
            }
        )
    return out


def cost_table(costs: list[dict]) -> str:
    lines = [
        "| mode | updates | s/update (median) | s/update (fastest 50) | wall | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        wall = "" if c["wall_s"] is None else f"{c['wall_s'] / 60:.1f} min"
        rss = "" if c["peak_rss_gib"] is None else f"{c['peak_rss_gib']:.2f} GiB"
        lines.append(
            f"| {c['mode']} | {c['updates']} | {c['s_per_update_median']:.2f} | "
            f"{c['s_per_update_fastest50']:.2f} | {wall} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def plot_evidence(runs: Path, rows: list[dict], path: Path) -> Path:
    """Two panels: validation foreground Dice (clean, dashed; under the training attack, solid)
    of every run against updates, and the Dice drop on the attacked tiles per model and attack."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"demo": "C7", **{mode: f"C{i}" for i, mode in enumerate(MODES)}}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in MODES:
        log = runs / mode / "training_log.csv"
        if not log.is_file():
            continue
        val = [r for r in csv.DictReader(log.open()) if r["stage"] == "validation"]
        if not val:
            continue
        its = [int(r["iteration"]) for r in val]
        colour = colours[mode]
        left.plot(its, [float(r["val_dice_fg_clean"]) for r in val], "--", color=colour)
        if val[0]["val_dice_fg_adv"]:
            adv = [float(r["val_dice_fg_adv"]) for r in val]
            left.plot(its, adv, "o-", color=colour, label=f"{mode} (under its attack)")
        else:
            left.plot([], [], "--", color=colour, label=f"{mode} (clean only)")
    left.set(xlabel="updates", ylabel="validation fg Dice", title="training runs (dashed: clean)")
    left.legend(fontsize=8)
    models = list(dict.fromkeys(r["model"] for r in rows))
    entries = [e[0] for e in ENTRIES if e[0] != "VAFA paper"]
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        drops = [
            100 * (r["tiles_clean"] - r["tiles_adv"])
            for e in entries
            for r in rows
            if r["model"] == model and r["entry"] == e
        ]
        xs = [k + j * width for k in range(len(drops))]
        right.bar(xs, drops, width, label=model, color=colours.get(model))
    right.set_xticks([k + 0.4 - width / 2 for k in range(len(entries))], entries)
    right.set(ylabel="fg Dice drop on attacked tiles (points)", title="matched evaluation")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def markdown(rows) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    entries = ["clean"] + [e[0] for e in ENTRIES]
    lines = []
    for key, title in (
        ("tiles_adv", "fg Dice on the attacked 96³ tiles"),
        ("sw_adv", "fg Dice, sliding-window prediction of the whole volume"),
        ("slab_adv", "fg Dice, sliding window, held-out slab k 76–91"),
    ):
        lines += [f"**{title}**", "", "| model | " + " | ".join(entries) + " |"]
        lines.append("|---" * (len(entries) + 1) + "|")
        for model in models:
            cells = []
            for entry in entries:
                if entry == "clean":  # the same for every entry: take the first
                    r = next(r for r in rows if r["model"] == model)
                    value = r[key.replace("_adv", "_clean")]
                else:
                    r = next(r for r in rows if r["model"] == model and r["entry"] == entry)
                    value = r[key]
                cells.append(f"{value:.3f}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    ssims = {e: next(r["ssim"] for r in rows if r["entry"] == e) for e in entries[1:]}
    lines.append("SSIM (first model): " + ", ".join(f"{e} {s:.3f}" for e, s in ssims.items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/vaft-matched", help="output root of the runs")
    parser.add_argument("--out", default=None, help="JSON file (default RUNS/matched.json)")
    parser.add_argument("--weights", default="latest.safetensors", help="file in each run")
    parser.add_argument(
        "--steps", type=int, default=20, help="attack steps (20; less: a smoke run)"
    )
    parser.add_argument("--models", nargs="+", help="only these (demo, clean, vafa-fr, …)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--time-log", help="output of vaft_evidence.sh (wall time, peak RSS)")
    parser.add_argument("--figure", help="also draw the curves and drops into this PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    out = Path(args.out or runs / "matched.json")
    image, labels = load_sample()
    slab = slab_range()
    models = [("demo", bundled_model_path("demo"))]
    models += [(mode, runs / mode / args.weights) for mode in MODES]
    if args.models:
        models = [(name, weights) for name, weights in models if name in args.models]
    rows = []
    start = time.perf_counter()
    for name, weights in models:
        if not Path(weights).is_file():
            print(f"skipping {name}: {weights} not found")
            continue
        cache = runs / "eval" / f"{name}.json"
        key = {"sha256": _sha256(weights), "steps": args.steps, "roi": ROI, "seed": SEED}
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        if cached.get("key") == key:
            rows += cached["rows"]
            print(f"{name}: rows from {cache}")
            continue
        model_rows = evaluate_model(name, weights, image, labels, slab, args.steps)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "rows": model_rows}, indent=1) + "\n")
        rows += model_rows
    result = {
        "roi": ROI,
        "seed": SEED,
        "steps": args.steps,
        "entries": [{"label": e[0], "attack": e[1], "options": e[2]} for e in ENTRIES],
        "heldout_slab": list(slab),
        "rows": rows,
        "training": training_costs(runs, Path(args.time_log) if args.time_log else None),
        "seconds": round(time.perf_counter() - start, 1),
    }
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.figure:
        print(f"wrote {plot_evidence(runs, rows, Path(args.figure))}")
    table = markdown(rows) + "\n" + cost_table(result["training"])
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"evaluation: {result['seconds']} s")


if __name__ == "__main__":
    main()
