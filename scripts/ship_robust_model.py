#!/usr/bin/env python
"""Ship a VAFT fine-tuned demo model as the bundled "robust-demo" model.

Takes a checkpoint written by ``vafa train`` (by default the ``vafa-fr`` run of
``scripts/vaft_evidence.sh``), gives its card the demo model's tile size (the fine-tuning used
96³ patches; the bundled models are both run on the whole sample in one 128³ tile, so that
attacks and evaluation are the same for both) and a provenance entry, and writes
``src/vafa/data/robust_demo_model.safetensors`` + card.

Usage: ``python scripts/ship_robust_model.py [CHECKPOINT]``
(default ``runs/vaft-evidence/vafa-fr/best.safetensors``).
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
        "checkpoint", nargs="?", default="runs/vaft-evidence/vafa-fr/best.safetensors"
    )
    args = parser.parse_args(argv)
    model, card = load_model(args.checkpoint, device="cpu")
    _, demo_card = load_demo_model(device="cpu")
    training = dict(card.training or {})
    provenance = {
        "fine_tuned_by": "scripts/vaft_evidence.sh (vafa train), shipped by "
        "scripts/ship_robust_model.py",
        "fine_tuned_from": "the bundled demo model (demo_model.safetensors)",
        "training_patch_size": list(card.roi_size),
        "roi_size_note": "set to the demo model's roi so both bundled models run identically",
        "data": demo_card.provenance.get("data"),
        "note": "a demo model fitted to one scan and fine-tuned on it; not a clinical or "
        "general-purpose segmenter",
    }
    shipped = dataclasses.replace(
        card, roi_size=demo_card.roi_size, provenance=provenance, training=training
    )
    path = DATA_DIR / BUNDLED_MODELS["robust-demo"]
    save_model(model, shipped, path)
    print(f"wrote {path} (+ card)")
    return path


if __name__ == "__main__":
    main()
