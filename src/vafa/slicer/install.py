"""``vafa slicer install DIR``: write the Slicer CLI modules into a folder.

For every module of :data:`vafa.slicer.modules.MODULES`: ``DIR/<Module>.xml`` (its Slicer
Execution Model description) and the executable Slicer runs — on Linux and macOS a shell script
``DIR/<Module>`` (no dot in the name, executable bit set), on Windows ``DIR/<Module>.bat``. The
executable answers ``--xml`` from the XML file beside it (no Python started, well inside
Slicer's 5 s limit) and otherwise runs ``python -m vafa.slicer <Module> …`` with the Python
that ran the install, so Slicer uses that environment's torch, GPU and models.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from vafa.io.files import atomic_write
from vafa.slicer.modules import MODULES
from vafa.slicer.xml import module_xml

__all__ = ["install"]


def install(
    folder: str | os.PathLike,
    *,
    python: str | None = None,
    windows: bool | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the modules into ``folder`` (created if needed); returns the files written.

    Args:
        python: the interpreter the modules run (default: this one).
        windows: write ``.bat`` executables (default: when running on Windows).
        overwrite: replace files of an earlier install.

    Raises:
        FileExistsError: a module file exists and ``overwrite`` is False (nothing is written).
        NotADirectoryError: ``folder`` is a file.
    """
    from vafa import __version__

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    python = python or sys.executable
    windows = os.name == "nt" if windows is None else windows
    files: dict[Path, str] = {}
    for name, build in MODULES.items():
        files[folder / f"{name}.xml"] = module_xml(build(), __version__)
        executable = folder / (f"{name}.bat" if windows else name)
        files[executable] = (_batch if windows else _shell)(name, python)
    existing = [str(p) for p in files if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (pass overwrite=True / --overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write({path: _writer(text) for path, text in files.items()})
    for path in files:
        if path.suffix != ".xml" and not windows:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return list(files)


def _writer(text: str):
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def _shell(name: str, python: str) -> str:
    quoted = "'" + python.replace("'", "'\\''") + "'"
    return (
        "#!/bin/sh\n"
        f"# 3D Slicer CLI module {name} of napari-vafa (written by `vafa slicer install`).\n"
        'if [ "$1" = "--xml" ]; then\n'
        f'  exec cat "$(dirname "$0")/{name}.xml"\n'
        "fi\n"
        f'exec {quoted} -m vafa.slicer {name} "$@"\n'
    )


def _batch(name: str, python: str) -> str:
    return (
        "@echo off\r\n"
        f"rem 3D Slicer CLI module {name} of napari-vafa (written by `vafa slicer install`).\r\n"
        'if "%~1"=="--xml" (\r\n'
        f'  type "%~dp0{name}.xml"\r\n'
        "  exit /b 0\r\n"
        ")\r\n"
        f'"{python}" -m vafa.slicer {name} %*\r\n'
    )
