"""Files written all or nothing, JSON read with errors that say what the file was for, and
values made JSON-ready (:func:`json_ready`).

Every file the library writes goes through :func:`atomic_write`: each destination is first
written to a hidden temporary file beside it (same folder, same suffix, so format sniffing by
extension keeps working), and the temporary files are renamed into place only once every
writer succeeded. A failure leaves the destinations untouched and no temporary file behind.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "json_ready",
    "read_json",
    "save_figure",
    "write_bytes",
    "write_json",
    "write_text",
]


def atomic_write(writers: Mapping[str | os.PathLike, Callable[[Path], object]]) -> list[Path]:
    """Write several files, all or nothing.

    Args:
        writers: ``{destination: write}``; ``write(tmp)`` writes the file's content to the
            temporary path ``tmp`` (a :class:`~pathlib.Path` beside the destination).

    Returns:
        The destinations, in the order given.

    Raises:
        FileNotFoundError: a destination's folder does not exist (nothing is written).
        Whatever a writer raises (nothing is renamed; temporary files are removed).
    """
    targets = [Path(p) for p in writers]
    for path in targets:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: folder does not exist (for {path})")
    mode = _new_file_mode()
    temps: dict[Path, Path] = {}
    try:
        for path, write in zip(targets, writers.values(), strict=True):
            temps[path] = tmp = path.with_name(
                f".{path.name}.{secrets.token_hex(4)}.partial{_suffix(path)}"
            )
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            write(tmp)
            os.chmod(tmp, mode)  # some writers replace the file (e.g. safetensors: 0600)
        for path in targets:
            os.replace(temps.pop(path), path)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return targets


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write({path: lambda tmp: tmp.write_bytes(data)})[0]


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, document: Any, *, indent: int = 2) -> Path:
    """Write ``document`` as strict JSON (no NaN/Inf) to ``path`` atomically."""
    text = json.dumps(document, indent=indent, allow_nan=False, ensure_ascii=False) + "\n"
    return write_text(path, text)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG at ``path`` atomically."""
    return atomic_write({path: lambda tmp: fig.savefig(tmp, format="png")})[0]


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file ``path``; ``what`` (e.g. ``"model card"``) names it in errors.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} must be valid JSON: {err}") from None


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data: dict keys as strings, tuples as lists, NaN/Inf as None,
    numpy scalars and one-element tensors as numbers, paths as strings (for
    :func:`write_json` and ``json.dumps(..., allow_nan=False)``)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.generic, torch.Tensor)):
        return json_ready(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def _new_file_mode() -> int:
    """Permissions a newly created file gets here (``0o666`` less the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
