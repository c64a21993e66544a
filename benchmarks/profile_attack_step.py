"""Where an attack step's time goes: the parts of a PGD and a VAFA step, and the pieces of
VAFA's own work (quantization, inverse block DCT, SSIM term) timed alone.

The step loop of :class:`vafa.attacks.base.Attack` is timed by wrapping its parts (the wrappers
cost microseconds): the model forward, the perturbation (``_perturb``: PGD's reported SSIM;
VAFA's quantization + inverse DCT + SSIM term), the objective (Dice-CE + SSIM term), the one
``autograd.grad`` call (model, loss and perturbation backward), the per-step record (the
prediction and its Dice for the history and the live curve), the best-iterate bookkeeping and
the update. Medians over the steps after the first; the bare step is
``bench_attack_step.bare_step`` (model forward + Dice-CE + gradient w.r.t. the input).

Run: ``python benchmarks/profile_attack_step.py [--threads 2] [--size 96] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attack_step import attack_step_times, bare_step, build_model, timeit, volume

#: (owner, attribute, part name) of the step loop's parts.
PARTS = (
    ("base", "_forward", "model forward"),
    ("base.Attack", "_objective", "objective"),
    ("base.Attack", "_record", "record (prediction, Dice)"),
    ("tracking.BestTracker", "offer", "keep iterate"),
    ("voxel.PGD", "_perturb", "perturb"),
    ("voxel.PGD", "_update", "update"),
    ("vafa.VAFA", "_perturb", "perturb"),
    ("vafa.VAFA", "_update", "update"),
)


def _instrument(times: dict[str, list[float]]) -> None:
    import vafa.attacks.base as base
    import vafa.attacks.tracking as tracking
    import vafa.attacks.vafa as vafa_module
    import vafa.attacks.voxel as voxel

    modules = {"base": base, "tracking": tracking, "voxel": voxel, "vafa": vafa_module}
    for owner, attribute, part in PARTS:
        module, _, cls = owner.partition(".")
        target = getattr(modules[module], cls) if cls else modules[module]
        original = getattr(target, attribute)

        def timed(*args, _f=original, _part=part, **kwargs):
            t = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                times[_part].append(time.perf_counter() - t)

        setattr(target, attribute, timed)
    grad = torch.autograd.grad

    def timed_grad(*args, **kwargs):
        t = time.perf_counter()
        try:
            return grad(*args, **kwargs)
        finally:
            times["backward (autograd.grad)"].append(time.perf_counter() - t)

    base.torch.autograd.grad = timed_grad  # base calls torch.autograd.grad


def vafa_pieces(size: int, block: int) -> dict[str, float]:
    """ms of VAFA's own work alone, forward + backward to the q table (or the input)."""
    from vafa.ops.frequency import layout_idct
    from vafa.ops.quantization import quantize
    from vafa.ops.ssim import BlockSSIM

    x = volume(size)
    ssim = BlockSSIM(x, (block,) * 3)
    y = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    c = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 50
    q = torch.full_like(c, 20.0)
    sizes = (block,) * 3

    def ssim_term():
        yy = y.clone().requires_grad_(True)
        torch.autograd.grad(ssim.padded(yy).sum(), yy)

    def ssim_filters():  # the three filtered maps (μ, E[y²], E[y·x]) alone
        from vafa.ops.ssim import _Moments

        yy = y.clone().requires_grad_(True)
        maps = _Moments.apply(yy, x, ssim._taps, ssim.block_size)
        torch.autograd.grad(sum(m.sum() for m in maps), yy)

    def quantization():
        qq = q.clone().requires_grad_(True)
        torch.autograd.grad(quantize(c, qq, 0.05, scale=1 / 255).sum(), qq)

    def inverse_dct():
        cc = c.clone().requires_grad_(True)
        torch.autograd.grad(layout_idct(cc, sizes).clamp(0, 1).sum(), cc)

    def all_of_it():
        qq = q.clone().requires_grad_(True)
        p = layout_idct(quantize(c, qq, 0.05, scale=1 / 255), sizes).clamp(0, 1)
        torch.autograd.grad(ssim.padded(p).sum(), qq)

    pieces = {
        "SSIM term": ssim_term,
        "  of which its 3 filtered maps": ssim_filters,
        "quantization": quantization,
        "inverse block DCT + clamp": inverse_dct,
        "all of VAFA's own work": all_of_it,
    }
    return {name: 1e3 * timeit(fn, repeat=7, warmup=2) for name, fn in pieces.items()}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vafa.ops.devices import keep_freed_memory

    keep_freed_memory()
    model, x = build_model(), volume(args.size)
    labels = (x * 4).long().clamp(0, 3)
    times: dict[str, list[float]] = collections.defaultdict(list)
    _instrument(times)
    bare = 1e3 * timeit(bare_step(model, x, labels), repeat=5)
    result: dict = {"size": args.size, "threads": args.threads, "bare_ms": bare, "steps": {}}
    print(f"{args.size}³ volume, {args.threads} threads: bare step {bare:.0f} ms")
    for label, attack, block, options in (
        ("PGD ε 4", "pgd", None, {"eps": 4}),
        ("VAFA 32³", "vafa", 32, {}),
        ("VAFA 8³", "vafa", 8, {}),
    ):
        times.clear()
        steps = attack_step_times(model, x, labels, block, args.steps, attack, **options)
        step = 1e3 * statistics.median(steps[1:])
        parts = {k: 1e3 * statistics.median(v[1:] or v) for k, v in times.items()}
        result["steps"][label] = {"step_ms": step, "ratio": step / bare, "parts_ms": parts}
        print(f"\n{label}: step {step:.0f} ms = {step / bare:.2f} × bare")
        for name, ms in parts.items():
            print(f"  {name:30s} {ms:6.1f} ms")
    for block in (32, 8):
        pieces = vafa_pieces(args.size, block)
        result[f"vafa_pieces_{block}_ms"] = pieces
        print(f"\nVAFA's own work alone, {block}³ blocks (forward + backward):")
        for name, ms in pieces.items():
            print(f"  {name:30s} {ms:6.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
