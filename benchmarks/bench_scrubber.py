"""The step scrubber on a BraTS-sized run: what one slider move costs, one channel or four.

A shown napari viewer (under Xvfb when there is no display) holds the result layers of a run on
a 240×240×155 volume — the adversarial volume, the perturbation and the quantization table of
every channel, and the prediction — and the attack widget's :class:`napari_vafa._scrubber.Scrubber`
replays a 4-step history of that run (random iterates, as the library keeps them: float16
volumes, uint8 predictions). Each slider move rebuilds the layers of the step in file units and
hands them to napari; the benchmark times the moves (the whole ``slider.value = step`` call, and
the frames alone) and reports the ratio of a four-channel move to a one-channel move.

Run: ``python benchmarks/bench_scrubber.py [--channels 1 4] [--moves 8] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_widget import rerun_under_xvfb

SHAPE = (240, 240, 155)
STEPS = 4


def _source(viewer, channels: int):
    """A :class:`~napari_vafa._scrubber.ScrubSource` of a synthetic ``channels``-channel run
    whose result layers are in ``viewer``."""
    import torch

    from napari_vafa._channels import channel_key
    from napari_vafa._scrubber import ScrubSource
    from vafa.attacks.base import StepEvent
    from vafa.io.intensity import fit_windows
    from vafa.run.history import StepHistory

    rng = np.random.default_rng(0)
    clean = rng.normal(500.0, 100.0, (channels, *SHAPE)).astype(np.float32)
    windows = fit_windows({"type": "percentile", "p_low": 1.0, "p_high": 99.0}, clean, True)
    clean01 = torch.from_numpy(windows.forward(clean))[None]
    history = StepHistory(clean01, STEPS, with_tables=True)
    for step in range(1, STEPS + 1):
        noise = torch.from_numpy(rng.normal(0, 0.01, clean01.shape).astype(np.float32))
        prediction = torch.from_numpy(rng.integers(0, 4, (1, 1, *SHAPE)))
        q = torch.full_like(clean01, 10.0 + step)
        history.record(StepEvent(step, STEPS, 0.0, 0.5, 0.9, (clean01 + noise).clamp(0, 1),
                                 prediction=prediction, q_table=q))  # fmt: skip
    kji = (SHAPE[2], SHAPE[1], SHAPE[0])
    result = {"adversarial_prediction": np.zeros(kji, np.uint8)}
    for c in range(channels):
        for key in ("adversarial", "perturbation", "q_table"):
            result[channel_key(key, c)] = np.zeros(kji, np.float32)
    layers = {key: (viewer.add_labels(data, name=key) if key.endswith("prediction")
                    else viewer.add_image(data, name=key)) for key, data in result.items()}  # fmt: skip
    pairs = list(zip(windows.windows, clean, strict=True))
    return ScrubSource("run", history, pairs, layers, result, returned=STEPS)


def _moves(scrubber, moves: int) -> tuple[list[float], list[float]]:
    """Seconds of ``moves`` slider moves (1, 2, 3, 1, 2, …) and of their frames alone."""
    from qtpy.QtWidgets import QApplication

    whole, frames = [], []
    for n in range(moves):
        step = 1 + n % (STEPS - 1)
        start = time.perf_counter()
        scrubber.frames(step)
        frames.append(time.perf_counter() - start)
        start = time.perf_counter()
        scrubber.slider.value = step
        QApplication.processEvents()
        whole.append(time.perf_counter() - start)
    return whole, frames


def run(args) -> dict:
    import napari

    from napari_vafa._scrubber import Scrubber

    results: dict = {"shape": list(SHAPE), "steps": STEPS}
    for channels in args.channels:
        viewer = napari.Viewer(show=True)
        scrubber = Scrubber(on_error=print)
        scrubber.attach(_source(viewer, channels))
        whole, frames = _moves(scrubber, args.moves)
        viewer.close()
        row = {"move_ms": 1e3 * statistics.median(whole[1:]),
               "frames_ms": 1e3 * statistics.median(frames[1:])}  # fmt: skip
        results[f"channels_{channels}"] = row
        print(f"{channels} channel(s): {row['move_ms']:.0f} ms per slider move "
              f"(frames alone {row['frames_ms']:.0f} ms)")  # fmt: skip
    if {1, 4} <= set(args.channels):
        ratio = results["channels_4"]["move_ms"] / results["channels_1"]["move_ms"]
        results["move_ratio_4_to_1"] = ratio
        print(f"four channels ÷ one: {ratio:.2f}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--moves", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="4 moves")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.moves = 4
    code = rerun_under_xvfb()
    if code is not None:
        return code
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
