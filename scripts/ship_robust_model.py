#!/usr/bin/env python
"""Ship a VAFT fine-tuned demo model as the bundled "robust-demo" model.

Takes a checkpoint written by ``vafa train`` (by default the ``vafa-fr-long`` run of
``scripts/vaft_evidence.sh``), keeps its card (the roi is the 96³ patch size it was fine-tuned
and validated with) and adds a provenance entry, and writes
``src/vafa/data/robust_demo_model.safetensors`` + card.

Usage: ``python scripts/ship_robust_model.py [CHECKPOINT]``
(default ``runs/vaft-evidence/vafa-fr-long/best.safetensors``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vafa.checkpoints import load_model, save_model
from vafa.data import BUNDLED_MODELS, DATA_DIR, load_demo_model


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", default="runs/vaft-evidence/vafa-fr-long/best.safetensors"
    )
    args = parser.parse_args(argv)
    model, card = load_model(args.checkpoint, device="cpu")
    _, demo_card = load_demo_model(device="cpu")
    training = dict(card.training or {})
    provenance = {
        "fine_tuned_by": "scripts/vaft_evidence.sh (vafa train), shipped by "
        "scripts/ship_robust_model.py",
        "fine_tuned_from": "the bundled demo model (demo_model.safetensors)",
        "roi_note": "the 96³ patch size of the fine-tuning (the demo model runs in one 128³ "
        "tile); measured with 128³ tiles its clean Dice is 0.01–0.02 lower",
        "data": demo_card.provenance.get("data"),
        "note": "a demo model fitted to one scan and fine-tuned on it; not a clinical or "
        "general-purpose segmenter",
    }
    shipped = dataclasses.replace(card, provenance=provenance, training=training)
    path = DATA_DIR / BUNDLED_MODELS["robust-demo"]
    save_model(model, shipped, path)
    print(f"wrote {path} (+ card)")
    return path


if __name__ == "__main__":
    main()
