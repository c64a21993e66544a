"""Reading JSON files with errors that name the file and what it was meant to be."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


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
