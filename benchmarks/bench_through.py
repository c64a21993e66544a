"""The threat models side by side (issue 26): an attack step on non-overlapping tiles (the
paper) against the same step through the deployed sliding-window prediction
(:class:`vafa.run.through.DeployedModel`: window batch by window batch), and against autograd
through every window at once (what a naive "differentiate through MONAI's inferer" costs).

One UNet (channels 8…64) with 96³ windows, one volume (default 160×160×112: 8 tiles, 18 windows
at overlap 0.5; 160×160×96: 4 tiles, 9 windows), PGD and VAFA, 2 threads by default. Every configuration runs in its own process:

* seconds per step of the whole volume: per tile (or the one piece), the median time between
  consecutive step events of a 3-step attack, summed over the tiles (the clean pass and the
  set-up stay out); autograd through every window: the median of 3 forward+backward passes;
* peak memory: the child's peak RSS minus its RSS once the model and volume are built.

Run: ``python benchmarks/bench_through.py [--threads 2] [--size 160,160,112] [--json out]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

import torch

ROI = (96, 96, 96)
CONFIGS = (
    ("pgd", "tiles"),
    ("pgd", "sliding-window"),
    ("vafa", "tiles"),
    ("vafa", "sliding-window"),
    ("pgd", "all-windows"),
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _AllWindows(torch.nn.Module):
    """The same sliding window differentiated by plain autograd (every window's graph kept
    until the backward pass)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vafa.io.inference import Inference
        from vafa.run.windows import windowed_logits

        return windowed_logits(self.model, x, ROI, Inference())


def child(attack: str, through: str, size: tuple[int, ...], threads: int) -> dict:
    """One attack in this process: seconds per step and peak memory above the set-up's."""
    import statistics

    from monai.networks.nets import UNet

    from vafa.attacks import build_attack
    from vafa.io.inference import Inference
    from vafa.run.through import DeployedModel
    from vafa.run.tiling import attack_volume

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet(3, 1, 4, channels=(8, 16, 32, 64), strides=(2, 2, 2)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *size, generator=g), 5, 1, 2)
    base = _rss_mb()
    stamps: dict[int, list[float]] = {}

    def record(event) -> None:
        stamps.setdefault(event.tile or 1, []).append(time.perf_counter())

    options = {"steps": 3, "block_size": 32} if attack == "vafa" else {"steps": 3}
    if through == "tiles":
        attack_volume(build_attack(attack, model, seed=0, **options), x, roi=ROI, callback=record)
    else:
        deployed = DeployedModel(model, ROI, Inference())
        if through == "all-windows":  # autograd keeps every window's graph until the backward
            deployed = _AllWindows(model)
        built = build_attack(attack, deployed, seed=0, **options)
        attack_volume(built, x, roi=size, callback=record)
    per_tile = [statistics.median(b - a for a, b in itertools.pairwise(t)) for t in stamps.values()]
    return {"seconds_per_step": sum(per_tile), "peak_mb": _rss_mb() - base}


def measure(attack, through, size, threads) -> dict:
    args = [sys.executable, __file__, "--child", attack, through, ",".join(map(str, size)),
            str(threads)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return {"attack": attack, "through": through,
            **json.loads(done.stdout.strip().splitlines()[-1])}  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        attack, through, size, threads = sys.argv[2:6]
        shape = tuple(int(v) for v in size.split(","))
        print(json.dumps(child(attack, through, shape, int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="160,160,112")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    rows = [measure(a, t, size, args.threads) for a, t in CONFIGS]
    tiles = {r["attack"]: r for r in rows if r["through"] == "tiles"}
    print(f"volume {'x'.join(map(str, size))}, windows {ROI[0]}³, {args.threads} threads")
    print(f"{'attack':6} {'through':15} {'s/step':>8} {'×tiles':>7} {'peak MB':>8} {'×tiles':>7}")
    for r in rows:
        ref = tiles.get(r["attack"]) or tiles["pgd"]
        r["time_ratio"] = r["seconds_per_step"] / ref["seconds_per_step"]
        r["memory_ratio"] = r["peak_mb"] / max(ref["peak_mb"], 1.0)
        print(f"{r['attack']:6} {r['through']:15} {r['seconds_per_step']:8.2f} "
              f"{r['time_ratio']:7.2f} {r['peak_mb']:8.0f} {r['memory_ratio']:7.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
