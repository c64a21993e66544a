#!/usr/bin/env python
"""Measure the napari *VAFT fine-tuning* widget with its defaults, as a user would run it.

Opens napari (headless: run under ``xvfb-run``), loads the bundled CT sample with its labels,
docks the widget on the bundled demo model, and presses *Train* twice with the widget's default
settings: mode ``vafa-fr``, then mode ``clean`` (which the widget validates under the same VAFA
settings, with the same "validation attack steps"). Records the widget's own curves (validation foreground Dice, clean and under the
validation attack) and the wall time of each run, then draws both runs in one figure and writes
a JSON with the numbers.

Usage::

    xvfb-run -a .venv/bin/python scripts/vaft_widget_curve.py --out runs/vaft-widget \\
        --figure docs/vaft_widget_curve.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path


def run_mode(viewer, widget, mode: str, out_dir: Path, app) -> dict:
    widget.mode.value = mode
    widget.out_dir.value = str(out_dir)
    widget.overwrite.value = True
    start = time.perf_counter()
    widget.run_button.native.click()
    if not widget.is_running:
        raise SystemExit(f"{mode}: did not start: {widget.status.value}")
    while widget.is_running:
        app.processEvents()
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    plots = widget.plots
    result = {
        "mode": mode,
        "seconds": round(seconds, 1),
        "status": widget.status.value,
        "val_iterations": list(plots.val_iterations),
        "dice_clean": [float(v) for v in plots.dice_clean],
        "dice_adv": [float(v) for v in plots.dice_adv],
        "dice_adv_tiles": [float(v) for v in plots.dice_adv_tiles],
        "settings": widget.last_result.result.card.training if widget.last_result else None,
    }
    result["s_per_update_median"] = seconds_per_update(out_dir / "training_log.csv")
    print(
        f"{mode}: {seconds:.0f} s ({result['s_per_update_median']} s per update); "
        f"Dice under VAFA {result['dice_adv']}"
    )
    return result


def seconds_per_update(log: Path) -> float:
    """Median seconds between consecutive training rows of the run's log (validations left
    out): the worker's own cost of one update."""
    import csv
    import statistics

    rows = list(csv.DictReader(log.open()))
    steps = [
        float(b["seconds"]) - float(a["seconds"])
        for a, b in itertools.pairwise(rows)
        if a["stage"] == b["stage"] == "train"
    ]
    return round(statistics.median(steps), 3)


def draw(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"vafa-fr": "tab:red", "clean": "tab:blue"}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in runs:
        its = [0, *run["val_iterations"]]
        colour = colours.get(run["mode"])
        ax.plot(its, [run["start_adv"], *run["dice_adv"]], "-o", color=colour,
                label=f"{run['mode']}: under VAFA ({run['seconds'] / 60:.1f} min)")  # fmt: skip
        ax.plot(its, [run["start_clean"], *run["dice_clean"]], "--", color=colour, alpha=0.6,
                label=f"{run['mode']}: clean")  # fmt: skip
        if run.get("dice_adv_tiles"):
            ax.plot(its, [run["start_adv_tiles"], *run["dice_adv_tiles"]], ":s", color=colour,
                    label=f"{run['mode']}: under VAFA, attacked tiles")  # fmt: skip
    ax.set(xlabel="updates", ylabel="validation foreground Dice",
           title="VAFT widget defaults on the bundled demo model (2 CPU threads)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def start_levels(widget) -> tuple[float, float, float]:
    """Validation Dice of the untouched demo model, clean and under the widget's validation
    VAFA (the VAFA controls' settings with "validation attack steps" steps)."""
    import torch

    from vafa.attacks import build_attack
    from vafa.io.data import load_demo_model, load_sample
    from vafa.io.model_space import labels_to_model_space, to_model_space
    from vafa.ops.metrics import dice_per_class, dice_summary
    from vafa.run.tiling import attack_volume, sliding_window_labels

    model, card = load_demo_model("cpu")
    patch = int(widget.patch.value)
    roi = (patch,) * 3 if patch else card.roi_size
    image, labels = load_sample()
    model_input = to_model_space(image, card)
    x = model_input.tensor
    y = labels_to_model_space(labels, model_input).round().long()
    options = {"keep": "last", **widget.attack_controls.options("vafa")}
    options["steps"] = int(widget.validation_steps.value)
    attack = build_attack("vafa", model, **options, seed=0)
    tiled = attack_volume(attack, x, y, roi=roi)

    def dice(volume) -> float:
        pred = sliding_window_labels(model, volume, roi, overlap=0.5)
        return dice_summary(dice_per_class(pred, y, card.out_channels))["dice_fg"]

    tiles = dice_summary(dice_per_class(tiled.tile_adversarial_prediction, y, card.out_channels))
    with torch.no_grad():
        return dice(x), dice(tiled.adversarial), tiles["dice_fg"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/vaft-widget", help="output folder")
    parser.add_argument("--figure", default=None, help="also draw the curves into this PNG")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_vafa._train_widget import TrainWidget

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=False)
    viewer.open_sample("napari-vafa", "abdominal_ct")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="VAFT fine-tuning")
    app = QApplication.instance()
    defaults = {"profile": widget.profile.value, **widget.setting_controls.values()}
    defaults["attack"] = widget.attack_controls.options("vafa")
    print("widget defaults:", defaults)
    clean, adv, tiles = start_levels(widget)
    print(f"demo model: clean {clean:.3f}, under VAFA {adv:.3f} (attacked tiles {tiles:.3f})")
    runs = []
    for mode in ("vafa-fr", "clean"):
        run = run_mode(viewer, widget, mode, out / mode, app)
        run.update(start_clean=clean, start_adv=adv, start_adv_tiles=tiles)
        runs.append(run)
    doc = {"defaults": {k: str(v) for k, v in defaults.items()}, "runs": runs}
    (out / "curve.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if args.figure:
        draw(runs, Path(args.figure))
        print(f"wrote {args.figure}")
    viewer.close()


if __name__ == "__main__":
    main()
