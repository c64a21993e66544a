#!/usr/bin/env python
"""SA² and VAFA by DCT band on the bundled task: foreground Dice and SSIM.

The settings of the attack tables in ``docs/results.md``: the bundled CT with its labels, the
bundled demo model, the whole sample in one tile of the card's roi (128³), seed 0, Dice of
the sliding-window prediction (overlap 0.5) of the whole adversarial volume, SSIM of the
attack's output. Rows:

* SA² (``sa2``) as published: ρ 0.2, factor steps 0.1, 8³ blocks, 10 steps, random start, the
  last iterate; bands all / low / middle / high (the DC terms never change);
* VAFA q_max 20, 32³ blocks, 20 steps, ``normalize="clip"``, ``keep="best"`` (the library
  defaults of the documented VAFA row); bands all / low / middle / high (``bands``: only that
  band is quantized).

Bands: :mod:`vafa.ops.bands` (thirds of the normalised DCT index within a block).

Usage: ``python scripts/band_attacks.py [--threads 1] [--roi 128] [--json out.json]``
(prints a Markdown table; about 20 CPU minutes on one thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from vafa.io.data import load_demo_model, load_sample
from vafa.run.pipeline import run_attack

SEED = 0
BANDS = ("all", "low", "middle", "high")
SA2 = {"rho": 0.2, "factor_step": 0.1, "block_size": 8, "steps": 10}
VAFA = {"q_max": 20, "block_size": 32, "steps": 20, "normalize": "clip", "keep": "best"}


def entries() -> list[tuple[str, str, dict]]:
    """``(label, attack, options)`` of every row."""
    rows = [(f"SA² ρ 0.2, {band}", "sa2", {**SA2, "bands": band}) for band in BANDS]
    rows += [(f"VAFA q_max 20, {band}", "vafa", {**VAFA, "bands": band}) for band in BANDS]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--roi", type=int, default=None, help="tile side (default: the card's)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, labels = load_sample()
    model, card = load_demo_model(device="cpu")
    if args.roi:
        card = dataclasses.replace(card, roi_size=(args.roi,) * 3)
    rows = []
    for label, attack, options in entries():
        start = time.perf_counter()
        outcome = run_attack(model, card, image, labels, attack=attack, options=options, seed=SEED)
        metrics = outcome.metrics
        rows.append(
            {
                "label": label,
                "attack": attack,
                "options": options,
                "dice_fg_clean": metrics.dice_fg.clean,
                "dice_fg": metrics.dice_fg.adversarial,
                "ssim": metrics.ssim,
                "linf": metrics.linf,
                "wall_s": time.perf_counter() - start,
            }
        )
        print(
            f"{label}: fg Dice {rows[-1]['dice_fg']:.3f}, SSIM {rows[-1]['ssim']:.3f}", flush=True
        )
    clean = rows[0]["dice_fg_clean"]
    lines = [
        f"| attack (roi {card.roi_size[0]}³, seed {SEED}) | fg Dice | change | SSIM | L∞ (/255) | wall |",
        "|---|---|---|---|---|---|",
        f"| clean | {clean:.3f} | – | 1 | 0 | – |",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['dice_fg']:.3f} | {row['dice_fg'] - clean:+.3f} | "
            f"{row['ssim']:.3f} | {row['linf'] * 255:.1f} | {row['wall_s']:.0f} s |"
        )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
