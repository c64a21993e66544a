"""Progress bars in napari's activity dock, where they do not slow the work down.

While any napari progress bar is open, the status bar animates an "in progress" indicator,
which makes Qt recompose the whole window about 30 times a second. With a GPU that is free;
with software OpenGL (llvmpipe under Xvfb, remote desktops, VMs) each recomposition redraws
the vispy canvas on the CPU and, measured on a 2-core machine, made a 20-step attack in the
widget 1.9–2.7× slower than the same library call. So the bar is shown automatically only
when OpenGL is hardware-accelerated; the widgets' status lines show progress in every case.

``NAPARI_VAFA_ACTIVITY_PROGRESS`` = ``1`` (always), ``0`` (never) or ``auto`` (default).
"""

from __future__ import annotations

import functools
import os

__all__ = ["ACTIVITY_PROGRESS", "SOFTWARE_RENDERERS", "open_activity_progress", "software_opengl"]

#: Substrings of ``GL_RENDERER`` that mean software rendering.
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software", "basic render")


def _setting(text: str | None) -> bool | None:
    value = (text or "auto").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    return None


#: True/False force the activity-dock bar on/off; None decides by :func:`software_opengl`.
ACTIVITY_PROGRESS: bool | None = _setting(os.environ.get("NAPARI_VAFA_ACTIVITY_PROGRESS"))


@functools.lru_cache(maxsize=1)
def software_opengl() -> bool:
    """Whether napari's OpenGL renderer is a software one (False when it cannot be told)."""
    try:
        from napari._vispy.utils.gl import _opengl_context
        from vispy.gloo import gl

        with _opengl_context():
            renderer = str(gl.glGetParameter(gl.GL_RENDERER)).lower()
    except Exception:  # no context, another backend, a private API that moved: assume hardware
        return False
    return any(name in renderer for name in SOFTWARE_RENDERERS)


def open_activity_progress(desc: str):
    """A :class:`napari.utils.progress` (``total=0``) in the activity dock, or None when it is
    off (see the module docstring). Close it with ``.close()``."""
    enabled = ACTIVITY_PROGRESS
    if enabled is None:
        enabled = not software_opengl()
    if not enabled:
        return None
    from napari.utils import progress

    return progress(total=0, desc=desc)
