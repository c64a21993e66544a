"""The attack widget's channel controls: for a model with several input channels, one image
layer per channel, in the model's order (a combo per channel, labelled with its name), or one
4D layer holding the channels on its first axis (chosen in the first combo).

Defaults follow the layer list until the user picks a layer: the channels of the last 4D file
opened (:func:`napari_vafa._channels.auto_pick`), else a 4D layer with the channels first, else
the first 3D image layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container

from napari_vafa._channels import auto_pick, channel_image, channel_names
from napari_vafa._worker_widget import layer_choices

if TYPE_CHECKING:
    from vafa.io.models import ModelCard

__all__ = ["ChannelPicker"]


class ChannelPicker:
    """Channel combos of a widget (hidden for one-channel models).

    Args:
        viewer: the viewer whose image layers are offered.
        exclude: layers not to offer (the widget's own results).
        on_change: called when the first channel's layer changes (the labels follow its grid).

    Attributes:
        box: the container the host places in its form (``label`` "channels").
        combos: one combo per channel, labelled with the channel's name.
        names: the model's channel names ([] for a one-channel model).
    """

    def __init__(self, viewer, exclude: Callable[[Any], bool], on_change: Callable) -> None:
        self.viewer = viewer
        self._exclude = exclude
        self._on_change = on_change
        self.box = Container(labels=True, label="channels", widgets=[])
        self.box.visible = False
        self.combos: list[ComboBox] = []
        self.names: list[str] = []
        self._picked_by_user = False
        self._defaulting = False
        for name in ("inserted", "removed"):
            getattr(viewer.layers.events, name).connect(self._layers_changed)

    @property
    def active(self) -> bool:
        """Whether the chosen model takes several channels (the combos are shown)."""
        return len(self.names) > 1

    def configure(self, card: ModelCard | None) -> None:
        """Combos for ``card``'s channels (None or one channel: none, hidden)."""
        count = int(getattr(card, "in_channels", 1) or 1)
        names = channel_names(card, count) if count > 1 else []
        if names == self.names:
            return
        self.names = names
        self.box.clear()
        self.combos = [
            ComboBox(label=name, choices=lambda _w=None, i=index: self._choices(i))
            for index, name in enumerate(names)
        ]
        self.box.extend(self.combos)
        for combo in self.combos:
            combo.changed.connect(self._picked)
        self.box.visible = bool(names)
        self._picked_by_user = False
        self.pick_defaults()

    def _choices(self, index: int) -> list[tuple[str, Any]]:
        """3D image layers; the first combo also offers 4D layers with the channels first."""
        count = len(self.names)
        return [
            (name, layer)
            for name, layer in layer_choices(self.viewer, "Image", self._exclude)
            if layer.ndim == 3 or (index == 0 and layer.ndim == 4 and layer.data.shape[0] == count)
        ]

    def pick_defaults(self) -> None:
        """The default layer of each channel (:func:`~napari_vafa._channels.auto_pick`)."""
        if not self.combos:
            return
        self._defaulting = True
        try:
            self.box.reset_choices()
            layers = [layer for _, layer in self._choices(0)]
            picked = auto_pick(layers, len(self.combos)) or []
            if len(picked) == len(self.combos):
                for combo, layer in zip(self.combos, picked, strict=True):
                    combo.value = layer
            elif len(picked) == 1:  # a 4D layer holding every channel
                self.combos[0].value = picked[0]
        finally:
            self._defaulting = False
        self._show_combos()
        self._on_change()

    def _picked(self, *_: Any) -> None:
        if not self._defaulting:
            self._picked_by_user = True
            self._show_combos()
            self._on_change()

    def _layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if not self.combos or (layer is not None and self._exclude(layer)):
            return  # no combos, or one of the widget's own result layers came or went
        if self._picked_by_user and all(combo.value is not None for combo in self.combos):
            return  # the user's choice stands (the combos refresh with the widget's)
        try:
            self.pick_defaults()
        except RuntimeError:  # the Qt widgets are gone (napari closing)
            self.combos = []

    def _show_combos(self) -> None:
        """A 4D layer in the first combo holds every channel: the others hide."""
        stacked = self.combos and getattr(self.combos[0].value, "ndim", 3) == 4
        for combo in self.combos[1:]:
            combo.visible = not stacked

    def layers(self) -> list[Any]:
        """The chosen layers: one per channel, or the one 4D layer."""
        if not self.combos:
            return []
        first = self.combos[0].value
        if getattr(first, "ndim", 3) == 4:
            return [first]
        return [combo.value for combo in self.combos]

    def grid_layer(self):
        """The first channel's layer (the grid of labels and results), or None."""
        return self.combos[0].value if self.combos else None

    def sources(self, image) -> tuple[list[Any] | None, list[str] | None]:
        """``(sources, names)`` for :meth:`~napari_vafa._result_layers.ResultLayers.set_channels`:
        each channel's :func:`~napari_vafa._result_layers.source_of` and name when ``image`` has
        several channels (else None, None)."""
        from napari_vafa._result_layers import source_of
        from vafa.io.channels import Channels

        if not isinstance(image, Channels):
            return None, None
        layers = self.layers()
        if len(layers) == 1:  # one 4D layer: its style for every channel
            layers = layers * len(image)
        files = [None if v.source is None else str(v.source) for v in image.volumes]
        sources = [source_of(layer, file) for layer, file in zip(layers, files, strict=True)]
        return sources, list(self.names)

    def image(self):
        """``(layer, image, data)``: the first channel's layer, the
        :class:`~vafa.io.channels.Channels` image and channel 0's ``(k, j, i)`` data
        (:func:`~napari_vafa._channels.channel_image`; ``ValueError`` in one line)."""
        image, data = channel_image(self.viewer, self.layers(), self.names)
        return self.grid_layer(), image, data
