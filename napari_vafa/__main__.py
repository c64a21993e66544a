"""``python -m napari_vafa`` / ``vafa gui``: napari with the bundled sample and the attack widget."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

    from napari_vafa._attack_widget import AttackWidget

PLUGIN = "napari-vafa"
SAMPLE = "abdominal_ct"
WIDGET = "VAFA attack"


def populate(viewer: napari.Viewer) -> AttackWidget:
    """Open the bundled sample in ``viewer`` and dock the attack widget; returns the widget."""
    viewer.open_sample(PLUGIN, SAMPLE)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def main(argv: list[str] | None = None) -> int:
    """Open napari with the sample loaded and the "VAFA attack" widget docked; returns 0."""
    del argv  # no options yet
    import napari

    viewer = napari.Viewer(title="napari-vafa")
    populate(viewer)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
