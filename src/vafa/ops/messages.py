"""Error messages for people: every interface shows an exception as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["USER_ERRORS", "did_you_mean", "one_line", "short_text"]

#: Exceptions that mean "the input is wrong", not "the program is": every interface shows
#: them as one line (CLI: exit 2; Slicer modules: exit 2; GUI: a notification).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def one_line(err: BaseException) -> str:
    """``err`` as one line of text (a missing file says which file)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"{err.filename}: no such file"
    return " ".join(text.split())


def short_text(value: object, limit: int = 120) -> str:
    """``str(value)`` on one line, cut to ``limit`` characters (ending in "…") when longer."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(name: object, options: Iterable[str], cutoff: float = 0.5) -> str:
    """`` (did you mean 'x'?)`` for the option closest to a mistyped ``name``, else ""."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
