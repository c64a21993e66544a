"""Error messages for people: every interface shows an exception as one line."""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(err: BaseException) -> str:
    """``err`` as one line of text (a missing file says which file)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"{err.filename}: no such file"
    return " ".join(text.split())
