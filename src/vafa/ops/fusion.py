"""Optional fused kernels: ``torch.compile`` of element-wise-heavy functions, off by default.

On a CPU most of VAFA's own cost per step is element-wise arithmetic on whole volumes (the SSIM
map from its local statistics), which eager PyTorch runs as one pass over memory per operator.
:func:`fused` wraps such a function so that, when fusion is enabled, it runs as one compiled
kernel forward and one backward. Since the eager SSIM map has a hand-derived backward
(:mod:`vafa.ops.ssim`) this gains nothing measurable on a 2-core CPU (docs/performance.md).

Off by default: the first call compiles (10–20 s per input shape on a small CPU, with a C++
compiler at run time). Enabled by ``VAFA_COMPILE=1`` in the environment (CLI, Slicer, napari
alike) or :func:`enable` in Python. If compiling fails (no C++ compiler, an unsupported device),
the function runs eagerly from then on and one warning says why.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["enable", "enabled", "fused"]

F = TypeVar("F", bound=Callable[..., Any])

_setting: bool | None = None  # None: from the environment


def enabled() -> bool:
    """Whether :func:`fused` functions run compiled (``VAFA_COMPILE``, or :func:`enable`)."""
    if _setting is not None:
        return _setting
    text = os.environ.get("VAFA_COMPILE", "").strip().lower()
    if text in ("", "0", "off", "false", "no"):
        return False
    if text in ("1", "on", "true", "yes"):
        return True
    raise ValueError(f"VAFA_COMPILE must be 1/on or 0/off, got {os.environ['VAFA_COMPILE']!r}")


def enable(on: bool | None = True) -> None:
    """Turn fusion on or off for this process (None: follow ``VAFA_COMPILE`` again)."""
    global _setting
    _setting = on


def fused(fn: F) -> F:
    """``fn``, compiled with ``torch.compile`` while fusion is :func:`enabled`.

    ``fn`` must be a pure function of its arguments (tensors and numbers), so that one compiled
    graph serves every call with the same shapes. A failure to compile falls back to ``fn``.
    """
    state: dict[str, Any] = {"compiled": None, "failed": False}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if state["failed"] or not enabled():
            return fn(*args, **kwargs)
        if state["compiled"] is None:
            import torch

            state["compiled"] = torch.compile(fn, dynamic=False)
        try:
            return state["compiled"](*args, **kwargs)
        except Exception as err:  # compiler missing or failing: eager from now on
            state["failed"] = True
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"VAFA_COMPILE: compiling {fn.__name__} failed ({first[:200]}); running it "
                "without fusion",
                RuntimeWarning,
                stacklevel=2,
            )
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
