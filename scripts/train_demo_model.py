#!/usr/bin/env python
"""Train the bundled demo model (src/vafa/io/data/demo_model.safetensors) on the bundled sample CT.

The demo model is the small MONAI ``UNet`` of the ``demo-unet`` preset (see
:mod:`vafa.io.models`), trained on CPU for a few minutes on the one bundled abdominal CT
(TotalSegmentator 2.18.0's example CT, 122×101×112 voxels at 3 mm, RAS) against the organ labels
that TotalSegmentator predicted for it (renumbered to Synapse/BTCV, 14 classes; esophagus is not
in the sample). It is a *demo* model: it has seen one scan, and it is only meant to segment that
scan well enough that an attack has something to destroy.

What the script does:

* intensity: the card's CT window [-175, 250] HU → [0, 1] (clipped);
* held-out slab: ``--holdout-size`` (16) contiguous axial slices (the third array axis ``k``,
  superior–inferior in RAS voxel order), centred on the middle of the labelled organs' extent
  along ``k``. Their labels are never used: crop centres are never drawn from them and the loss
  is masked to zero there (the slab's *image* may appear as context inside a crop);
* patches: random ``--patch``³ crops (default 64³), ``--fg-prob`` of them centred on a voxel of a
  foreground class drawn uniformly among the present classes (class-balanced oversampling of
  small organs such as the adrenal glands), the rest anywhere; the volume is zero-padded (air)
  so that crops can hang over its border;
* augmentation: intensity scale/shift, and with probability ``--spatial-prob`` a small rotation
  (±10°) and zoom (0.9–1.1) of the crop. No flips: left/right organs are lateralised;
* loss: :class:`vafa.ops.losses.DiceCELoss` (the paper's DiceCE) on the voxels outside the slab;
* optimiser: AdamW, linear warm-up then cosine decay. The number of iterations is fixed after
  timing the first ones so that training ends within ``--minutes`` of wall clock (or exactly
  ``--iters``); a wall-clock guard stops earlier if the machine slows down, and training stops
  early once the loss has converged;
* evaluation: whole-volume inference (the volume zero-padded to the card's 128³ ROI, one tile),
  Dice per class on the whole sample and on the held-out slab (:func:`vafa.ops.metrics.dice_per_class`);
  foreground mean = mean over the foreground classes present in the reference;
* output: ``demo_model.safetensors`` + its card (``save_model``) and ``demo_model_report.json``
  in ``--out``; nothing is written with ``--no-save``.

Usage::

    python scripts/train_demo_model.py --out src/vafa/io/data/             # re-train (14 min, 2 threads)
    python scripts/train_demo_model.py --minutes 5 --threads 1 --no-save  # a quick experiment
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vafa.io.checkpoints import save_model
from vafa.io.data import SAMPLE_CLASS_NAMES, load_sample
from vafa.io.intensity import mapping_from_dict
from vafa.io.models import ModelCard, build_model, count_parameters
from vafa.ops.devices import keep_freed_memory
from vafa.ops.losses import DiceCELoss
from vafa.ops.metrics import dice_per_class

ROI = (128, 128, 128)
WEIGHTS_NAME = "demo_model.safetensors"
REPORT_NAME = "demo_model_report.json"
SCRIPT = "scripts/train_demo_model.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("src/vafa/io/data"), help="output folder")
    p.add_argument("--minutes", type=float, default=14.0, help="wall-clock training budget")
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="fixed iteration count (overrides the budget estimate)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--patch", type=int, default=64, help="training crop side (multiple of 8)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=30, help="warm-up iterations")
    p.add_argument("--fg-prob", type=float, default=0.8, help="share of foreground-centred crops")
    p.add_argument("--spatial-prob", type=float, default=0.3, help="probability of rotation/zoom")
    p.add_argument(
        "--edge-prob",
        type=float,
        default=0.3,
        help="share of crops whose outside-the-volume part is edge-replicated (else zeros)",
    )
    p.add_argument("--holdout-size", type=int, default=16, help="held-out axial slices (0: none)")
    p.add_argument("--eval-every", type=int, default=100, help="iterations between progress evals")
    p.add_argument(
        "--kwargs",
        type=json.loads,
        default=None,
        help="JSON constructor arguments to override the demo-unet preset (experiments)",
    )
    p.add_argument("--no-save", action="store_true", help="train and evaluate, write nothing")
    p.add_argument("--skip-timing", action="store_true", help="skip the attack-speed measurement")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ data


def holdout_slab(labels: np.ndarray, size: int) -> tuple[int, int]:
    """``[k0, k1)``: ``size`` axial slices centred on the foreground's extent along ``k``."""
    if size <= 0:
        return (0, 0)
    ks = np.nonzero((labels > 0).any(axis=(0, 1)))[0]
    centre = (int(ks.min()) + int(ks.max()) + 1) // 2
    k0 = min(max(centre - size // 2, 0), labels.shape[2] - size)
    return (k0, k0 + size)


def pad_offsets(shape: tuple[int, ...], roi: tuple[int, ...]) -> list[tuple[int, int]]:
    """Centred zero padding of ``shape`` up to ``roi``: ``[(before, after)] * 3``."""
    out = []
    for s, r in zip(shape, roi, strict=True):
        extra = max(r - s, 0)
        out.append((extra // 2, extra - extra // 2))
    return out


def predict_volume(
    model: torch.nn.Module, image: np.ndarray, pad: str = "zeros", roi=ROI
) -> np.ndarray:
    """Class map ``[H, W, D]`` of a whole model-space volume no larger than ``roi``, in one tile.

    ``pad="zeros"`` (the evaluation): zero padding split evenly before/after each axis (the
    extra voxel after), which is what MONAI's ``sliding_window_inference`` (and so
    :func:`vafa.run.tiling.sliding_window_predict`) does to a volume smaller than its window; one
    window covers it. ``pad="replicate"``: padding at the high end by edge replication, as
    :func:`vafa.run.tiling.attack_volume` builds its tile (the attack's clean prediction)."""
    if any(s > r for s, r in zip(image.shape, roi, strict=True)):
        raise ValueError(f"volume {image.shape} larger than roi {roi}")
    x = torch.from_numpy(image)[None, None].float()
    if pad == "zeros":
        before = [(r - s) // 2 for s, r in zip(image.shape, roi, strict=True)]
        pads = [
            v
            for s, r, b in reversed(list(zip(image.shape, roi, before, strict=True)))
            for v in (b, r - s - b)
        ]
        x = F.pad(x, pads)
    else:
        before = [0, 0, 0]
        pads = [
            v for s, r in reversed(list(zip(image.shape, roi, strict=True))) for v in (0, r - s)
        ]
        x = F.pad(x, pads, mode="replicate")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train(was_training)
    crop = tuple(slice(b, b + s) for b, s in zip(before, image.shape, strict=True))
    return logits.argmax(1)[0][crop].numpy()


def monai_sliding_window(model: torch.nn.Module, image: np.ndarray, roi=ROI) -> np.ndarray:
    """The same class map by MONAI ``sliding_window_inference`` (overlap 0.5), as a check."""
    from monai.inferers import sliding_window_inference

    model.eval()
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None, None].float(), roi, 1, model, overlap=0.5
        )
    return torch.as_tensor(logits).argmax(1)[0].numpy()


def dice_table(pred: np.ndarray, ref: np.ndarray, names, k_range=None) -> dict:
    """Per-class Dice (None where the class is absent from ``ref``) and the foreground mean."""
    if k_range is not None:
        pred, ref = pred[..., k_range[0] : k_range[1]], ref[..., k_range[0] : k_range[1]]
    d = dice_per_class(
        torch.from_numpy(pred)[None, None].long(),
        torch.from_numpy(ref)[None, None].long(),
        len(names),
    )[0]
    per_class = {
        n: (None if math.isnan(v) else round(float(v), 4))
        for n, v in zip(names, d.tolist(), strict=True)
    }
    fg = [v for n, v in list(per_class.items())[1:] if v is not None]
    return {
        "dice_fg_mean": round(float(np.mean(fg)), 4),
        "n_fg_classes": len(fg),
        "dice_per_class": per_class,
    }


class PatchSampler:
    """Random crops of the (zero-padded) volume with class-balanced foreground centres."""

    def __init__(
        self, image, labels, valid, patch, fg_prob, spatial_prob, rng, num_classes, edge_prob=0.3
    ):
        self.patch = patch
        m = patch // 2
        self.margin = m
        # two paddings of the volume, as the library pads it: zeros (air; MONAI's sliding
        # window) and edge replication (vafa.run.tiling.attack_volume). Zero padding is known air
        # (background, in the loss); replicated voxels have no label (out of the loss).
        self.images = (np.pad(image, m), np.pad(image, m, mode="edge"))
        self.labels = np.pad(labels, m)
        self.valids = (np.pad(valid, m, constant_values=1), np.pad(valid, m, constant_values=0))
        self.fg_prob, self.spatial_prob, self.edge_prob, self.rng = (
            fg_prob,
            spatial_prob,
            edge_prob,
            rng,
        )
        lab_v = np.where(self.valids[0].astype(bool), self.labels, -1)  # never centre on the slab
        self.class_voxels = {
            c: np.argwhere(lab_v == c) for c in range(1, num_classes) if (lab_v == c).any()
        }
        inner = np.zeros_like(self.valids[0], dtype=bool)
        inner[m:-m, m:-m, m:-m] = True
        self.any_voxels = np.argwhere(inner & self.valids[0].astype(bool))

    def sample(self):
        rng = self.rng
        if rng.random() < self.fg_prob and self.class_voxels:
            cls = list(self.class_voxels)[rng.integers(len(self.class_voxels))]
            vox = self.class_voxels[cls]
        else:
            vox = self.any_voxels
        centre = vox[rng.integers(len(vox))] + rng.integers(-8, 9, size=3)
        lo = [
            int(np.clip(c - self.patch // 2, 0, s - self.patch))
            for c, s in zip(centre, self.labels.shape, strict=True)
        ]
        sl = tuple(slice(a, a + self.patch) for a in lo)
        edge = int(rng.random() < self.edge_prob)
        img = torch.from_numpy(self.images[edge][sl].copy())[None]
        lab = torch.from_numpy(self.labels[sl].astype(np.float32))[None]
        val = torch.from_numpy(self.valids[edge][sl].astype(np.float32))[None]
        # intensity: scale and shift, then back into [0, 1]
        img = (img * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)).clamp(0, 1)
        if rng.random() < self.spatial_prob:
            img, lab, val = self._affine(img, lab, val)
        return img, lab, val

    def _affine(self, img, lab, val):
        rng = self.rng
        angles = np.deg2rad(rng.uniform(-10, 10, size=3))
        zoom = rng.uniform(0.9, 1.1)
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        mat = (rx @ ry @ rz) / zoom
        theta = torch.zeros(1, 3, 4)
        theta[0, :, :3] = torch.from_numpy(mat).float()
        grid = F.affine_grid(theta, [1, 1, *img.shape[1:]], align_corners=False)
        img = F.grid_sample(
            img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        lab = F.grid_sample(
            lab[None], grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[0]
        # voxels sampled from outside the crop have no label: leave them out of the loss
        val = F.grid_sample(
            val[None], grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[0]
        return img, lab, val


def masked_loss(loss_fn, logits, labels, valid):
    """Mean over the batch of DiceCE on the valid voxels of each sample.

    Dice and cross-entropy are sums/means over voxels, so gathering the valid voxels (whole
    axial slices when the mask is constant along ``i`` and ``j``, else single voxels into a
    ``[1, K, N, 1, 1]`` tensor) computes exactly the loss restricted to them."""
    losses = []
    for b in range(logits.shape[0]):
        lg, lb, vb = logits[b : b + 1], labels[b : b + 1], valid[b, 0] > 0.5
        if bool(vb.all()):
            losses.append(loss_fn(lg, lb))
            continue
        per_k = vb.any(0).any(0)
        if bool((vb == per_k).all()):  # whole slices: keep the valid k indices
            keep = torch.nonzero(per_k).flatten()
            losses.append(loss_fn(lg.index_select(4, keep), lb.index_select(4, keep)))
        else:
            lg = lg[0][:, vb][None, :, :, None, None]
            lb = lb[0, 0][vb][None, None, :, None, None]
            losses.append(loss_fn(lg, lb))
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------- training


def lr_factor(it: int, total: int, warmup: int, floor: float = 0.01) -> float:
    if it < warmup:
        return (it + 1) / warmup
    t = (it - warmup) / max(total - warmup, 1)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def attack_step_time(model, threads: int, reps: int = 5) -> float:
    """Min wall time of a forward + backward w.r.t. a 1×1×128³ input (frozen weights)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 1, *ROI, generator=torch.Generator().manual_seed(0))
    g = torch.randn(1, model_out(model), *ROI, generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(reps + 1):
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        model(xi).backward(g)
        times.append(time.perf_counter() - t0)
    for p, f in zip(model.parameters(), flags, strict=True):
        p.requires_grad_(f)
    torch.set_num_threads(old)
    return min(times[1:])


def model_out(model) -> int:
    with torch.no_grad():
        return model(torch.zeros(1, 1, 16, 16, 16)).shape[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    malloc_tuned = keep_freed_memory()  # vafa.ops.devices
    torch.set_num_threads(args.threads)
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)

    card = ModelCard.from_preset(
        "demo-unet",
        roi_size=ROI,
        class_names=list(SAMPLE_CLASS_NAMES),
        out_channels=len(SAMPLE_CLASS_NAMES),
        **({"kwargs": args.kwargs} if args.kwargs else {}),
    )
    if args.patch % 8 or any(args.patch % s for s in card.kwargs.get("strides", [1])):
        raise SystemExit(f"--patch must be a multiple of the product of strides, got {args.patch}")

    ct, lab = load_sample()
    if ct.orientation != card.orientation or tuple(ct.spacing) != tuple(card.spacing):
        raise SystemExit(
            f"sample is {ct.orientation} {ct.spacing}, card wants {card.orientation} {card.spacing}"
        )
    image = mapping_from_dict(card.intensity).forward(ct.array)
    labels = np.rint(lab.array).astype(np.int64)
    k0, k1 = holdout_slab(labels, args.holdout_size)
    valid = np.ones(labels.shape, np.uint8)
    valid[:, :, k0:k1] = 0
    names = list(card.class_names)
    print(
        f"sample {image.shape}, held-out slab k in [{k0}, {k1}) ({k1 - k0} axial slices)",
        flush=True,
    )

    model = build_model(card)
    n_params = count_parameters(model)
    print(f"model demo-unet {json.dumps(card.kwargs)}: {n_params} parameters", flush=True)
    sampler = PatchSampler(
        image,
        labels,
        valid,
        args.patch,
        args.fg_prob,
        args.spatial_prob,
        rng,
        len(names),
        args.edge_prob,
    )
    loss_fn = DiceCELoss()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    budget = args.minutes * 60.0
    t_train = time.perf_counter()
    total = args.iters if args.iters else 10**9  # fixed after timing the first iterations
    probes, t_probe = (10, 60), 0.0
    ema, history, it = None, [], 0
    stop_reason = "iterations done"
    model.train()
    while it < total:
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(it, total, args.warmup)
        batch = [sampler.sample() for _ in range(args.batch)]
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        v = torch.stack([b[2] for b in batch])
        loss = masked_loss(loss_fn, model(x), y, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        lv = float(loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        elapsed = time.perf_counter() - t_train
        if args.iters is None and it in probes:
            # iterations that fit the budget: a first guess after 10 iterations, then the speed
            # of iterations 11-60 (the first ones are slow: allocations, thread start-up) sets
            # the schedule; room is left for the periodic evaluations
            if it == probes[0]:
                per_it, t_probe = elapsed / it, elapsed
            else:
                per_it = (elapsed - t_probe) / (it - probes[0])
            left = 0.97 * budget - elapsed
            total = max(it + 1, it + int(left / per_it * (1 - 1.0 / max(args.eval_every, 1))))
            print(
                f"{per_it:.2f} s/iteration → {total} iterations in {args.minutes:g} min", flush=True
            )
        if it % 10 == 0:
            lr = opt.param_groups[0]["lr"]
            print(
                f"it {it:5d}/{total} loss {lv:.4f} (ema {ema:.4f}) lr {lr:.2e} {elapsed:6.0f} s",
                flush=True,
            )
        if it % args.eval_every == 0 or it == total:
            pred = predict_volume(model, image)
            whole = dice_table(pred, labels, names)
            held = dice_table(pred, labels, names, (k0, k1)) if k1 > k0 else None
            history.append(
                {
                    "iteration": it,
                    "seconds": round(elapsed, 1),
                    "loss_ema": round(ema, 4),
                    "dice_fg_whole": whole["dice_fg_mean"],
                    "dice_fg_heldout": held and held["dice_fg_mean"],
                }
            )
            print(
                f"  eval it {it}: fg Dice whole {whole['dice_fg_mean']:.3f}"
                + (f", held-out slab {held['dice_fg_mean']:.3f}" if held else ""),
                flush=True,
            )
            model.train()
            # converged: the loss EMA moved < 0.5 % over the last two evaluation periods, in the
            # last 10 % of the schedule (the learning rate is then < 3 % of its peak)
            if len(history) >= 3 and it > 0.9 * total:
                a, c = history[-3]["loss_ema"], history[-1]["loss_ema"]
                if abs(a - c) < 0.005 * a:
                    stop_reason = "converged (loss EMA changed < 0.5% over two evaluation periods)"
                    break
        if time.perf_counter() - t_train > budget:
            stop_reason = f"wall-clock budget of {args.minutes:g} min reached"
            break
    train_seconds = time.perf_counter() - t_train
    print(f"stopped after {it} iterations, {train_seconds:.0f} s: {stop_reason}", flush=True)

    model.eval()
    pred = predict_volume(model, image)
    whole = dice_table(pred, labels, names)
    held = dice_table(pred, labels, names, (k0, k1)) if k1 > k0 else None
    outside = np.ones(labels.shape[2], bool)
    outside[k0:k1] = False
    train_part = dice_table(pred[..., outside], labels[..., outside], names)
    same_as_monai = bool((monai_sliding_window(model, image) == pred).all())
    print(
        f"evaluation class map identical to MONAI sliding_window_inference: {same_as_monai}",
        flush=True,
    )
    pred_rep = predict_volume(model, image, pad="replicate")
    whole_rep = dice_table(pred_rep, labels, names)
    held_rep = dice_table(pred_rep, labels, names, (k0, k1)) if k1 > k0 else None
    print("class                         whole   held-out", flush=True)
    for n in names[1:]:
        w = whole["dice_per_class"][n]
        h = held["dice_per_class"][n] if held else None
        print(
            f"  {n:26s} {'  n/a' if w is None else f'{w:.3f}'}   {'  n/a' if h is None else f'{h:.3f}'}"
        )
    print(
        f"foreground mean Dice: whole {whole['dice_fg_mean']:.4f} ({whole['n_fg_classes']} classes), "
        f"held-out slab {held['dice_fg_mean'] if held else float('nan'):.4f}, "
        f"training slices {train_part['dice_fg_mean']:.4f}",
        flush=True,
    )
    print(
        f"attack-tile padding (high-end edge replication): whole {whole_rep['dice_fg_mean']:.4f}, "
        f"held-out slab {held_rep['dice_fg_mean'] if held_rep else float('nan'):.4f}",
        flush=True,
    )

    timing = None
    if not args.skip_timing:
        timing = {
            "threads": 2,
            "seconds_min_of_5": round(attack_step_time(model, 2), 3),
            "what": "forward + backward w.r.t. a 1×1×128³ input, frozen weights, eval mode",
        }
        print(
            f"attack step (fwd+bwd 128³, 2 threads): {timing['seconds_min_of_5']:.3f} s", flush=True
        )

    results = {
        "whole_sample": whole,
        "heldout_slab": held,
        "training_slices": train_part,
        "evaluation_equals_monai_sliding_window": same_as_monai,
        "attack_tile_padding": {
            "what": "the sample padded at the high end to 128³ by edge replication, as "
            "vafa.run.tiling.attack_volume builds its tile (the attack's clean prediction)",
            "whole_sample": whole_rep,
            "heldout_slab": held_rep,
        },
    }
    provenance = {
        "trained_by": SCRIPT,
        "command": "python " + " ".join([SCRIPT, *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "threads": args.threads,
        "training_seconds": round(train_seconds, 1),
        "iterations": it,
        "schedule_iterations": total,
        "stop_reason": stop_reason,
        "data": (
            "bundled sample (src/vafa/io/data/sample_ct.nii.gz: TotalSegmentator 2.18.0 example "
            "abdominal CT, 3 mm, RAS); labels sample_labels.nii.gz = TotalSegmentator model "
            "output renumbered to Synapse/BTCV (not manual annotation); esophagus absent"
        ),
        "heldout_slab": {
            "axis": "k (3rd array axis, superior-inferior)",
            "start": k0,
            "stop": k1,
            "indices": list(range(k0, k1)),
            "note": "labels never used for training (loss masked, no crop centres); "
            "the slab's image may appear as context in crops",
        },
        "evaluation": (
            "whole sample zero-padded (centred) to 128³ in model space, one forward "
            "pass (= MONAI sliding_window_inference with roi 128³), argmax; Dice "
            "by vafa.ops.metrics.dice_per_class; foreground mean over the classes present "
            "in the reference (12 on the whole sample; esophagus absent)"
        ),
        "dice_fg_whole": whole["dice_fg_mean"],
        "dice_fg_heldout": held and held["dice_fg_mean"],
        "dice_whole": whole["dice_per_class"],
        "dice_heldout": held and held["dice_per_class"],
        "note": "a demo model fitted to one scan; not a clinical or general-purpose segmenter",
    }
    training = {
        "loss": "vafa.ops.losses.DiceCELoss (DiceCE, squared_pred, smooth_nr 0, smooth_dr 1e-6)",
        "optimizer": f"AdamW lr {args.lr:g} weight_decay {args.weight_decay:g}",
        "schedule": f"linear warm-up {args.warmup} iterations, cosine decay to 1% of peak",
        "patch": [args.patch] * 3,
        "batch": args.batch,
        "sampling": f"{args.fg_prob:g} crops centred on a class drawn uniformly among present "
        "foreground classes (outside the held-out slab), the rest anywhere",
        "augmentation": (
            f"intensity ×U(0.9,1.1) +U(-0.05,0.05) clipped to [0,1]; with p="
            f"{args.spatial_prob:g} rotation ±10° per axis and zoom 0.9–1.1; no flips; "
            f"outside the volume zeros, or with p={args.edge_prob:g} edge replication "
            "(out of the loss)"
        ),
        "budget_minutes": args.minutes,
        "malloc_keep_freed_memory": malloc_tuned,
    }
    card.provenance = provenance
    card.training = training
    card = ModelCard.from_dict(card.to_dict())  # validate
    report = {
        "model": {
            "architecture": card.architecture,
            "kwargs": card.kwargs,
            "parameters": n_params,
            "roi_size": list(ROI),
        },
        "provenance": provenance,
        "training": training,
        "results": results,
        "history": history,
        "attack_step_timing": timing,
        "environment": {
            "torch": torch.__version__,
            "monai": _monai_version(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "total_script_seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.no_save:
        print("--no-save: nothing written", flush=True)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = save_model(model, card, out / WEIGHTS_NAME)
    _write_json_atomic(out / REPORT_NAME, report)
    for path in (weights, Path(str(weights) + ".json"), out / REPORT_NAME):
        os.chmod(path, 0o644)  # temp files are created private; these are package data
    size = weights.stat().st_size
    print(f"wrote {weights} ({size / 1e6:.2f} MB), its card and {out / REPORT_NAME}", flush=True)
    return 0


def _monai_version() -> str:
    import monai

    return monai.__version__


def _write_json_atomic(path: Path, value) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


if __name__ == "__main__":
    sys.exit(main())
