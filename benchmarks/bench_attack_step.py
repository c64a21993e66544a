"""VAFA step cost vs one bare model forward+backward (issue: core library).

Measured in one process on the same volume and model, 2 CPU threads by default:
* bare: ``model(x)`` + Dice-CE + gradient w.r.t. the input (what any gradient attack must pay);
* VAFA step: the time between consecutive step events of a running attack, so the fixed costs
  (clean forward, setup, final evaluation) stay out. Each step is paired with a bare step run
  right after it (in the step's callback, outside the step's time), and a ratio is the median
  of the per-pair ratios: the host's speed drifts by 20–30 % over seconds here, and only
  neighbours in time see the same machine;
* FPM alone (quantize + inverse block DCT, forward+backward) vs the same with torch-dct;
* SA² step (8³ blocks, its default) as a ratio to a VAFA step at 8³ and 32³ (same loop, same
  model: the difference is the amplitude factors instead of the quantization and SSIM term);
* SegPGD and CosPGD steps (ε 4) as ratios to a PGD step (the same loop with another loss);
* a VAFA step against a PGD step (what VAFA adds to the attack loop every attack pays);
* peak RSS of a 20-step attack vs the model's own forward+backward peak (child processes).

Run: ``python benchmarks/bench_attack_step.py [--threads 2] [--size 96] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from vafa.ops.devices import keep_freed_memory


def build_model(out_channels: int = 4) -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
    ).eval()


def volume(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, size, generator=g)
    return torch.nn.functional.avg_pool3d(x, 5, 1, 2).clamp(0, 1)  # some texture, in [0, 1]


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bare_step(model, x, labels):
    from vafa.ops.losses import DiceCELoss

    loss_fn = DiceCELoss()

    def run():
        xi = x.clone().requires_grad_(True)
        loss = loss_fn(model(xi), labels)
        torch.autograd.grad(loss, xi)

    return run


def attack_step_times(
    model, x, labels, block, steps: int, attack: str = "vafa", **options
) -> list[float]:
    """Seconds between consecutive step events of ``attack`` (``block``: its block size, or
    None for a voxel attack)."""
    return [step for step, _ in paired_steps(model, x, labels, None, block, steps, attack,
                                             **options)]  # fmt: skip


def paired_steps(
    model, x, labels, bare, block, steps: int, attack: str = "vafa", **options
) -> list[tuple[float, float]]:
    """``(step seconds, bare seconds)`` per step of ``attack`` after its first: each step's
    callback runs one ``bare`` step (None: none, 0 s), and the next step's time starts when
    that one ends."""
    import vafa

    if block is not None:
        options["block_size"] = block
    pairs: list[tuple[float, float]] = []
    ended: list[float] = []

    def callback(event) -> None:
        start = time.perf_counter()
        if ended:
            if bare is not None:
                bare()
            pairs.append((start - ended[-1], time.perf_counter() - start))
        ended.append(time.perf_counter())

    vafa.build_attack(attack, model, steps=steps, seed=0, **options).attack(
        x, labels, callback=callback
    )
    return pairs


def fpm_times(size: int, block: int) -> dict[str, float]:
    from vafa.ops.frequency import layout_idct
    from vafa.ops.quantization import quantize

    c = torch.randn(1, 1, size, size, size) * 50
    q = torch.full_like(c, 20.0, requires_grad=True)
    sizes = (block,) * 3

    def ours():
        y = layout_idct(quantize(c, q, 0.05), sizes)
        torch.autograd.grad(y.sum(), q)

    out = {"fpm_ms": timeit(ours, repeat=20, warmup=3) * 1e3}
    try:
        import torch_dct
    except ImportError:
        return out
    n = size // block

    def reference():
        blocks = c.view(1, 1, n, block, n, block, n, block).permute(0, 1, 2, 4, 6, 3, 5, 7)
        qb = q.view(1, 1, n, block, n, block, n, block).permute(0, 1, 2, 4, 6, 3, 5, 7)
        u = blocks / qb
        r = torch.round(u) + (u - torch.round(u)) ** 3
        y = torch_dct.idct_3d(r * qb, norm="ortho")
        torch.autograd.grad(y.sum(), q)

    out["fpm_torch_dct_ms"] = timeit(reference, repeat=10, warmup=2) * 1e3
    return out


PEAK_SNIPPET = """
import resource, sys, torch
sys.path.insert(0, 'benchmarks')
from bench_attack_step import build_model, volume, bare_step
torch.set_num_threads({threads})
from vafa.ops.devices import keep_freed_memory; keep_freed_memory()
model, x = build_model(), volume({size})
labels = torch.zeros(1, 1, {size}, {size}, {size}, dtype=torch.long)
if '{what}' == 'bare':
    bare_step(model, x, labels)()
else:
    import vafa
    vafa.VAFA(model, steps=20, block_size={block}, seed=0).attack(x, labels)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(what: str, threads: int, size: int, block: int) -> float:
    code = PEAK_SNIPPET.format(what=what, threads=threads, size=size, block=block)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6, help="attack steps per round")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="one round of 4 steps")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.steps = 1, 4
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    model, x = build_model(), volume(args.size)
    with torch.no_grad():
        labels = model(x).argmax(1, keepdim=True)
    results: dict = {"threads": args.threads, "size": args.size}
    bare = bare_step(model, x, labels)
    voxel = ("pgd", "segpgd", "cospgd")
    runs: dict[str, tuple] = {f"b{b}": ((b,) * 3, "vafa", {}) for b in (32, 8)}
    runs["sa2_b8"] = ((8,) * 3, "sa2", {})
    runs.update({name: (None, name, {"eps": 4}) for name in voxel})
    pairs: dict[str, list[tuple[float, float]]] = {key: [] for key in runs}
    bare()  # warm-up
    for _ in range(args.repeat):  # interleaved rounds
        for key, (block, attack, options) in runs.items():
            pairs[key] += paired_steps(model, x, labels, bare, block, args.steps, attack, **options)
    med = {k: statistics.median(s for s, _ in v) * 1e3 for k, v in pairs.items()}
    ratio = {k: statistics.median(s / b for s, b in v) for k, v in pairs.items()}
    results["bare_fwd_bwd_ms"] = statistics.median(b for v in pairs.values() for _, b in v) * 1e3
    for block in (32, 8):
        results[f"vafa_step_ms_b{block}"] = med[f"b{block}"]
        results[f"ratio_b{block}"] = ratio[f"b{block}"]
        results.update({f"{k}_b{block}": v for k, v in fpm_times(args.size, block).items()})
    results["sa2_step_ms_b8"] = med["sa2_b8"]
    results["sa2_to_vafa_step_b8"] = ratio["sa2_b8"] / ratio["b8"]
    results["sa2_to_vafa_step_b32"] = ratio["sa2_b8"] / ratio["b32"]
    results["pgd_step_ms"] = med["pgd"]
    results["ratio_pgd"] = ratio["pgd"]
    results["vafa_to_pgd_step_b32"] = ratio["b32"] / ratio["pgd"]
    for name in voxel[1:]:
        results[f"{name}_to_pgd_step"] = ratio[name] / ratio["pgd"]
    results["peak_rss_bare_mb"] = peak_rss_mb("bare", args.threads, args.size, 32)
    results["peak_rss_vafa20_mb"] = peak_rss_mb("vafa", args.threads, args.size, 32)
    results["peak_rss_ratio"] = results["peak_rss_vafa20_mb"] / results["peak_rss_bare_mb"]
    for key, value in results.items():
        print(f"{key:28s} {value:10.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
