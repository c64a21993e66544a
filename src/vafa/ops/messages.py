"""Error messages for people: every interface shows an exception as one line."""

from __future__ import annotations

__all__ = ["USER_ERRORS", "one_line"]

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
