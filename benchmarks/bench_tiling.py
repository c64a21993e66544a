"""Full-volume tiled VAFA: total time vs tiles × one tile, and peak memory (issue: tiling).

One run measures, each in a fresh child process (so that ``ru_maxrss`` is that job's peak):

* ``base``: imports, the demo UNet (random weights) and the synthetic volume — the floor;
* ``tile``: the same plus one VAFA attack of a single ``roi`` tile of the volume;
* ``volume``: the same plus :func:`vafa.run.tiling.attack_volume` over the whole volume, then one
  sliding-window prediction (overlap 0.5) of the result.

The volume is a synthetic CT-like 256×256×128 scan (smooth random blobs in HU, mapped by the
[-175, 250] HU window). Reported: tiles, one tile's attack time, tiles × that, the full-volume
time and their ratio (the tiling overhead), peak RSS of the three children, and the size of the
outputs the full-volume attack must keep (adversarial volume, two class maps, q tables).

Run: ``python benchmarks/bench_tiling.py [--quick] [--threads 2] [--json out.json]``
(``--quick``: 5 steps instead of 20; ``--shape``/``--roi``/``--block`` for other sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0):
    """CT-like volume in HU ``[H, W, D]`` (float32 torch tensor): air, body, organs, bone."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, n) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 < 1.0
    coarse = torch.rand(1, 1, *(max(2, n // 16) for n in shape), generator=g)
    texture = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0, 0]
    hu = torch.full(shape, -1000.0)
    hu[body] = -90.0 + 150.0 * texture[body]  # fat to soft tissue
    for _ in range(12):  # organ-like blobs
        c = (torch.rand(3, generator=g) * 1.2 - 0.6).tolist()
        r = float(0.08 + 0.15 * torch.rand(1, generator=g))
        level = float(20 + 140 * torch.rand(1, generator=g))
        blob = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r) & body
        hu[blob] = level + 30.0 * texture[blob]
    spine = (x**2 + (y + 0.45) ** 2 < 0.01) & body
    hu[spine] = 700.0
    noise = torch.randn(shape, generator=g) * 10.0
    return hu + noise * body


def _setup(args):
    import torch

    from vafa.io.intensity import CTWindow
    from vafa.io.models import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("demo-unet").eval()
    hu = synthetic_ct(tuple(args.shape)).numpy()
    image = torch.from_numpy(CTWindow(-175, 250).forward(hu))[None, None]
    return model, image


def _attack(model, args):
    from vafa.attacks import build_attack

    return build_attack("vafa", model, steps=args.steps, block_size=args.block, seed=0)


def child(args) -> dict:
    """Run one job and return its timings and peak RSS."""
    from vafa.attacks import build_attack
    from vafa.run.tiles import tile_grid
    from vafa.run.tiling import attack_volume, sliding_window_labels

    model, image = _setup(args)
    roi = (args.roi,) * 3
    out: dict = {"job": args.child}
    first = tile_grid(image.shape[2:], roi)[0]
    tile = image[(slice(None), slice(None), *first)].contiguous()
    if args.child != "base":  # warm-up (lazy initialisation, caches), the same in both jobs
        build_attack("vafa", model, steps=1, block_size=args.block, seed=0).attack(tile)
    if args.child == "tile":
        t = time.perf_counter()
        _attack(model, args).attack(tile)
        out["seconds"] = time.perf_counter() - t
    elif args.child == "volume":
        t = time.perf_counter()
        result = attack_volume(_attack(model, args), image, roi=roi)
        out["seconds"] = time.perf_counter() - t
        out["tiles"] = result.tiles_total
        out["attack_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        sliding_window_labels(model, result.adversarial, roi, overlap=0.5)
        out["predict_seconds"] = time.perf_counter() - t
        q_bytes = sum(q.numel() * q.element_size() for q in result.q_tables)
        out["output_mib"] = (
            result.adversarial.numel() * 4 + 2 * result.tile_clean_prediction.numel() + q_bytes
        ) / 2**20
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(job: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        job,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--roi",
        str(args.roi),
        "--block",
        str(args.block),
        "--shape",
        *map(str, args.shape),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 steps instead of 20")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 128])
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--child", choices=["base", "tile", "volume"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 5 if args.quick else 20
    if args.child:
        print(json.dumps(child(args)))
        return {}

    base = run_child("base", args)
    tile = run_child("tile", args)
    volume = run_child("volume", args)
    tiles = volume["tiles"]
    expected = tiles * tile["seconds"]
    report = {
        "shape": args.shape,
        "roi": args.roi,
        "block": args.block,
        "steps": args.steps,
        "threads": args.threads,
        "tiles": tiles,
        "tile_seconds": tile["seconds"],
        "tiles_x_tile_seconds": expected,
        "volume_seconds": volume["seconds"],
        "overhead_ratio": volume["seconds"] / expected,
        "predict_seconds": volume["predict_seconds"],
        "peak_rss_mib": {
            "base": base["peak_rss_mib"],
            "tile": tile["peak_rss_mib"],
            "volume_attack": volume["attack_peak_rss_mib"],
            "volume_with_prediction": volume["peak_rss_mib"],
        },
        "volume_minus_tile_rss_mib": volume["attack_peak_rss_mib"] - tile["peak_rss_mib"],
        "outputs_mib": volume["output_mib"],
    }
    rows = [
        ("volume", "×".join(map(str, args.shape)) + f", roi {args.roi}³, block {args.block}³"),
        ("steps / threads", f"{args.steps} / {args.threads}"),
        ("tiles", f"{tiles}"),
        ("one tile", f"{tile['seconds']:.2f} s"),
        ("tiles × one tile", f"{expected:.1f} s"),
        ("full volume", f"{volume['seconds']:.1f} s"),
        ("ratio", f"{report['overhead_ratio']:.3f}"),
        ("sliding-window prediction", f"{volume['predict_seconds']:.1f} s"),
        (
            "peak RSS base / tile / volume attack",
            "{base:.0f} / {tile:.0f} / {volume_attack:.0f} MiB".format(**report["peak_rss_mib"]),
        ),
        ("volume attack − tile RSS", f"{report['volume_minus_tile_rss_mib']:.0f} MiB"),
        (
            "peak RSS incl. sliding window",
            f"{report['peak_rss_mib']['volume_with_prediction']:.0f} MiB",
        ),
        ("outputs kept (adv + maps + q)", f"{report['outputs_mib']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    if not math.isfinite(report["overhead_ratio"]):
        raise SystemExit("benchmark produced a non-finite ratio")
    return report


if __name__ == "__main__":
    main()
