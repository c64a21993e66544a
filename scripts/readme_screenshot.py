#!/usr/bin/env python
"""The README's napari pictures from real runs: the bundled CT, its organ labels and the demo
model in the *VAFA attack* widget with its defaults — the live lens (10 steps) around the axial
slice with the most organ, then a full run (VAFA q_max 20, 20 steps, 32³ blocks), the step
scrubber at step 5 of that run, and the run in *compare view* (with the changed labels).

Usage (headless)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/readme_screenshot.py \\
        --out docs/screenshot_attack_widget.png --compare docs/screenshot_compare_view.png \\
        --lens docs/screenshot_live_lens.png --scrubber docs/screenshot_scrubber.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG of the viewer after the run")
    parser.add_argument("--compare", help="PNG of the same run in compare view")
    parser.add_argument("--lens", help="PNG of the live lens before the run")
    parser.add_argument("--scrubber", help="PNG of the run replayed at step 5")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import imageio.v3 as iio
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(args.threads)
    viewer = napari.Viewer(show=True)
    _, seg = viewer.open_sample("napari-vafa", "abdominal_ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-vafa", "VAFA attack")
    widget.labels_layer.value = seg
    app = QApplication.instance()
    viewer.window.resize(1500, 950)

    def settle(seconds: float = 1.0) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.02)

    organs = (np.asarray(seg.data) > 0).sum(axis=(1, 2))
    viewer.dims.set_current_step(0, int(np.argmax(organs)))  # the axial slice with most organ
    if args.lens:
        widget.steps.value = 10
        settle(0.5)
        shown = widget.live_lens.shown
        widget.live_lens.request()
        while widget.live_lens.shown == shown or widget.live_lens.runner.busy:
            settle(0.05)
        settle()
        print(f"lens: {widget.status.value}")
        iio.imwrite(args.lens, viewer.screenshot(canvas_only=False, flash=False))
        print(f"wrote {args.lens}")
        widget.steps.value = 20
    widget.live.value = False
    start = time.perf_counter()
    widget.run_button.native.click()
    while widget.is_running:
        app.processEvents()
        time.sleep(0.05)
    print(f"run: {time.perf_counter() - start:.0f} s; {widget.status.value}")
    settle()
    iio.imwrite(args.out, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {args.out}")
    if args.scrubber:
        returned = widget.step_slider.value
        widget.step_slider.value = 5
        settle()
        print(f"scrubber: {widget.step_info.value}")
        iio.imwrite(args.scrubber, viewer.screenshot(canvas_only=False, flash=False))
        print(f"wrote {args.scrubber}")
        widget.step_slider.value = returned
    if args.compare:
        widget.compare_changes.value = True
        widget.compare_view.native.click()
        settle()
        iio.imwrite(args.compare, viewer.screenshot(canvas_only=False, flash=False))
        print(f"wrote {args.compare}")
    viewer.close()


if __name__ == "__main__":
    main()
