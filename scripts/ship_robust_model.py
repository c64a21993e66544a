#!/usr/bin/env python
"""Ship the matched-compute ``vafa-fr`` fine-tune as the bundled "robust-demo" model.

Takes the ``vafa-fr`` run of ``scripts/vaft_evidence.sh`` (its final weights, after the same
number of updates as the other modes) and the table of ``scripts/vaft_evaluate.py``, sets the
card's roi to the 96³ tiles the table was measured with, adds a provenance entry that carries
the matched table, and writes ``src/vafa/io/data/robust_demo_model.safetensors`` + card.

Usage: ``python scripts/ship_robust_model.py [--runs runs/vaft-matched]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vafa.io.checkpoints import load_model, save_model
from vafa.io.data import BUNDLED_MODELS, DATA_DIR, load_demo_model


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/vaft-matched", help="vaft_evidence.sh output")
    parser.add_argument("--table", help="vaft_evaluate.py JSON (default RUNS/matched.json)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    model, card = load_model(runs / "vafa-fr" / "latest.safetensors", device="cpu")
    matched = json.loads(Path(args.table or runs / "matched.json").read_text(encoding="utf-8"))
    _, demo_card = load_demo_model(device="cpu")
    training = dict(card.training or {})
    roi = matched["roi"]
    provenance = {
        "fine_tuned_by": "scripts/vaft_evidence.sh (vafa train, mode vafa-fr), shipped by "
        "scripts/ship_robust_model.py",
        "fine_tuned_from": "the bundled demo model (demo_model.safetensors)",
        "updates": training.get("iterations_done"),
        "training_patch": list(card.roi_size),
        "roi_note": f"roi {roi}³: the tiles of the matched evaluation (training patches "
        f"{card.roi_size[0]}³)",
        "data": demo_card.provenance.get("data"),
        "matched_table": {
            "evaluated_by": "scripts/vaft_evaluate.py",
            "entries": matched["entries"],
            "rows": matched["rows"],
        },
        "note": "a demo model fitted to one scan and fine-tuned on it; not a clinical or "
        "general-purpose segmenter",
    }
    shipped = dataclasses.replace(
        card, roi_size=(roi,) * 3, provenance=provenance, training=training
    )
    path = DATA_DIR / BUNDLED_MODELS["robust-demo"]
    save_model(model, shipped, path)
    print(f"wrote {path} (+ card)")
    return path


if __name__ == "__main__":
    main()
