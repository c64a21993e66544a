"""The model's own inference (issue 31): what a clean prediction costs, and what mirroring adds.

One run measures, in this process (2 threads by default), the best of ``--repeats`` timings of
a clean whole-volume prediction (:func:`vafa.run.tiling.sliding_window_predict`, no grad):

* ``default``: the demo model (bundled weights) on the bundled sample with the default
  inference (MONAI's windows, overlap 0.5, constant weights), against MONAI's own
  ``sliding_window_inference`` with the same settings — vafa's torch loop must not be slower;
* ``demo + mirroring``: the same with test-time mirroring over the three axes (8 passes);
* ``nnU-Net``: a tiny nnU-Net result folder written by nnU-Net's own trainer (the tests'
  ``make_tiny_nnunet``, patch 8×16×16; and ``--large``: a 3-stage network with patch
  32×64×64) on a noise CT, with its own inference (Gaussian, nnU-Net windows, mirroring over
  the three axes) and with mirroring switched off (``--mirroring off``).

Run: ``python benchmarks/bench_inference.py [--threads 2] [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path


def _best(runs: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timings of each run, the runs interleaved (so that every
    run sees the same load on a shared machine), after one warm-up each."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: round(min(t), 3) for name, t in times.items()}


def demo_rows(repeats: int) -> list[dict]:
    import torch
    from monai.inferers import sliding_window_inference

    from vafa.io.data import load_sample
    from vafa.io.handle import ModelSource
    from vafa.io.model_space import to_model_space
    from vafa.run.tiling import sliding_window_predict

    model, card = ModelSource("demo").load(device="cpu")
    x = to_model_space(load_sample()[0], card).tensor
    shape = list(x.shape[2:])

    def monai() -> None:
        with torch.no_grad():
            sliding_window_inference(x, card.roi_size, 1, model, overlap=0.5, mode="constant")

    mirrored = card.inference.changed_by_user(mirror_axes=(0, 1, 2))
    runs = {
        "MONAI sliding_window_inference": monai,
        "vafa, default inference": lambda: sliding_window_predict(model, x, card.roi_size),
        "vafa, mirroring over 3 axes": lambda: sliding_window_predict(
            model, x, card.roi_size, mirrored
        ),
    }
    return [
        {"model": "demo", "volume": shape, "roi": list(card.roi_size), "run": name,
         "seconds": seconds}
        for name, seconds in _best(runs, repeats).items()
    ]  # fmt: skip


def nnunet_rows(repeats: int, large: bool) -> list[dict]:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from model_folders import make_tiny_nnunet, nnunet_plans

    from vafa.io.checkpoints import load_model
    from vafa.run.tiling import sliding_window_predict

    rows = []
    configs = [("tiny", nnunet_plans(), (40, 80, 80))]
    if large:
        plans = nnunet_plans(patch=(32, 64, 64), features=(16, 32, 64))
        configs.append(("3-stage, patch 32×64×64", plans, (64, 128, 128)))
    for name, plans, shape in configs:
        with tempfile.TemporaryDirectory() as root:
            folder = make_tiny_nnunet(Path(root), plans=plans)
            model, card = load_model(folder, device="cpu")
        image = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
        x = torch.from_numpy(image)[None, None]
        own = card.inference
        off = own.changed_by_user(mirror_axes=())
        predict = partial(sliding_window_predict, model, x, card.roi_size)
        runs = {
            "own inference (mirroring over 3 axes)": partial(predict, own),
            "--mirroring off": partial(predict, off),
        }
        for label, seconds in _best(runs, repeats).items():
            rows.append({"model": f"nnU-Net {name}", "volume": list(shape),
                         "roi": list(card.roi_size), "run": label, "seconds": seconds})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--large", action="store_true", help="also a 3-stage nnU-Net, patch 32×64×64"
    )
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = demo_rows(args.repeats) + nnunet_rows(args.repeats, args.large)
    for row in rows:
        print(f"{row['model']:<34} {row['volume']!s:<16} {row['run']:<40} {row['seconds']:8.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
