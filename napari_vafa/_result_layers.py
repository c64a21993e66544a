"""The attack widget's result layers: created once, updated in place, styled from the source.

:class:`ResultLayers` keeps the layers by key (see :data:`napari_vafa._worker.RESULT_LAYERS`),
gives them the source layer's scale, translate and metadata, and runs the live preview of the
"adversarial" layer: opened when a run starts (on the GUI thread while the CPU is still idle —
adding a napari layer costs 0.1–0.2 s of GUI time, which the running attack would double),
pasted tile by tile during the run, rolled back when a run gives nothing.

A new layer is made in three pieces of GUI work — its model, its insertion into the viewer,
showing it — which the caller runs one per event-loop turn (:class:`napari_vafa._pacer.Pacer`):
:meth:`ResultLayers.begin_run` and :meth:`ResultLayers.put` do the first piece and return the
others. The insertion repaints in a turn of its own (:func:`napari_vafa._pacer.paint_apart`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

    from napari_vafa._pacer import Piece
    from napari_vafa._worker import JobDone, TilePreview

__all__ = ["LABEL_LAYERS", "LAYER_ORDER", "ResultLayers", "q_table_colormap", "source_of"]

#: Stacking order of the result layers (bottom first).
LAYER_ORDER = (
    "dct_clean",
    "dct_adversarial",
    "q_table",
    "zeroed",
    "perturbation",
    "adversarial",
    "clean_prediction",
    "adversarial_prediction",
)
LABEL_LAYERS = ("clean_prediction", "adversarial_prediction", "zeroed", "changed")
#: Layers the compare view makes on demand: key → name.
COMPARE_LAYERS = {"changed": "changed labels"}
#: Colour of q = 0 in the quantization table: coefficients that were not quantized.
UNQUANTIZED_GREY = (0.5, 0.5, 0.5, 1.0)


def q_table_colormap(low: float):
    """The q table's colormap for contrast limits starting at ``low``: viridis, and when
    ``low`` is 0 (some coefficients not quantized, e.g. outside a band-limited VAFA's band)
    those in :data:`UNQUANTIZED_GREY` (napari's ``low_color``: values at or below the low
    limit), so the band stands out from the quantized coefficients."""
    if low > 0:
        return "viridis"
    from napari.utils.colormaps import Colormap, ensure_colormap

    viridis = ensure_colormap("viridis")
    return Colormap(
        colors=viridis.colors,
        controls=viridis.controls,
        name="viridis_unquantized_grey",
        display_name="viridis (q = 0 grey)",
        low_color=UNQUANTIZED_GREY,
    )


def source_of(layer, source_path: str | None) -> SimpleNamespace:
    """What the result layers copy from the attacked image layer."""
    return SimpleNamespace(  # the spatial axes (a 4D layer's channel axis dropped)
        name=layer.name,
        scale=tuple(layer.scale)[-3:],
        translate=tuple(layer.translate)[-3:],
        metadata=dict(layer.metadata),
        contrast_limits=tuple(float(c) for c in layer.contrast_limits),
        colormap=layer.colormap.name,
        blending=layer.blending,
        source=source_path,
    )


class ResultLayers:
    """Result layers of one widget in one viewer.

    Args:
        viewer: the napari viewer.
        on_change: called after a layer was added and registered (the host's
            ``reset_choices``: the layer-list event comes before the layer is known as ours).
        names: layer name by key (default :data:`napari_vafa._worker.RESULT_LAYERS`).

    Attributes:
        layers: the layers by key.
        source: :func:`source_of` the image layer of the current run (its ``translate`` is
            where the layers start: the live lens shifts it to its cube).
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        on_change: Callable[[], Any],
        names: dict[str, str] | None = None,
    ) -> None:
        from napari_vafa._worker import RESULT_LAYERS

        self.viewer = viewer
        self.names = dict({**RESULT_LAYERS, **COMPARE_LAYERS} if names is None else names)
        self._base_names = dict(self.names)
        self.layers: dict[str, Any] = {}
        self.source: SimpleNamespace | None = None
        #: :func:`source_of` each channel's layer in a multi-channel run (else empty)
        self.channel_sources: list[SimpleNamespace] = []
        self._clean_kji: np.ndarray | None = None
        self._preview: dict[str, Any] | None = None
        self._on_change = on_change

    def set_channels(
        self, sources: list[SimpleNamespace] | None = None, names: list[str] | None = None
    ) -> None:
        """The next run's channels: each one's :func:`source_of` (its layers copy its
        colormap, contrast limits and metadata) and name (``"adversarial T1c"``); None for a
        single-channel run (the plain names)."""
        from napari_vafa._channels import layer_names

        self.channel_sources = list(sources or [])
        self.names = layer_names(self._base_names, names if sources else None)

    def _source_for(self, key: str) -> SimpleNamespace:
        """The source whose style and metadata layer ``key`` copies (its channel's)."""
        from napari_vafa._channels import split_key

        channel = split_key(key)[1]
        if channel < len(self.channel_sources):
            return self.channel_sources[channel]
        return self.source

    def is_result(self, layer) -> bool:
        """One of these layers (``==``, not ``is``: napari hands plugins proxies)."""
        return any(layer == ours for ours in self.layers.values())

    # ------------------------------------------------------------------ live preview
    def begin_run(self, source: SimpleNamespace, clean_kji: np.ndarray) -> list[Piece]:
        """A run starts on the image ``clean_kji`` (``(k, j, i)``) described by ``source``: the
        "adversarial" layer shows the clean volume until the first tiles arrive.

        Returns the pieces that still have to run to show it (a new layer: insert, show)."""
        self.source = source
        self._clean_kji = clean_kji
        base = np.array(clean_kji, dtype=np.float32, copy=True)
        layer = self.layers.get("adversarial")
        if layer is not None and layer in self.viewer.layers:
            self._preview = {"layer": layer, "created": False, "previous": layer.data}
            layer.data = base
            return []
        layer, rest = self._make("adversarial", base, self.style("adversarial", None))
        self._preview = {"layer": layer, "created": True, "previous": None}
        return rest

    def paste_preview(self, preview: TilePreview) -> None:
        """Paste the current adversarial tile into the "adversarial" layer."""
        if self._preview is None:
            return  # the run's result is being shown already
        layer = self._preview["layer"]
        if layer not in self.viewer.layers:
            return  # deleted by the user during the run: the final result re-creates it
        layer.data[preview.region] = preview.data
        layer.refresh()

    def keep_preview(self) -> None:
        """The run produced a result: the preview layer stays (it is updated in place)."""
        self._preview = None

    def rollback_preview(self) -> None:
        """Undo the live preview of a run that produced no result (no half-made layers)."""
        preview, self._preview = self._preview, None
        if preview is None:
            return
        layer = preview["layer"]
        if preview["created"]:
            self.layers.pop("adversarial", None)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        elif layer in self.viewer.layers:
            layer.data = preview["previous"]

    # ------------------------------------------------------------------ results
    def put(self, key: str, data: np.ndarray | None, done: JobDone) -> list[Piece]:
        """Show ``data`` as result layer ``key`` (None removes the layer).

        An existing layer is updated in place; for a new one only its model is made here, and
        the pieces that insert and show it are returned.
        """
        if data is None:
            self.remove(key)
            return []
        style = self.style(key, done)
        layer = self.layers.get(key)
        if layer is None or layer not in self.viewer.layers:
            return self._make(key, data, style)[1]
        # only what changed: every property set is a layer event that napari's layer list,
        # controls and canvas answer on the GUI thread (the live lens updates five layers)
        if layer.data.shape != data.shape or layer.data.dtype != data.dtype:
            layer.data = data
        else:
            with layer.events.data.blocker():  # same shape: one refresh instead of the
                layer.data = data  # data event's full reset of the layer's controls
            layer.refresh()
        if not np.allclose(layer.scale, self.source.scale):
            layer.scale = self.source.scale
        if not np.allclose(layer.translate, self.source.translate):
            layer.translate = self.source.translate
        if layer.name != self.names[key]:  # a run with other channels (or none)
            layer.name = self.names[key]
        metadata = {**self._source_for(key).metadata, **style.get("metadata", {})}
        if not _same_metadata(layer.metadata, metadata):
            layer.metadata = metadata
        for name in ("contrast_limits_range", "contrast_limits"):
            if name in style and not np.allclose(getattr(layer, name), style[name]):
                setattr(layer, name, style[name])
        colormap = style.get("colormap") if key.startswith("q_table") else None
        # grey for q = 0 only when the run left coefficients unquantized
        if colormap is not None and layer.colormap.name != getattr(colormap, "name", colormap):
            layer.colormap = colormap
        return []

    def _make(self, key: str, data: np.ndarray, style: dict[str, Any]) -> tuple[Any, list[Piece]]:
        """The model of new layer ``key`` (hidden, registered as ours) and the piece that
        inserts it into the viewer (which returns the piece that shows it)."""
        from napari.layers import Image, Labels

        from napari_vafa._layers import derived_kwargs
        from napari_vafa._pacer import paint_apart

        style = dict(style)
        extra_meta = style.pop("metadata", {})
        limits_range = style.pop("contrast_limits_range", None)
        visible = bool(style.pop("visible", True))
        from napari_vafa._channels import split_key

        kwargs = derived_kwargs(self.source, self.names[key], **style, visible=False)
        metadata = self._source_for(key).metadata
        kwargs["metadata"] = {**metadata, **extra_meta}
        layer = (Labels if split_key(key)[0] in LABEL_LAYERS else Image)(data, **kwargs)
        if limits_range is not None:
            layer.contrast_limits_range = limits_range
            layer.contrast_limits = style["contrast_limits"]
        self.layers[key] = layer

        def show() -> None:
            if layer in self.viewer.layers:
                layer.visible = True

        def insert() -> list[Piece] | None:
            if self.layers.get(key) is not layer:
                return None  # rolled back or replaced meanwhile
            self.viewer.add_layer(layer)
            self._on_change()
            return [show] if visible else None

        return layer, [paint_apart(insert)]

    def remove(self, key: str) -> None:
        layer = self.layers.pop(key, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def style(self, key: str, done: JobDone | None) -> dict[str, Any]:
        """Display settings of a result layer (contrast limits are refreshed on every run;
        a channel's layers, :func:`napari_vafa._channels.channel_key`, like channel 0's)."""
        from napari_vafa._channels import split_key

        src = self._source_for(key)
        limits = {} if done is None else done.limits
        base = split_key(key)[0]
        if base == "adversarial":
            style = {"colormap": src.colormap, "contrast_limits": src.contrast_limits}
            if self.channel_sources:  # blended like the input's channels: the same composite
                style["blending"] = src.blending
            return style
        if base == "perturbation":
            return {
                "colormap": "RdBu_r",
                "contrast_limits": limits[key],
                "contrast_limits_range": limits[f"{key}_range"],
                "visible": False,
            }
        if base in ("dct_clean", "dct_adversarial"):
            return {"colormap": "magma", "contrast_limits": limits[key], "visible": False}
        if base == "q_table":
            colormap = q_table_colormap(limits[key][0])
            return {"colormap": colormap, "contrast_limits": limits[key], "visible": False}
        if base == "zeroed":
            return {"opacity": 0.6, "visible": False}
        names = [] if done is None else list(done.class_names)
        visible = key == "adversarial_prediction"
        return {"opacity": 0.5, "visible": visible, "metadata": {"class_names": names}}


def _same_metadata(a: dict, b: dict) -> bool:
    """Equal metadata dictionaries (arrays compared by value)."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, np.ndarray) or isinstance(other, np.ndarray):
            if not np.array_equal(np.asarray(value), np.asarray(other)):
                return False
        elif value != other:
            return False
    return True
