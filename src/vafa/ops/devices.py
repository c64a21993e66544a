"""Device selection shared by the library, the CLI and the plugin."""

from __future__ import annotations

import sys

import torch

__all__ = ["available_devices", "keep_freed_memory", "resolve_device"]


def available_devices() -> list[str]:
    """Devices that exist on this machine, best first: ``["auto", "cuda:0", …, "mps", "cpu"]``."""
    names = ["auto"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (cuda → mps → cpu), a name or a :class:`torch.device` into a device.

    Raises:
        ValueError: the name is not a device torch knows, or that device is not available here.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {device!r}"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here"
            )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} was requested but MPS is not available here")
    return dev


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory for large tensors instead of unmapping it.

    By default every allocation above 32 MB (any full-resolution activation of a 3D network)
    gets fresh pages from the kernel, and their page faults cost more than the arithmetic:
    measured here, a model forward+backward at 128³ runs about 1.5–2× faster and Dice-CE on
    ``[2, 14, 96³]`` 3× faster with this. Same effect as the environment
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``. Process-wide; the CLI, the napari
    plugin and the benchmarks call it once. Returns whether it was applied (Linux/glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, ctypes.c_int(2**30)) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False
