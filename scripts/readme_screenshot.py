#!/usr/bin/env python
"""The README's napari pictures from a real run: the bundled CT, its organ labels and the demo
model attacked by the *VAFA attack* widget with its defaults (VAFA q_max 20, 20 steps, 32³
blocks), then the same result in *compare view*.

Usage (headless)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/readme_screenshot.py \\
        --out docs/screenshot_attack_widget.png --compare docs/screenshot_compare_view.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG of the viewer after the run")
    parser.add_argument("--compare", help="PNG of the same run in compare view")
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
    start = time.perf_counter()
    widget.run_button.native.click()
    while widget.is_running:
        app.processEvents()
        time.sleep(0.05)
    print(f"run: {time.perf_counter() - start:.0f} s; {widget.status.value}")
    prediction = widget.result_layers["adversarial_prediction"]
    organs = (np.asarray(prediction.data) > 0).sum(axis=(1, 2))
    viewer.dims.set_current_step(0, int(np.argmax(organs)))  # the axial slice with most organ
    viewer.window.resize(1500, 950)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    iio.imwrite(args.out, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {args.out}")
    if args.compare:
        widget.compare_view.native.click()
        for _ in range(20):
            app.processEvents()
            time.sleep(0.05)
        iio.imwrite(args.compare, viewer.screenshot(canvas_only=False, flash=False))
        print(f"wrote {args.compare}")
    viewer.close()


if __name__ == "__main__":
    main()
