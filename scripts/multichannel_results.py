#!/usr/bin/env python
"""Attacks on a synthetic 4-channel, BraTS-style task: per-region Dice, SSIM and the change of
every channel in its own units (the numbers of ``docs/results.md``, "Several input channels").

The task (drawn here, seeded; no download): 48³ volumes, 1.5 mm, a tumour made of nested
blobs — edema (label 2), a core (label 1) and an enhancing rim (label 4) — seen by four
co-registered sequences, each in its own units and with its own noise and contrast (T1c: the
rim bright; T1: the core dark; T2 and FLAIR: the edema bright). The model: MONAI ``SegResNet``
(8 initial filters), 4 input channels, 3 sigmoid outputs TC / WT / ET (the BraTS regions, as
MONAI's BraTS bundle; card ``outputs`` sigmoid, threshold 0.5), per-channel z-score input
mapping, trained here from scratch by VAFT's trainer in ``clean`` mode (Dice + BCE) on 12 cases
for ``--iterations`` updates. Evaluated on 4 other cases, each attacked as a whole (one tile of
the card's roi 48³), seed 0; Dice of the sliding-window prediction per region (mean over the
cases), SSIM of the model input, and the largest change of the model input in each channel's
units (L∞ in [0, 1] times that channel's window width; a voxel beyond the ±5σ window that the
attack moved inside changes more in the written file).

Usage: ``python scripts/multichannel_results.py [--threads 2] [--iterations 300] [--json out]``
(prints a Markdown table; about 10 CPU minutes on 2 threads).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from vafa.io.channels import load_image
from vafa.io.model_space import load_model_labels
from vafa.io.models import ModelCard, build_model
from vafa.ops.heads import BRATS_REGIONS
from vafa.run.pipeline import run_attack
from vafa.training import TrainingConfig, train

SIZE, SPACING = 48, 1.5
CHANNELS = ("T1c", "T1", "T2", "FLAIR")
#: per channel: (scale, offset, noise) of its units, and its contrast of edema / core / rim
UNITS = {"T1c": (800.0, 200.0, 0.06), "T1": (600.0, 300.0, 0.05), "T2": (90.0, 20.0, 0.08),
         "FLAIR": (2.0, 0.5, 0.07)}  # fmt: skip
CONTRAST = {"T1c": (0.05, 0.0, 0.6), "T1": (-0.1, -0.35, -0.2), "T2": (0.5, 0.3, 0.3),
            "FLAIR": (0.55, 0.2, 0.2)}  # fmt: skip
REGIONS = {name: list(labels) for name, labels in BRATS_REGIONS.items()}  # TC, WT, ET
ATTACKS = [
    ("VAFA q_max 20, 16³ blocks, 20 steps", "vafa", {"q_max": 20, "block_size": 16, "steps": 20}),
    ("PGD ε 4, 20 steps", "pgd", {"eps": 4, "steps": 20}),
    ("PGD ε 8, 20 steps", "pgd", {"eps": 8, "steps": 20}),
    ("SA² ρ 0.2, 8³ blocks, 10 steps", "sa2", {"rho": 0.2, "steps": 10}),
]


def draw_case(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``([T1c, T1, T2, FLAIR] float32, labels uint8 0/1/2/4)`` of one synthetic case."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij")).astype(np.float32)
    centre = rng.uniform(16, 32, 3)
    radii = rng.uniform(0.8, 1.25, 3)
    r = np.sqrt((((grid - centre[:, None, None, None]) * radii[:, None, None, None]) ** 2).sum(0))
    wt, tc = rng.uniform(9, 13), rng.uniform(4, 7)
    labels = np.zeros((SIZE,) * 3, np.uint8)
    labels[r < wt] = 2
    labels[r < tc + 1.5] = 4
    labels[r < tc] = 1
    brain = rng.normal(0.4, 0.03, (SIZE,) * 3)
    arrays = []
    for name in CHANNELS:
        scale, offset, noise = UNITS[name]
        edema, core, rim = CONTRAST[name]
        x = brain.copy()
        x[labels == 2] += edema
        x[labels == 1] += core
        x[labels == 4] += rim
        x += rng.normal(0, noise, x.shape)
        arrays.append((x * scale + offset).astype(np.float32))
    return arrays, labels


def write_cases(folder: Path, seeds) -> list[dict]:
    affine = np.diag([SPACING] * 3 + [1.0])
    entries = []
    for seed in seeds:
        arrays, labels = draw_case(seed)
        files = []
        for c, array in enumerate(arrays):
            files.append(f"case{seed}_{c:04d}.nii.gz")
            nib.save(nib.Nifti1Image(array, affine), folder / files[-1])
        nib.save(nib.Nifti1Image(labels, affine), folder / f"case{seed}_seg.nii.gz")
        entries.append({"image": files, "label": f"case{seed}_seg.nii.gz"})
    return entries


def make_card() -> ModelCard:
    return ModelCard.from_preset(
        "segresnet",
        in_channels=4,
        channel_names=list(CHANNELS),
        out_channels=3,
        class_names=list(REGIONS),
        outputs={"activation": "sigmoid", "threshold": 0.5, "regions": REGIONS},
        roi_size=(SIZE,) * 3,
        intensity={"type": "zscore", "k": 5.0, "nonzero": False},
        spacing=None,
        orientation=None,
        kwargs={"init_filters": 8},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="vafa_multichannel_"))
    datalist = work / "data.json"
    entries = write_cases(work, range(16))
    datalist.write_text(json.dumps({"training": entries[:12], "validation": entries[12:]}))
    card = make_card()
    model = build_model(card)
    start = time.perf_counter()
    config = TrainingConfig(mode="clean", epochs=1, iterations_per_epoch=args.iterations,
                            batch_size=2, lr=2e-3, validation_attack=None)  # fmt: skip
    train(model, card, datalist, out_dir=work / "run", config=config, device="cpu")
    trained = time.perf_counter() - start
    model.eval()
    rows = []
    for label, attack, options in ATTACKS:
        per_case = []
        for entry in entries[12:]:
            image = load_image([work / f for f in entry["image"]], 4, list(CHANNELS))
            labels = load_model_labels(work / entry["label"], image, card)
            outcome = run_attack(model, card, image, labels, attack=attack, options=options,
                                 seed=0, device="cpu")  # fmt: skip
            # the model input's largest change per channel, in that channel's units (voxels
            # beyond a window that the attack moved inside change more in the written file)
            moved = (outcome.adversarial01 - outcome.model_input.tensor).abs()
            change = (
                moved.amax(dim=(2, 3, 4))[0].double().numpy() * outcome.model_input.mapping.widths
            )
            per_case.append((outcome.metrics, change))
        rows.append(summarise(label, per_case))
    print(f"trained {args.iterations} updates in {trained:.0f} s; {len(entries) - 12} cases\n")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def summarise(label: str, per_case) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    regions = {}
    for name in REGIONS:
        regions[name] = (
            mean([m.dice_per_class.clean[name] for m, _ in per_case]),
            mean([m.dice_per_class.adversarial[name] for m, _ in per_case]),
        )
    change = np.max([c for _, c in per_case], axis=0)
    return {
        "attack": label,
        "dice": regions,
        "ssim": mean([m.ssim for m, _ in per_case]),
        "linf_units": dict(zip(CHANNELS, change.tolist(), strict=True)),
    }


def markdown(rows: list[dict]) -> str:
    head = "| attack | " + " | ".join(f"{n} Dice clean → adv." for n in REGIONS) + " | SSIM | "
    head += " | ".join(f"L∞ {c}" for c in CHANNELS) + " |"
    lines = [head, "|" + "---|" * (2 + len(REGIONS) + len(CHANNELS))]
    for row in rows:
        dice = " | ".join(f"{a:.3f} → {b:.3f}" for a, b in row["dice"].values())
        units = " | ".join(f"{v:.3g}" for v in row["linf_units"].values())
        lines.append(f"| {row['attack']} | {dice} | {row['ssim']:.3f} | {units} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
