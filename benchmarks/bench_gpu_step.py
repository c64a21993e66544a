"""VAFA step cost on a GPU: UNETR (the paper's network) and the benchmark UNet at 96³.

For every model and ``--amp`` mode, in one process on the same volume:
* bare: ``model(x)`` + Dice-CE + gradient w.r.t. the input (what any gradient attack pays);
* VAFA step: the time between consecutive step events of a running attack (median), with the
  device synchronised at every event, so setup and the final evaluation stay out;
* ratio = VAFA step / bare, and the peak GPU memory of the attack.

Run: ``python benchmarks/bench_gpu_step.py [--size 96] [--models unetr,unet] [--amp off,bf16]
[--json out.json]``. Without CUDA it stops with exit status 2 (``--device cpu`` runs the same
measurements on the CPU, e.g. as a smoke test with ``--size 32 --models unet``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import torch


def build(name: str, size: int) -> torch.nn.Module:
    """``unetr``: the UNETR-BTCV preset (14 classes, random weights); ``unet``: the UNet of
    bench_attack_step.py."""
    if name == "unet":
        sys.path.insert(0, "benchmarks")
        from bench_attack_step import build_model

        return build_model()
    from vafa.io.models import ModelCard, build_model

    preset = ModelCard.from_preset("unetr-btcv")
    roi = (size,) * 3
    card = ModelCard.from_preset(
        "unetr-btcv", roi_size=roi, kwargs={**preset.kwargs, "img_size": list(roi)}
    )
    torch.manual_seed(0)
    return build_model(card).eval()


def measure(model, x, labels, device, amp: str, steps: int, block: int) -> dict[str, float]:
    import vafa
    from vafa.ops.amp import with_amp
    from vafa.ops.losses import DiceCELoss

    net = with_amp(model, amp)
    loss_fn = DiceCELoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def bare():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(loss_fn(net(xi), labels), xi)
        sync()

    bare()  # warm-up (cuDNN autotuning, allocator)
    bare_times = []
    for _ in range(5):
        t = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - t)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stamps: list[float] = []

    def stamp(_event):
        sync()
        stamps.append(time.perf_counter())

    attack = vafa.VAFA(net, steps=steps, block_size=(block,) * 3, seed=0)
    attack.attack(x, labels, callback=stamp)
    step_times = [b - a for a, b in itertools.pairwise(stamps)]
    out = {
        "bare_fwd_bwd_ms": statistics.median(bare_times) * 1e3,
        "vafa_step_ms": statistics.median(step_times) * 1e3,
    }
    out["ratio"] = out["vafa_step_ms"] / out["bare_fwd_bwd_ms"]
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--models", default="unetr,unet")
    parser.add_argument("--amp", default="off,bf16,fp16")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"bench_gpu_step: CUDA is not available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); nothing measured",
            file=sys.stderr,
        )
        return 2
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "size": args.size,
        "block": args.block,
        "steps": args.steps,
        "runs": {},
    }
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *(args.size,) * 3, generator=g), 5, 1, 2)
    x = x.clamp(0, 1).to(device)
    print(f"{'model':8s} {'amp':5s} {'bare ms':>9s} {'step ms':>9s} {'ratio':>6s} {'peak MB':>8s}")
    for name in args.models.split(","):
        model = build(name, args.size).to(device).requires_grad_(False)  # as under attack
        with torch.no_grad():
            labels = model(x).argmax(1, keepdim=True)
        for amp in args.amp.split(","):
            if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                continue
            row = measure(model, x, labels, device, amp, args.steps, args.block)
            results["runs"][f"{name}/{amp}"] = row
            print(
                f"{name:8s} {amp:5s} {row['bare_fwd_bwd_ms']:9.1f} {row['vafa_step_ms']:9.1f} "
                f"{row['ratio']:6.2f} {row.get('peak_gpu_mb', float('nan')):8.0f}",
                flush=True,
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
