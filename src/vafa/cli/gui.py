"""``vafa gui``: open napari with the bundled sample and the VAFA attack widget."""

from __future__ import annotations

import importlib

from vafa.cli.common import CLIError

__all__ = ["add_parser"]


def add_parser(subparsers, common) -> None:
    p = subparsers.add_parser(
        "gui",
        help="open napari with the sample and the VAFA widget",
        description="Open napari with the bundled sample and the VAFA attack widget.",
    )
    p.set_defaults(func=run)


def run(args) -> int:  # pragma: no cover - opens a window
    try:
        # the library never imports the plugin at module level (it must stay Qt-free)
        gui_main = importlib.import_module("napari_vafa.__main__").main
    except ImportError as err:
        raise CLIError(
            f"the napari plugin is not installed ({err}); pip install 'napari-vafa[napari,qt]'"
        ) from None
    return gui_main()
