#!/usr/bin/env python
"""Band analysis and transfer matrix of VAFA and PGD on the bundled task (docs/results.md).

The bundled CT and its labels; the bundled ``demo`` and ``robust-demo`` models, both with the
96³ tiles of the VAFT evaluation (card roi overridden, as ``scripts/vaft_evaluate.py``), seed 0:

* VAFA q_max 20, 32³ blocks, 20 steps, ``normalize="clip"`` (library defaults otherwise);
* PGD ε 4, α 0.01, 20 steps.

For every model × attack: the attack (:func:`vafa.run.pipeline.run_attack`), its perturbation
band analysis (:func:`vafa.run.band_analysis.analyse_outcome`, 32³ and 8³ blocks, against the
labels), and its adversarial volume scored on the other model
(:func:`vafa.run.pipeline.evaluate` with that model's card). Foreground Dice of the
sliding-window prediction (overlap 0.5) throughout.

Writes ``--out`` (JSON), a Markdown file and the report's figures (``bands.png`` of the 32³
analysis, ``transfer.png``) beside it; prints the tables. ``--from-json`` re-renders them from
an earlier ``--out`` without running anything.

Usage: ``OMP_NUM_THREADS=1 python scripts/band_transfer.py --out /tmp/band-transfer/results.json``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from vafa.io.checkpoints import load_model
from vafa.io.data import bundled_model_path, load_sample
from vafa.io.files import json_ready, write_text
from vafa.run.band_analysis import ANALYSIS_BANDS, analyse_outcome
from vafa.run.pipeline import evaluate, run_attack

ROI = 96
SEED = 0
MODELS = ("demo", "robust-demo")
ATTACKS = [
    ("VAFA q_max 20", "vafa", {"q_max": 20, "block_size": 32, "steps": 20, "normalize": "clip"}),
    ("PGD ε 4", "pgd", {"eps": 4, "alpha": 0.01, "steps": 20}),
]
BLOCKS = (32, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-json", action="store_true", help="only re-render --out")
    args = parser.parse_args()
    if args.from_json:
        render(json.loads(args.out.read_text()), args.out)
        return
    torch.set_num_threads(args.threads)
    image, labels = load_sample()
    models = {}
    for name in MODELS:
        model, card = load_model(bundled_model_path(name), device="cpu")
        models[name] = (model, dataclasses.replace(card, roi_size=(ROI,) * 3))
    results = {"settings": {"roi": ROI, "seed": SEED, "threads": args.threads}, "runs": []}
    for source, (model, card) in models.items():
        for label, attack, options in ATTACKS:
            t0 = time.perf_counter()
            outcome = run_attack(model, card, image, labels, attack=attack, options=options,
                                 seed=SEED, device="cpu")  # fmt: skip
            attack_s = time.perf_counter() - t0
            run = {
                "source": source,
                "attack": label,
                "options": options,
                "seconds_attack": round(attack_s, 1),
                "dice_fg_clean": outcome.metrics.dice_fg.clean,
                "dice_fg": outcome.metrics.dice_fg.adversarial,
                "ssim": outcome.metrics.ssim,
                "bands": {},
                "transfer": {},
            }
            for block in BLOCKS:
                t0 = time.perf_counter()
                analysis = analyse_outcome(model, outcome, labels, block_size=block)
                run["bands"][str(block)] = {
                    **analysis.to_dict(),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            for target, (t_model, t_card) in models.items():
                metrics = evaluate(t_model, t_card, image, labels, outcome.adversarial)
                run["transfer"][target] = {
                    "dice_fg_clean": metrics.dice_fg.clean,
                    "dice_fg": metrics.dice_fg.adversarial,
                }
            results["runs"].append(run)
            print(f"{source} · {label}: {run['dice_fg_clean']:.3f} → {run['dice_fg']:.3f} "
                  f"(attack {attack_s:.0f} s)", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(json_ready(results), indent=2) + "\n")
    render(results, args.out)


def render(results, out: Path) -> None:
    """The Markdown tables and the report's two figures, beside ``out``."""
    from vafa.report.bands import write_band_figure
    from vafa.report.transfer import write_transfer_figure

    text = markdown(results)
    write_text(out.with_suffix(".md"), text)
    bands, transfer = [], []
    for run in results["runs"]:
        analysis = run["bands"]["32"]
        for row in analysis["rows"]:
            bands.append({**row, "model": run["source"], "case": "sample", "key": run["attack"],
                          "label": run["attack"], "status": "ok", "block": 32,
                          "dice_fg_clean": analysis["dice_fg_clean"]})  # fmt: skip
        for target, cell in run["transfer"].items():
            transfer.append({"source": run["source"], "target": target, "case": "sample",
                             "key": run["attack"], "label": run["attack"], "status": "ok",
                             **cell})  # fmt: skip
    write_band_figure(out.parent, bands, list(MODELS))
    write_transfer_figure(out.parent, transfer, list(MODELS))
    print(text)


def markdown(results) -> str:
    lines = [
        "Band analysis (fg Dice with only that band of δ applied; energy share in brackets)",
        "",
    ]
    for block in BLOCKS:
        lines += [
            f"{block}³ blocks:",
            "",
            "| model | attack | clean | all (δ) | low | middle | high | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in results["runs"]:
            bands = run["bands"][str(block)]
            rows = {row["band"]: row for row in bands["rows"]}
            cells = [f"{rows['all']['dice_fg']:.3f}"]
            for band in ANALYSIS_BANDS[1:]:
                row = rows[band]
                cells.append(f"{row['dice_fg']:.3f} ({100 * row['energy_fraction']:.0f} %)")
            lines.append(
                f"| {run['source']} | {run['attack']} | {bands['dice_fg_clean']:.3f} | "
                + " | ".join(cells)
                + f" | {bands['seconds']} |"
            )
        lines.append("")
    lines += [
        "Transfer (fg Dice of the column model on the row model's adversarial volume):",
        "",
        "| made on → scored on | " + " | ".join(MODELS) + " |",
        "|---|" + "---|" * len(MODELS),
    ]
    clean = {t: results["runs"][0]["transfer"][t]["dice_fg_clean"] for t in MODELS}
    lines.append("| clean | " + " | ".join(f"{clean[t]:.3f}" for t in MODELS) + " |")
    for run in results["runs"]:
        cells = [f"{run['transfer'][t]['dice_fg']:.3f}" for t in MODELS]
        lines.append(f"| {run['attack']} on {run['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
