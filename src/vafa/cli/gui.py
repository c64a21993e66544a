"""``vafa gui``: open napari with the bundled sample and the VAFA attack widget."""

from __future__ import annotations

import importlib
import os
import sys

from vafa.cli.common import CLIError, add_common_arguments

__all__ = ["add_parser", "display_problem"]

#: Qt platforms that draw on a display server (the others, e.g. offscreen or vnc, need none).
_DISPLAY_PLATFORMS = ("", "xcb", "wayland", "wayland-egl")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "gui",
        help="open napari with the sample and the VAFA widget",
        description="Open napari with the bundled sample and the VAFA attack widget.",
    )
    add_common_arguments(
        p,
        ignored={
            "device": "chosen in the widget",
            "seed": "chosen in the widget",
            "quiet": "opens a window, prints no result",
            "json": "opens a window, prints no result",
            "overwrite": "files are saved from the window",
        },
    )
    p.set_defaults(func=run)


def display_problem(environ=None, platform: str | None = None) -> str | None:
    """Why Qt cannot open a window here (None: it can, as far as the environment tells).

    On Linux a window needs ``DISPLAY`` (X11) or ``WAYLAND_DISPLAY``, unless
    ``QT_QPA_PLATFORM`` names a platform without a display server (``offscreen``, ``vnc``, …);
    without one, Qt prints its plugin messages and aborts the process.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    # "offscreen", "vnc:size=…", or a fallback list such as "wayland;xcb"
    names = [n.split(":")[0].strip().lower() for n in environ.get("QT_QPA_PLATFORM", "").split(";")]
    if any(name not in _DISPLAY_PLATFORMS for name in names):
        return None
    return (
        "no display (neither DISPLAY nor WAYLAND_DISPLAY is set): run it in a desktop session, "
        "or with a virtual display: xvfb-run -a vafa gui"
    )


def run(args) -> int:
    problem = display_problem()
    if problem is not None:  # before Qt is imported: Qt would abort the process
        raise CLIError(problem)
    return _open()


def _open() -> int:  # pragma: no cover - opens a window
    try:
        # the library never imports the plugin at module level (it must stay Qt-free)
        gui_main = importlib.import_module("napari_vafa.__main__").main
    except ImportError as err:
        raise CLIError(
            f"the napari plugin is not installed ({err}); pip install 'napari-vafa[napari,qt]'"
        ) from None
    return gui_main()
