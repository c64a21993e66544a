"""The attack widget's *Compare view*: the clean image with its prediction over it, the
adversarial image with its prediction, and the perturbation, side by side in napari's grid (one
camera, one slice for all), and the user's previous view back when it is switched off.

napari's grid places the visible layers only, the lowest in the layer list top left, ``stride``
consecutive layers in one cell (stride 2: an image and the labels over it); so the compared
layers are shown alone and moved to the bottom of the list in reading order, and everything
changed — grid settings, display dimensions, camera, each layer's visibility, the layer order
and the colour bars shown — is remembered and put back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CompareView", "run_cells"]


@dataclass
class _View:
    grid: dict[str, Any]
    ndisplay: int
    camera: dict[str, Any]
    visible: list[tuple[Any, bool]]
    order: list[Any]
    colorbars: list[tuple[Any, bool]]


class CompareView:
    """Side-by-side comparison of layers in one viewer.

    Args:
        viewer: the napari viewer.
    """

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self._saved: _View | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def show(
        self,
        layers: Sequence[Any],
        shape: tuple[int, int] = (-1, -1),
        *,
        stride: int = 1,
        colorbars: Sequence[Any] = (),
    ) -> None:
        """Only ``layers`` visible, in napari's grid, ``stride`` of them per cell (the later
        one over the earlier), first cell top left, in 2D; ``colorbars``: layers whose colour
        bar is shown.

        Raises:
            ValueError: no layers to compare.
        """
        if not layers:
            raise ValueError("nothing to compare yet: run an attack first")
        viewer = self.viewer
        if self._saved is None:
            grid = viewer.canvas.grid
            self._saved = _View(
                grid={"enabled": grid.enabled, "stride": grid.stride, "shape": grid.shape},
                ndisplay=viewer.dims.ndisplay,
                camera={
                    "center": viewer.scene.camera.center,
                    "zoom": viewer.scene.camera.zoom,
                    "angles": viewer.scene.camera.angles,
                },
                visible=[(layer, layer.visible) for layer in viewer.layers],
                order=list(viewer.layers),
                colorbars=[],
            )
        chosen = list(layers)
        for layer in viewer.layers:
            layer.visible = any(layer == other for other in chosen)
        for index, layer in enumerate(chosen):
            # to the bottom of the list, in order: the first one is top left, and napari's
            # cells (index // stride of the whole list) pair them as given
            _move(viewer.layers, layer, index)
        for layer in colorbars:
            self._saved.colorbars.append((layer, layer.colorbar.visible))
            layer.colorbar.visible = True
        viewer.dims.ndisplay = 2
        grid = viewer.canvas.grid
        grid.stride, grid.shape, grid.enabled = stride, shape, True
        viewer.reset_view()

    def show_run(self, source, results, done, changes: bool = False) -> None:
        """The attack widget's last run (:func:`run_cells`), one row or one column of cells
        (the biggest), the perturbation's colour bar shown. A multi-channel run shows its
        first channel (the source layer, ``"adversarial"`` and ``"perturbation"``).

        Raises:
            ValueError: no complete run to compare.
        """
        layers = run_cells(self.viewer, source, results, done, changes)
        if not layers:
            raise ValueError("nothing to compare yet: run an attack first")
        perturbation = results.layers["perturbation"]
        height, width = self.viewer.canvas.size
        shape = (1, 3) if width >= height else (3, 1)  # the biggest cells
        self.show(layers, shape=shape, stride=2, colorbars=[perturbation])

    def restore(self) -> None:
        """The view from before :meth:`show` (layers removed since are skipped)."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        viewer = self.viewer
        grid = viewer.canvas.grid
        grid.enabled = saved.grid["enabled"]
        grid.stride, grid.shape = saved.grid["stride"], saved.grid["shape"]
        present = [layer for layer in saved.order if layer in viewer.layers]
        for index, layer in enumerate(present):
            _move(viewer.layers, layer, index)
        for layer, visible in saved.visible:
            if layer in viewer.layers:
                layer.visible = visible
        for layer, visible in saved.colorbars:
            layer.colorbar.visible = visible
        viewer.dims.ndisplay = saved.ndisplay
        viewer.scene.camera.update(saved.camera)


def run_cells(viewer, source, results, done, changes: bool = False) -> list[Any]:
    """The compare view's layers for the attack widget's last run, two per cell (the second
    over the first): the clean image (``source``) and its prediction, the adversarial image and
    its prediction, the perturbation (and, with ``changes``, the changed labels over it).

    Args:
        viewer: the viewer.
        source: the attacked image layer.
        results: the widget's :class:`~napari_vafa._result_layers.ResultLayers`.
        done: the run's :class:`~napari_vafa._worker.JobDone` (None: no run yet).
        changes: add the changed-labels layer (made now if needed).

    Returns:
        The layers, or [] when the last run's layers are not all in the viewer.
    """
    keys = ("clean_prediction", "adversarial", "adversarial_prediction", "perturbation")
    layers = [source, *(results.layers.get(k) for k in keys)]
    if changes and done is not None:
        layers.append(_changed_labels(results, done))
    if any(layer is None or layer not in viewer.layers for layer in layers):
        return []
    return layers


def _changed_labels(results, done):
    """The voxels whose label the attack changed (their new label; 0 elsewhere), as result
    layer ``"changed"``, inserted now (the compare view waits for it)."""
    import numpy as np

    clean = done.layers["clean_prediction"]
    adversarial = done.layers["adversarial_prediction"]
    changed = np.where(adversarial != clean, adversarial, 0).astype(adversarial.dtype)
    pending = list(results.put("changed", changed, done))
    while pending:  # a new layer's pieces, now rather than over later turns
        pending = [*(pending.pop(0)() or []), *pending]
    layer = results.layers["changed"]
    layer.contour = 1
    return layer


def _move(layers, layer, index: int) -> None:
    """Put ``layer`` at position ``index`` of the layer list (``len``: the top)."""
    current = layers.index(layer)
    target = min(index, len(layers))
    if current != target and not (target == len(layers) and current == len(layers) - 1):
        layers.move(current, target)
