#!/usr/bin/env python
"""The numbers of docs/teaching.md (the classroom script), measured with the library.

Everything runs on the bundled CT sample and the bundled ``demo`` model, 2 torch threads,
seed 0, the settings of the napari widgets' defaults:

* ``lens``: the live lens — a 48³ and a 64³ cube around the centre of the volume, 10 VAFA
  steps, q_max 10 / 20 / 40 (q_min 5) (the widget picks 48³ for 10 steps on 2 cores);
* ``attack``: the full VAFA run (q_max 20, 32³ blocks, 20 steps): per-class Dice clean and
  adversarial, Dice/SSIM of every step (the step scrubber), the zeroed coefficients and the
  quantization table, the DCT pictures, the changed labels and the perturbation's colour bar;
* ``pgd``: PGD ε 4 and ε 2 (20 steps), for VAFA vs PGD;
* ``train``: a short VAFT run as the training widget makes it (vafa-fr, 64³ patches, batch 2,
  lr 5e-4, 5-step VAFA while training, 20-step VAFA for validation), shrunk to 2 × 8 updates;
* ``slicer`` (only when asked): the Slicer attack module (``python -m vafa.slicer
  VAFAAttack``, run in this process) writing the DCT pictures and the q table.

Usage: ``.venv/bin/python scripts/teaching_numbers.py [--only lens attack pgd train slicer]
[--json F]``. Measured 2026-12-06 on 2 CPU cores while another job shared them: the default
sections 6 minutes (lens 0.5, attack 1, pgd 2, train 2.6), ``slicer`` 40 s more. The Dice
and SSIM values do not depend on the load; the seconds do.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_vafa._layer_data import display_limits, window_interior
from vafa.attacks.base import drive
from vafa.io.data import load_demo_model, load_sample, sample_paths
from vafa.io.model_space import labels_to_model_space, to_model_space
from vafa.run.lens import iter_lens, lens_region
from vafa.run.pipeline import run_attack

THREADS = 2
SEED = 0
SECTIONS = ("lens", "attack", "pgd", "train", "slicer")
#: Run by default (``slicer`` repeats the full VAFA run through the Slicer module: +40 s).
DEFAULT_SECTIONS = ("lens", "attack", "pgd", "train")
LENS_Q_MAX = (10, 20, 40)
VAFA = {"q_max": 20, "block_size": 32, "steps": 20}
LENS_STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--train-iterations", type=int, default=8, help="updates per epoch")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model, card = load_demo_model("cpu")
    image, labels = load_sample()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seed {SEED}")
    out: dict = {}
    start = time.perf_counter()
    if "lens" in args.only:
        out["lens"] = lens_numbers(model, card, image, labels)
    if "attack" in args.only:
        out["attack"] = attack_numbers(model, card, image, labels)
    if "pgd" in args.only:
        out["pgd"] = pgd_numbers(model, card, image, labels)
    if "train" in args.only:
        out["train"] = train_numbers(image, labels, args.train_iterations)
    if "slicer" in args.only:
        out["slicer"] = slicer_numbers()
    out["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal {out['total_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


# ----------------------------------------------------------------------------- 2. live lens
def lens_numbers(model, card, image, labels) -> dict:
    model_input = to_model_space(image, card)
    x01 = model_input.tensor
    y = labels_to_model_space(labels, model_input)
    shape = tuple(x01.shape[2:])
    center = tuple((n - 1) / 2 for n in shape)
    print(f"\n== live lens (volume {shape}, centre {center}) ==")

    def lens(q_max: float, size: int, steps: int) -> dict:
        region = lens_region(shape, center, size)
        options = {"q_max": q_max, "steps": steps}
        result = drive(
            iter_lens(
                model,
                x01,
                y,
                region,
                num_classes=card.out_channels,
                options=options,
                seed=SEED,
                device="cpu",
                size=size,
            )
        )
        row = {
            "q_max": q_max,
            "size": size,
            "steps": steps,
            "dice_clean": result.dice_clean,
            "dice_adversarial": result.dice_adversarial,
            "ssim": result.ssim,
            "seconds": result.seconds,
            "returned_step": result.returned_step,
        }
        print(
            f"lens {size}³ · {steps} steps · q 5–{q_max:g}: Dice {result.dice_clean:.3f} → "
            f"{result.dice_adversarial:.3f} · SSIM {result.ssim:.3f} · {result.seconds:.2f} s"
        )
        return row

    lens(20, 64, 2)  # warm-up: the first passes on a new shape are slow
    lens(20, 48, 2)
    # the lesson sets 10 steps for the lens; on 2 cores the widget then picks a 48³ cube
    # (benchmarks/bench_teaching.py lens), on a faster machine the 64³ it asks for
    cube48 = [lens(q, 48, LENS_STEPS) for q in LENS_Q_MAX]
    cube64 = [lens(q, 64, LENS_STEPS) for q in LENS_Q_MAX]
    return {"center": center, "cube48": cube48, "cube64": cube64}


# ----------------------------------------------------------------------------- 3–5, 7. full run
def attack_numbers(model, card, image, labels) -> dict:

    print("\n== full VAFA run (q_max 20, 32³ blocks, 20 steps) ==")
    start = time.perf_counter()
    outcome = run_attack(
        model, card, image, labels, attack="vafa", options=VAFA, seed=SEED, device="cpu"
    )
    seconds = time.perf_counter() - start
    m = outcome.metrics
    print(f"run_attack: {seconds:.1f} s, tiles {m.tiles_done}/{m.tiles_total}")
    per_class = []
    for name in m.class_names[1:]:
        clean = m.dice_per_class.clean.get(name)
        adv = m.dice_per_class.adversarial.get(name)
        if clean is not None:
            per_class.append({"class": name, "clean": clean, "adversarial": adv})
    per_class.sort(key=lambda r: r["adversarial"] - r["clean"])
    for r in per_class:
        print(
            f"  {r['class']:<28} {r['clean']:.3f} → {r['adversarial']:.3f} "
            f"({r['adversarial'] - r['clean']:+.3f})"
        )
    summary = {
        "seconds": seconds,
        "dice_fg": (m.dice_fg.clean, m.dice_fg.adversarial),
        "dice": (m.dice.clean, m.dice.adversarial),
        "ssim": m.ssim,
        "psnr": m.psnr,
        "linf_hu": m.linf_original_units,
        "flip_rate": m.flip_rate,
        "zeroed_fraction": m.zeroed_fraction,
        "per_tile_dice_fg": None if m.per_tile is None else m.per_tile.dice_fg.adversarial,
    }
    print(
        f"fg Dice {m.dice_fg.clean:.3f} → {m.dice_fg.adversarial:.3f} · SSIM {m.ssim:.3f} · "
        f"PSNR {m.psnr:.1f} dB · L∞ {m.linf_original_units:.0f} HU · "
        f"zeroed {m.zeroed_fraction:.3f}"
    )

    steps, stride = _scrubber_numbers(outcome, card)
    dct = _dct_numbers(outcome, card)
    compare = _compare_numbers(outcome)
    return {
        "summary": summary,
        "per_class": per_class,
        "steps": steps,
        "history_stride": stride,
        "dct": dct,
        "compare": compare,
    }


def _scrubber_numbers(outcome, card) -> tuple[list, int]:
    """4. the step scrubber: the attack's own Dice and SSIM of every step, and the history's
    stride."""
    from vafa.run.history import StepHistory
    from vafa.run.tiles import tile_grid

    steps = [
        {
            "step": r["step"],
            "dice": r["dice"],
            "ssim": r["ssim"],
            "loss": r["loss"],
            "returned": bool(r.get("returned")),
        }
        for r in outcome.history
    ]
    print("steps (attack's Dice on its tile, SSIM):")
    print("  " + " ".join(f"{s['step']}:{s['dice']:.3f}/{s['ssim']:.3f}" for s in steps))
    returned = [s["step"] for s in steps if s["returned"]]
    print(f"  returned step {returned}")
    roi = tuple(card.roi_size)
    x01 = outcome.model_input.tensor
    history = StepHistory(
        x01, VAFA["steps"], tiles=tile_grid(x01.shape[2:], roi), roi=roi, with_tables=True
    )
    stride = history.stride
    history.release()

    return steps, stride


def _dct_numbers(outcome, card) -> dict:
    """5. the DCT pictures, the zeroed coefficients and the quantization table (the widget's
    layers)."""
    from vafa.report.figures import dct_pictures
    from vafa.run.tiling import quantized_to_zero_layout

    roi = tuple(card.roi_size)
    x01 = outcome.model_input.tensor
    start = time.perf_counter()
    dct_clean, dct_adv = dct_pictures(outcome, (32, 32, 32))
    q = torch.from_numpy(outcome.q_table.array)[None, None]
    zeroed = quantized_to_zero_layout(x01, q, (32, 32, 32), roi)[0, 0].numpy()
    layer_seconds = time.perf_counter() - start
    table = outcome.q_table.array
    dct = {
        "zeroed_layer_fraction": float(zeroed.mean()),
        "q_min": float(table.min()),
        "q_mean": float(table.mean()),
        "q_max": float(table.max()),
        "q_at_max": float((table >= VAFA["q_max"] - 1e-6).mean()),
        "q_at_min": float((table <= 5 + 1e-6).mean()),
        "dct_clean_mean": float(dct_clean.mean()),
        "dct_adversarial_mean": float(dct_adv.mean()),
        "layer_seconds": layer_seconds,
    }
    print(
        f"zeroed layer {dct['zeroed_layer_fraction']:.3f} of voxels · q table "
        f"{dct['q_min']:g}–{dct['q_max']:g}, mean {dct['q_mean']:.2f}, at 20: "
        f"{dct['q_at_max']:.3f}, at 5: {dct['q_at_min']:.3f} · mean log|c| "
        f"{dct['dct_clean_mean']:.2f} → {dct['dct_adversarial_mean']:.2f} · "
        f"{layer_seconds:.1f} s"
    )

    return dct


def _compare_numbers(outcome) -> dict:
    """7. the compare view: the changed labels and the perturbation's colour bar."""
    clean_pred = outcome.clean_prediction.array.astype(int)
    adv_pred = outcome.adversarial_prediction.array.astype(int)
    changed = clean_pred != adv_pred
    change = np.abs(outcome.perturbation.array)
    change = change[change != 0]
    # the widget's own contrast limits of the perturbation layer (from the voxels inside the
    # model's intensity window)
    seen = window_interior(outcome.model_input.mapping, outcome.model_input.source.array)
    bar = display_limits({"perturbation": outcome.perturbation.array}, seen)["perturbation"]
    names = list(outcome.metrics.class_names)
    lost = {
        names[c]: int((clean_pred == c).sum() - (adv_pred == c).sum())
        for c in range(1, len(names))
        if (clean_pred == c).any()
    }
    compare = {
        "changed_voxels": int(changed.sum()),
        "voxels": int(changed.size),
        "changed_to_background": int((changed & (adv_pred == 0)).sum()),
        "colour_bar_hu": float(bar[1]),
        "max_change_hu": float(change.max()),
        "changed_fraction_of_voxels": float(change.size / outcome.perturbation.array.size),
        "voxels_lost_by_class": dict(sorted(lost.items(), key=lambda kv: -kv[1])),
    }
    print(
        f"changed labels: {compare['changed_voxels']} of {compare['voxels']} voxels "
        f"({compare['changed_to_background']} now background) · colour bar ±"
        f"{compare['colour_bar_hu']:.0f} HU (max {compare['max_change_hu']:.0f})"
    )
    print(
        "  voxels lost by class: "
        + ", ".join(f"{k} {v:+d}" for k, v in list(compare["voxels_lost_by_class"].items())[:5])
    )
    return compare


# ----------------------------------------------------------------------------- 6. PGD
def pgd_numbers(model, card, image, labels) -> list[dict]:
    print("\n== PGD (α 0.01, 20 steps) ==")
    rows = []
    for eps in (4, 2):
        start = time.perf_counter()
        outcome = run_attack(
            model,
            card,
            image,
            labels,
            attack="pgd",
            options={"eps": eps, "steps": 20},
            seed=SEED,
            device="cpu",
        )
        m = outcome.metrics
        row = {
            "eps": eps,
            "dice_fg": (m.dice_fg.clean, m.dice_fg.adversarial),
            "ssim": m.ssim,
            "psnr": m.psnr,
            "linf_hu": m.linf_original_units,
            "seconds": time.perf_counter() - start,
        }
        print(
            f"PGD ε {eps}: fg Dice {m.dice_fg.clean:.3f} → {m.dice_fg.adversarial:.3f} · "
            f"SSIM {m.ssim:.3f} · PSNR {m.psnr:.1f} dB · L∞ {m.linf_original_units:.1f} HU · "
            f"{row['seconds']:.1f} s"
        )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- 8. VAFT
def train_numbers(image, labels, iterations: int) -> dict:
    from dataclasses import replace

    from vafa.training import TrainingConfig, train

    print(f"\n== VAFT (vafa-fr, 2 × {iterations} updates, 64³ patches) ==")
    model, card = load_demo_model("cpu")
    card = replace(card, roi_size=(64, 64, 64))  # the widget's patch size (also the val tiles)
    config = TrainingConfig(
        mode="vafa-fr",
        epochs=2,
        iterations_per_epoch=iterations,
        batch_size=2,
        lr=5e-4,
        lambda_fr=1.0,
        attack_options={"steps": 5},
        validation_attack="vafa",
        validation_attack_options={"steps": 20},
        seed=SEED,
    )
    events = []

    def on_event(event) -> None:
        if event.stage == "train":
            events.append({"iteration": event.iteration, "elapsed": event.elapsed, **event.losses})
        elif event.validation is not None:
            v = event.validation
            events.append(
                {
                    "iteration": event.iteration,
                    "elapsed": event.elapsed,
                    "validation": {
                        k: v.get(k) for k in ("dice_fg_clean", "dice_fg_adv", "dice_fg_adv_tiles")
                    },
                }
            )

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(
            model,
            card,
            [(image, labels)],
            [(image, labels)],
            out_dir=tmp,
            config=config,
            device="cpu",
            callback=on_event,
        )
    seconds = time.perf_counter() - start
    updates = [e for e in events if "loss" in e]
    validations = [e for e in events if "validation" in e]

    def f(value, digits=3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for e in updates:
        print(
            f"  update {e['iteration']:>2}: loss {f(e.get('loss'))} (clean "
            f"{f(e.get('clean'))}, adv {f(e.get('adv'))}, fr {f(e.get('fr'), 4)}) "
            f"at {e['elapsed']:.0f} s"
        )
    for e in validations:
        v = e["validation"]
        print(
            f"  validation after {e['iteration']} updates ({e['elapsed']:.0f} s): fg Dice "
            f"clean {f(v['dice_fg_clean'])}, under VAFA {f(v['dice_fg_adv'])}, attacked "
            f"tiles {f(v['dice_fg_adv_tiles'])}"
        )
    print(f"  {seconds:.0f} s in all, {result.iterations} updates")
    return {"seconds": seconds, "updates": updates, "validations": validations}


# ----------------------------------------------------------------------------- 9. Slicer
def slicer_numbers() -> dict:
    from vafa.io.volume import load_volume
    from vafa.slicer.run import main as slicer_main

    print("\n== Slicer attack module (VAFAAttack, defaults) ==")
    ct, seg = sample_paths()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        outputs = ("adversarial", "dct_clean", "dct_adversarial", "q_table")
        argv = ["VAFAAttack", str(ct), "--labels", str(seg), "--model", "demo", "--device", "cpu"]
        for name in outputs:
            argv += [f"--{name}", str(d / f"{name}.nii.gz")]
        argv += ["--returnparameterfile", str(d / "results.txt")]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # Slicer's progress lines
            status = slicer_main(argv)
        seconds = time.perf_counter() - start
        results = (d / "results.txt").read_text()
        volumes = {}
        for name in outputs:
            v = load_volume(d / f"{name}.nii.gz")
            volumes[name] = {
                "shape": list(v.array.shape),
                "min": float(v.array.min()),
                "max": float(v.array.max()),
            }
    print(f"exit {status} in {seconds:.1f} s; results: " + "; ".join(results.split("\n")))
    for name, v in volumes.items():
        print(f"  {name}: {v['shape']}, {v['min']:.2f} … {v['max']:.2f}")
    return {"status": status, "seconds": seconds, "results": results, "volumes": volumes}


if __name__ == "__main__":
    main()
