"""The attack widget's worker vs the library call, and how fluid the GUI stays (issue: widget).

One run measures, in one process with a shown napari viewer (under Xvfb when there is no
display; the script re-executes itself with ``xvfb-run -a`` if needed):

* ``library``: :func:`vafa.run.pipeline.run_attack` on the GUI thread — VAFA, bundled sample,
  bundled demo model (or the demo-unet preset with random weights if the weights are missing),
  pseudo-labels, ``resample_back=True``;
* ``widget``: the same attack started with the widget's Run button and run by its napari
  generator worker (live curve every step, live 3D layer refresh at most every 0.4 s). Its
  ``attack`` time is the worker's own timing of :func:`vafa.run.pipeline.iter_run_attack`;
  ``end to end`` runs from the click until the result layers are shown (it adds the result
  layers' computation — DCT pictures, zeroed mask — and the layer updates).

While the widget runs, a 50 ms ``QTimer`` on the GUI thread records the largest gap between two
ticks (how long the GUI was unresponsive) in three windows: from the click to the worker's start
(input checks; on the first run, adding the "adversarial" preview layer — napari's own cost of a
new layer), while the worker attacks (the target), and while the result layers are being shown
(one per event-loop turn). ``worst_gaps_attacking`` in the JSON says when the largest gaps of the
attack window began. Targets: ``attack`` ratio ≤ 1.15, gap ≤ 200 ms. Also reported: CPU
seconds of the whole process and the median time per attack step of each path (robust to
bursts of load from other programs on a shared machine). The library and widget runs
alternate (``--repeats``) so that load changes hit both. The widget runs with the plugin's
defaults (the activity-dock progress bar is automatic: off under software OpenGL, see
:mod:`napari_vafa._progress`); ``--compare-activity`` adds a widget run with that bar forced on,
whose animated indicator is costly under software OpenGL (Xvfb).

Run: ``python benchmarks/bench_widget.py [--quick] [--steps 20] [--threads 2] [--repeats 1]
[--compare-activity] [--json out.json]`` (``--quick``: 3 steps).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

TARGET_RATIO = 1.15
TARGET_GAP_MS = 200.0
TIMER_MS = 50


def rerun_under_xvfb() -> int | None:
    """Without a display: run this script again under ``xvfb-run`` and return its exit code
    (2 when there is no xvfb-run); None when there is a display."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("no display and no xvfb-run: install xvfb (see the Makefile)", file=sys.stderr)
        return 2
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    return subprocess.run(cmd).returncode


def main() -> int:
    args = _parse()
    code = rerun_under_xvfb()
    if code is not None:
        return code
    result = run(args)
    _print_table(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 steps instead of 20")
    parser.add_argument("--steps", type=int, default=None, help="VAFA steps (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (GUI thread)")
    parser.add_argument("--repeats", type=int, default=1, help="library/widget pairs")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--compare-activity",
        action="store_true",
        help="also run the widget with its activity-dock progress bar forced on",
    )
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.quick else 20)
    return args


def _load_model():
    try:
        from vafa.io.data import load_demo_model

        model, card = load_demo_model("cpu")
        return model, card, "bundled demo model"
    except (ImportError, FileNotFoundError, ValueError):
        import torch

        from vafa.io.models import ModelCard, build_model

        card = ModelCard.from_preset("demo-unet", roi_size=(128, 128, 128))
        torch.manual_seed(0)
        return build_model(card).eval(), card, "demo-unet preset, random weights"


def run(args) -> dict:
    import napari
    import torch

    from vafa.io.data import load_sample

    torch.set_num_threads(args.threads)
    model, card, model_name = _load_model()
    image, _ = load_sample()
    options = {"steps": args.steps, "q_max": 20, "block_size": (32, 32, 32)}
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-vafa", "abdominal_ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-vafa", "VAFA attack")
    _prepare_widget(widget, model, card, args.steps)
    _wait(0.5)
    _library(model, card, image, {**options, "steps": 1})  # warm-up: first-call costs
    result: dict = {
        "model": model_name,
        "volume": list(image.shape),
        "roi": list(card.roi_size),
        "steps": args.steps,
        "threads": args.threads,
        "worker_thread_default_threads": _fresh_thread_threads(),
        "runs": [],
    }
    try:
        for _ in range(args.repeats):
            run = {"library": _library(model, card, image, options), "widget": _widget_run(widget)}
            if args.compare_activity:
                run["widget_activity_on"] = _widget_run(widget, activity=True)
            result["runs"].append(run)
    finally:
        viewer.close()
    lib = [r["library"]["seconds"] for r in result["runs"]]
    attack = [r["widget"]["attack_seconds"] for r in result["runs"]]
    total = [r["widget"]["end_to_end_seconds"] for r in result["runs"]]
    gaps = [r["widget"]["max_gui_gap_ms"] for r in result["runs"]]
    result.update(
        library_seconds=statistics.mean(lib),
        widget_attack_seconds=statistics.mean(attack),
        widget_end_to_end_seconds=statistics.mean(total),
        ratio_attack=statistics.mean(a / b for a, b in zip(attack, lib, strict=True)),
        ratio_end_to_end=statistics.mean(a / b for a, b in zip(total, lib, strict=True)),
        max_gui_gap_ms=max(gaps),
        max_gui_gap_showing_result_ms=max(
            r["widget"]["max_gui_gap_showing_result_ms"] for r in result["runs"]
        ),
        max_gui_gap_starting_ms=max(r["widget"]["max_gui_gap_starting_ms"] for r in result["runs"]),
        target_ratio=TARGET_RATIO,
        target_gap_ms=TARGET_GAP_MS,
    )
    result["ratio_median_step"] = statistics.median(
        r["widget"]["median_step_seconds"] / r["library"]["median_step_seconds"]
        for r in result["runs"]
    )
    if args.compare_activity:
        result["ratio_median_step_activity_on"] = statistics.median(
            r["widget_activity_on"]["median_step_seconds"] / r["library"]["median_step_seconds"]
            for r in result["runs"]
        )
        quiet = [r["widget_activity_on"]["attack_seconds"] for r in result["runs"]]
        result["ratio_attack_activity_on"] = statistics.mean(
            a / b for a, b in zip(quiet, lib, strict=True)
        )
        result["max_gui_gap_activity_on_ms"] = max(
            r["widget_activity_on"]["max_gui_gap_ms"] for r in result["runs"]
        )
    return result


def _prepare_widget(widget, model, card, steps: int) -> None:
    from napari_vafa._attack_widget import USE_PREDICTION
    from napari_vafa._worker import ModelSpec

    widget.labels_layer.value = USE_PREDICTION
    widget.attack.value = "vafa"
    widget.steps.value = steps
    widget.block_size.value = 32
    widget.q_range.value = (5, 20)
    widget.device.value = "cpu"
    # the same model object as the library run: no load time, identical weights
    widget._cache.put(ModelSpec("demo", device="cpu"), model, card)


def _library(model, card, image, options) -> dict:
    from vafa.run.pipeline import run_attack

    stamps: list[float] = []
    cpu = time.process_time()
    start = time.perf_counter()
    outcome = run_attack(
        model,
        card,
        image,
        None,
        attack="vafa",
        options=options,
        seed=0,
        resample_back=True,
        callback=lambda _event: stamps.append(time.perf_counter() - start),
    )
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "median_step_seconds": _median_step(stamps),
        "dice_fg": outcome.metrics.dice_fg.to_dict(),
    }


def _median_step(stamps: list[float]) -> float:
    """Median time between two step events (robust to bursts of load from other programs)."""
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(steps) if steps else float("nan")


def _widget_run(widget, activity: bool | None = None) -> dict:
    """One run through the widget; ``activity=True`` forces the progress bar in napari's
    activity dock on (its animated "in progress" indicator makes Qt recompose the whole window,
    which software OpenGL — Xvfb, llvmpipe — pays for with about half a CPU core); None keeps
    the plugin's automatic choice."""
    from qtpy.QtCore import QTimer

    import napari_vafa._progress as module
    from napari_vafa._progress import software_opengl

    module.ACTIVITY_PROGRESS = activity

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TIMER_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    events: list[float] = []
    widget.plots.canvas.mpl_connect("draw_event", lambda _e: events.append(time.perf_counter()))
    collections: list[tuple[float, float, int]] = []  # (start, seconds, generation)
    collector = _GcLog(collections)
    timer.start()
    _wait(0.3)
    collector.start()
    cpu = time.process_time()
    start = time.perf_counter()
    marks: dict[str, float] = {}

    def finished() -> bool:
        return not widget.is_running  # the worker has ended and the result layers are shown

    stamps: list[float] = []
    arrivals: list[float] = []
    widget.run_button.native.click()
    clicked = time.perf_counter()
    widget._worker.yielded.connect(lambda p: stamps.append(p.elapsed))
    widget._worker.yielded.connect(lambda _p: arrivals.append(time.perf_counter()))
    # connected after the widget's own slot: marks when the worker's result reached the GUI
    # (from then on the result layers are being created, one per event-loop turn)
    widget._worker.returned.connect(lambda _r: marks.setdefault("returned", time.perf_counter()))
    widget._worker.started.connect(lambda: marks.setdefault("started", time.perf_counter()))
    _run_until(finished)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    _wait(0.3)
    timer.stop()
    collector.stop()
    module.ACTIVITY_PROGRESS = None
    done = widget.last_result
    if done is None:
        raise RuntimeError(f"the widget run failed: {widget.status.value}")
    returned = marks.get("returned", end)
    started = marks.get("started", start)
    return {
        "attack_seconds": done.timings["attack"],
        "layers_seconds": done.timings["layers"],
        "end_to_end_seconds": end - start,
        "cpu_seconds": cpu,
        "median_step_seconds": _median_step(stamps),
        "max_gui_gap_ms": _max_gap(ticks, started, returned),
        "max_gui_gap_starting_ms": _max_gap(ticks, start, started),
        "max_gui_gap_showing_result_ms": _max_gap(ticks, returned, end + 0.1),
        "worst_gaps_attacking": _worst_gaps(ticks, started, returned, origin=start),
        "worst_gaps_starting": _worst_gaps(ticks, start, started, origin=start),
        "worst_gaps_showing_result": _worst_gaps(ticks, returned, end + 0.1, origin=start),
        "gc_pauses": [
            {"at_s": round(t - start, 3), "ms": round(1e3 * d, 1), "generation": g}
            for t, d, g in collections
            if d >= 0.02
        ],
        "click_handler_ms": 1000.0 * (clicked - start),
        "worker_started_s": started - start,
        "first_progress_s": (arrivals[0] - start) if arrivals else None,
        "returned_s": returned - start,
        "timer_ticks": len([t for t in ticks if start <= t <= end]),
        "curve_redraws": len(events),
        "dice_fg": done.outcome.metrics.dice_fg.to_dict(),
        "activity_progress": activity if activity is not None else not software_opengl(),
    }


class _GcLog:
    """Records the garbage collector's pauses of 20 ms or more (any thread)."""

    def __init__(self, out: list[tuple[float, float, int]]) -> None:
        self.out = out
        self._began = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = now
        elif now - self._began >= 0.02:
            self.out.append((self._began, now - self._began, int(info["generation"])))

    def start(self) -> None:
        import gc

        gc.callbacks.append(self)

    def stop(self) -> None:
        import gc

        if self in gc.callbacks:
            gc.callbacks.remove(self)


def _gaps(ticks: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """``(seconds, began)`` of every interval between timer ticks in [start, end], largest
    first (the window's edges count as ticks)."""
    inside = [start, *[t for t in ticks if start < t < end], end]
    return sorted(((b - a, a) for a, b in itertools.pairwise(inside)), reverse=True)


def _max_gap(ticks: list[float], start: float, end: float) -> float:
    """Largest interval (ms) between timer ticks in [start, end]."""
    return 1000.0 * _gaps(ticks, start, end)[0][0]


def _worst_gaps(
    ticks: list[float], start: float, end: float, origin: float, n: int = 4
) -> list[list[float]]:
    """The ``n`` largest gaps in [start, end] as ``[seconds after origin it began, ms]``."""
    return [[round(a - origin, 2), round(1000.0 * g)] for g, a in _gaps(ticks, start, end)[:n]]


def _run_until(done, poll_ms: int = 20) -> None:
    """Run a real Qt event loop (deferred deletes included) until ``done()`` is true."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(poll_ms)
    poll.timeout.connect(lambda: loop.quit() if done() else None)
    poll.start()
    if not done():
        loop.exec()
    poll.stop()


def _wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    _run_until(lambda: time.perf_counter() >= end)


def _fresh_thread_threads() -> int:
    import torch

    box: list[int] = []
    thread = threading.Thread(target=lambda: box.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return box[0]


def _print_table(r: dict) -> None:
    print(
        f"VAFA {r['steps']} steps, {r['model']}, volume {r['volume']}, roi {r['roi']}, "
        f"{r['threads']} torch threads (a fresh thread reports "
        f"{r['worker_thread_default_threads']})"
    )
    head = ("run", "library s", "cpu s", "step s", "worker s", "ratio", "cpu s", "step s",
            "step ratio", "end-to-end s", "gap start ms", "gap run ms", "gap show ms")  # fmt: skip
    print("".join(f"{h:>13}" for h in head))
    rows = [
        (f"{i}" if key == "widget" else f"{i} act.on", run["library"], run[key])
        for i, run in enumerate(r["runs"], start=1)
        for key in ("widget", "widget_activity_on")
        if key in run
    ]
    for name, lib, wid in rows:
        cells = (
            name,
            f"{lib['seconds']:.1f}",
            f"{lib['cpu_seconds']:.1f}",
            f"{lib['median_step_seconds']:.2f}",
            f"{wid['attack_seconds']:.1f}",
            f"{wid['attack_seconds'] / lib['seconds']:.2f}",
            f"{wid['cpu_seconds']:.1f}",
            f"{wid['median_step_seconds']:.2f}",
            f"{wid['median_step_seconds'] / lib['median_step_seconds']:.2f}",
            f"{wid['end_to_end_seconds']:.1f}",
            f"{wid['max_gui_gap_starting_ms']:.0f}",
            f"{wid['max_gui_gap_ms']:.0f}",
            f"{wid['max_gui_gap_showing_result_ms']:.0f}",
        )
        print("".join(f"{c:>13}" for c in cells))
    ok_ratio = "ok" if r["ratio_attack"] <= TARGET_RATIO else "ABOVE TARGET"
    ok_gap = "ok" if r["max_gui_gap_ms"] <= TARGET_GAP_MS else "ABOVE TARGET"
    print(
        f"median step worker/library {r['ratio_median_step']:.2f}; "
        f"worker/library {r['ratio_attack']:.2f} (target ≤ {TARGET_RATIO}: {ok_ratio}); "
        f"end-to-end/library {r['ratio_end_to_end']:.2f}; largest GUI gap while attacking "
        f"{r['max_gui_gap_ms']:.0f} ms (target ≤ {TARGET_GAP_MS:.0f}: {ok_gap}); from the click "
        f"to the worker's start {r['max_gui_gap_starting_ms']:.0f} ms (the first run adds the "
        f"preview layer); while showing the result layers "
        f"{r['max_gui_gap_showing_result_ms']:.0f} ms"
    )
    if "ratio_attack_activity_on" in r:
        print(
            f"with the activity-dock progress bar forced on ('act.on' rows): median step "
            f"{r['ratio_median_step_activity_on']:.2f}, worker/library "
            f"{r['ratio_attack_activity_on']:.2f}, largest GUI gap while attacking "
            f"{r['max_gui_gap_activity_on_ms']:.0f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
